"""CPU threads: how many torch and the BLAS libraries use, and blocks of tensor work shared out among threads."""
from __future__ import annotations

import contextlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

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




MAX_WORKERS = 8  # beyond a few, the Python between operations (under the GIL) would serialise the workers


def thread_map(fn, items, threads: int | None = None) -> list:
    """``[fn(item) for item in items]`` computed by :func:`thread_imap`."""
    return list(thread_imap(fn, items, threads))


def thread_imap(fn, items, threads: int | None = None) -> Iterator:
    """``fn(item) for item in items``, in order, the items shared out among Python worker threads that
    together use ``threads`` CPU threads (default: torch's intra-op thread count): ``w = min(threads,
    MAX_WORKERS, len(items))`` workers of ``threads // w`` intra-op threads each (one, on a machine of a
    few cores), ``w`` items at a time, so that a stream of blocks is never held whole.

    For loops over independent blocks of tensor work (a pass of the OT solvers over its blocks of source
    points): a block is a chain of many small operations (a GEMM, then reductions over a few thousand rows)
    that torch's intra-op threads split too finely to gain much from a second core, while whole blocks on
    separate threads (torch releases the GIL inside an operation) keep every core busy. torch's thread
    count is process-wide: it is ``threads // w`` until the iterator is exhausted or closed (the caller's
    own work between items runs so too)."""
    threads = threads or torch.get_num_threads()
    workers = min(threads, MAX_WORKERS, len(items) if hasattr(items, "__len__") else threads)
    if workers <= 1:
        yield from map(fn, items)
        return
    previous, inner = torch.get_num_threads(), max(1, threads // workers)

    def one(item):
        torch.set_num_threads(inner)
        return fn(item)

    torch.set_num_threads(inner)
    try:
        with ThreadPoolExecutor(workers) as pool:
            iterator = iter(items)
            while group := list(itertools.islice(iterator, workers)):
                yield from pool.map(one, group)
    finally:
        torch.set_num_threads(previous)
