"""Running a block of small tensor work on one CPU thread."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_cpu_thread():
    """Run the block with one intra-op CPU thread, restoring the previous setting on exit.

    For work on small tensors (a few thousand rows, 8x8 images), where thread synchronisation costs more than
    it saves: on a loaded 2-core machine it made calls 20-150x slower. It also makes floating-point
    summation orders independent of the core count (reproducible training)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
