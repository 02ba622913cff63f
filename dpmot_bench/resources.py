"""Refusing requests that cannot fit: an estimate of the memory a request needs against what the device
has, checked at entry points before any work (so an impossible size fails within a second, not after an
allocation error or an hour of swapping)."""
from __future__ import annotations

import os

import torch

from .devices import as_device
from .errors import InputError


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Memory a new allocation can use now: CUDA's free memory on that device, else the host's
    ``MemAvailable`` (Linux), else its physical memory. An unknown device is an InputError (``as_device``)."""
    device = as_device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.3g} GiB"


def check_memory(nbytes: float, what: str, device: str | torch.device = "cpu") -> None:
    """InputError when ``what`` needs about ``nbytes`` (an estimate, at least the arrays it must hold) and
    the device has less available."""
    have = available_bytes(device)
    if nbytes > have:
        raise InputError(f"{what} needs about {_gib(nbytes)} of memory but {as_device(device)} has "
                         f"{_gib(have)} available; ask for less")
