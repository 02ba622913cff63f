"""Where the seconds of a ``newton-qmc`` fit go: the fit runs under cProfile and each part of the solver is
reported by the cumulative time of the function that does it (a part's time includes what it calls, and
the parts are disjoint): drawing source points, hard passes (full ones, scoring every point, and moves of
the kept winners), entropic passes and Hessians, the facet Jacobian, the linear solves, the refill of
empty cells, and the independent check. Gaussian source, N standard Gaussian targets, uniform weights,
the default options (as ``ot_solvers.py``).

    python benchmarks/ot_profile.py --suite quick|full --out FILE.csv [--device cpu|cuda]

quick: N = 1000, d = 16, final stage 8192 N points (the 16-D goal's configuration); full: also N = 10 000,
d = 64 on the default schedule (final stage 256 N points).
"""
import cProfile
import pstats
import time
from pathlib import Path

import torch
from _ot_common import main

from dpmot_bench import ot
from dpmot_bench.ot import GaussianSource, solve_semidiscrete

# (part, module file, function): the function whose cumulative time is the part's
PARTS = [
    ("draw source points", "sampling.py", "_sobol_blocks"),
    ("hard pass: full (every point scored)", "problem.py", "build"),
    ("hard pass: kept winners moved", "problem.py", "move_to"),
    ("facet Jacobian", "curvature.py", "facet_jacobian"),
    ("entropic Hessian", "curvature.py", "entropic_hessian"),
    ("linear solve", "curvature.py", "newton_direction"),
    ("refill empty cells", "curvature.py", "refill_empty"),
    ("independent check", "check.py", "sampled_check"),
]


def check_parts() -> None:
    """Every part names a function its module defines: a renamed one would silently read 0 s."""
    for part, filename, function in PARTS:
        if f"def {function}(" not in (Path(ot.__file__).parent / filename).read_text():
            raise SystemExit(f"ot_profile.py: part {part!r} names {function}() in ot/{filename}, which does not define it")


def profile_rows(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    check_parts()
    plans = [(1000, 16, 8192)] + ([] if suite == "quick" else [(10_000, 64, None)])
    rows = []
    for n, d, final in plans:
        targets = torch.randn(n, d, generator=torch.Generator().manual_seed(1)).to(device)
        options = {"n_samples": final * n} if final else {}
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        result = solve_semidiscrete(GaussianSource(d), targets, method="newton-qmc", device=device, **options)
        profiler.disable()
        total = time.perf_counter() - start
        stats = pstats.Stats(profiler).stats
        base = {"N": n, "d": d, "final_samples": (final or 256) * n, "iterations": result.n_iter,
                "total_seconds": total, "threads": torch.get_num_threads(), "device": device,
                "check_l1": result.check.l1_mass_error, "check_floor": result.check.noise_floor}
        accounted = 0.0
        for part, filename, function in PARTS:
            seconds = sum(entry[3] for (file, _, name), entry in stats.items()
                          if file.endswith(f"/ot/{filename}") and name == function)
            calls = sum(entry[1] for (file, _, name), entry in stats.items()
                        if file.endswith(f"/ot/{filename}") and name == function)
            accounted += seconds
            rows.append({**base, "part": part, "calls": calls, "seconds": seconds, "share": seconds / total})
        rows.append({**base, "part": "everything else", "calls": 0, "seconds": total - accounted,
                     "share": (total - accounted) / total})
    return rows


if __name__ == "__main__":
    main(profile_rows, __doc__)
