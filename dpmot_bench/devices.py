"""The one check of a device name, for the CLI and the library's entry points."""
from __future__ import annotations

import torch

from .errors import InputError


def as_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device this machine has: ``cpu`` (index 0 only), ``cuda`` / ``cuda:N`` when CUDA
    is available with that many devices, ``mps`` when available; an InputError saying what there is otherwise."""
    if isinstance(device, str) and device.strip() != device:
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise InputError(f"device {str(device)!r}: there is one CPU device, 'cpu'")
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} was asked for but CUDA is not available here; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was asked for but Apple's MPS backend is not available here; use cpu")
        return device
    raise InputError(f"unsupported device {str(device)!r}; use cpu or cuda[:N]")
