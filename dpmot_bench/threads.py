"""Running a block of small tensor work on one CPU thread."""
from __future__ import annotations

import contextlib

import torch

from .errors import InputError


def check_threads(count, what: str = "threads") -> int:
    """``count`` if it is a positive integer (a CPU thread or process count), else an InputError."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"{what} must be a positive integer, got {count!r}")
    return count


def set_cpu_threads(count: int):
    """Use ``count`` CPU threads in torch (intra-op) and in the BLAS / OpenMP libraries loaded so far
    (numpy's and scipy's OpenBLAS: an FD's eigh, through threadpoolctl). Returns the threadpoolctl limiter,
    whose ``restore_original_limits()`` undoes its part. On a loaded machine an OpenBLAS call on more
    threads than free cores waits for descheduled threads: the quick report's bootstraps of 64-D eigh ran
    minutes instead of seconds."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    return threadpool_limits(limits=count)


@contextlib.contextmanager
def cpu_threads(count: int):
    """Run the block on ``count`` CPU threads (:func:`set_cpu_threads`), restoring the previous settings on
    exit."""
    previous = torch.get_num_threads()
    try:
        limiter = set_cpu_threads(count)
        try:
            yield
        finally:
            limiter.restore_original_limits()
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def one_cpu_thread():
    """Run the block with one intra-op CPU thread, restoring the previous setting on exit.

    For work on small tensors (a few thousand rows, 8x8 images), where thread synchronisation costs more than
    it saves: on a loaded 2-core machine it made calls 20-150x slower. It also makes floating-point
    summation orders independent of the core count (reproducible training)."""
    with cpu_threads(1):
        yield
