"""The KeOps route (``pykeops``, optional: ``pip install pykeops``; it compiles its kernels with the system's
g++ on first use) against this toolkit's assignment kernels (chunked, and fused where built: ``ot/native.py``)
and the naive expression: seconds of
``argmax_j <x_i, y_j> + h_j`` for M = 2^16 points, N = 1000 targets, d = 16 and 64 (best of 3 after a
warm-up), and the fraction of rows where KeOps and the kernel agree.

    python benchmarks/ot_keops.py --suite quick --out FILE.csv [--device cpu|cuda]
"""
import time

import torch
from _ot_common import main

from dpmot_bench.bench.ot_bench import chunked_assign
from dpmot_bench.ot import kernel, native


def _best(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def keops_rows(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    try:
        from pykeops.torch import LazyTensor
    except ImportError:
        print("pykeops is not installed: nothing to measure (pip install pykeops)")
        return []
    rows = []
    for d in (16, 64) if suite == "quick" else (16, 64, 256):
        m, n = 2**16, 1000
        g = torch.Generator().manual_seed(0)
        x, y, h = (torch.randn(m, d, generator=g).to(device), torch.randn(n, d, generator=g).to(device),
                   torch.randn(n, generator=g).to(device))
        x_i, y_j, h_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :]), LazyTensor(h[None, :, None])
        timed = {"keops": lambda: ((x_i | y_j) + h_j).argmax(dim=1).view(-1),
                 "chunked kernel": lambda: chunked_assign(x, y, h),
                 "naive": lambda: (x @ y.T + h).argmax(1)}
        if device == "cpu" and native.library() is not None:
            timed["fused kernel"] = lambda: kernel.assign(x, y, h)
        agree = float((timed["keops"]().long() == timed["chunked kernel"]()).double().mean())
        for method, fn in timed.items():
            rows.append({"method": method, "M": m, "N": n, "d": d, "seconds": _best(fn), "agreement": agree,
                         "threads": torch.get_num_threads(), "device": device})
    return rows


if __name__ == "__main__":
    main(keops_rows, __doc__)
