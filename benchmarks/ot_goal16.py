"""The 16-D goal alone (issue 15): ``newton-qmc`` on N = 1000 standard Gaussian targets in d = 16 from the
standard Gaussian source, the configuration and the measure of ``ot_solvers.py --suite full`` (final stage
8192 N points, otherwise the default options, every snapshot of the stages with >= 1/64 of the final sample measured on 2^24
independent Monte-Carlo points, floor 0.0062), without the rival solvers: the time of the first snapshot
with l1 <= 0.01 and max relative error <= 10% (goal: <= 10 s on 2 threads), the accuracy at the end, and
one row per pass (stage, points, the fit's own l1, step, solver seconds).

Snapshots are measured in time order until the first that meets the goal, then the last one (each costs a
pass over 2^24 points). Solver seconds exclude the measurements.

    OMP_NUM_THREADS=1 python benchmarks/ot_goal16.py --out FILE.csv [--device cpu|cuda]
"""
import time

import torch
from _ot_common import main

from dpmot_bench.bench.ot_bench import _accuracy, _evaluate
from dpmot_bench.ot import GaussianSource
from dpmot_bench.ot.problem import Problem
from dpmot_bench.ot.solvers import SOLVERS, solver_options

N_TARGETS, DIM, FINAL = 1000, 16, 8192
N_EVAL = 2**24


def goal_rows(suite: str = "quick", device: str = "cpu", progress: bool = False, goal_l1: float = 0.01,
              goal_max_rel: float = 0.1, **changes) -> list[dict]:
    """The rows; ``changes``: newton-qmc options to change (e.g. ``band_quantile=0.4``)."""
    targets = torch.randn(N_TARGETS, DIM, generator=torch.Generator().manual_seed(1)).to(device)
    weights = torch.full((N_TARGETS,), 1 / N_TARGETS, dtype=torch.float64, device=device)
    problem = Problem(GaussianSource(DIM), targets, weights, seed=0)
    n_final = FINAL * N_TARGETS
    options = solver_options("newton-qmc", {"n_samples": n_final, **changes})
    rows, clock = [], {"elapsed": 0.0, "start": 0.0}

    def on_iteration(state: dict, log) -> bool:
        clock["elapsed"] += time.perf_counter() - clock["start"]
        snapshot = log.samples * 64 >= n_final or state["done"]
        rows.append({"iteration": log.iteration, "stage": log.stage, "samples": log.samples,
                     "own_l1": log.l1_mass_error, "own_max_rel": log.max_rel_mass_error, "step": log.step,
                     "seconds": clock["elapsed"], "h": state["solution"].clone() if snapshot else None})
        clock["start"] = time.perf_counter()
        return False

    clock["start"] = time.perf_counter()
    SOLVERS["newton-qmc"].solve(problem, options, None, on_iteration)
    base = {"N": N_TARGETS, "d": DIM, "final_samples": n_final, "threads": torch.get_num_threads(),
            "device": device, "suite": suite}
    snapshots = [r for r in rows if r["h"] is not None]
    measured = {}
    for row in snapshots:
        measured[row["iteration"]] = _evaluate(problem, row["h"].to(device), N_EVAL)
        l1, max_rel, _ = _accuracy(measured[row["iteration"]])
        if l1 <= goal_l1 and max_rel <= goal_max_rel:
            break
    if snapshots and snapshots[-1]["iteration"] not in measured:
        measured[snapshots[-1]["iteration"]] = _evaluate(problem, snapshots[-1]["h"].to(device), N_EVAL)
    out = []
    for row in rows:
        h = row.pop("h")
        evaluation = measured.get(row["iteration"], {})
        out.append({**base, **row, **evaluation,
                    "meets_goal": (bool(_accuracy(evaluation)[0] <= goal_l1 and _accuracy(evaluation)[1] <= goal_max_rel)
                                   if evaluation else None)})
    return out


def summary(rows: list[dict]) -> list[dict]:
    hit = next((r for r in rows if r["meets_goal"]), None)
    last = rows[-1]
    return [{"threads": last["threads"], "seconds_to_goal": hit["seconds"] if hit else None,
             "l1_at_goal": hit["l1_mass_error"] if hit else None,
             "max_rel_at_goal": hit["max_rel_mass_error"] if hit else None,
             "total_seconds": last["seconds"], "passes": len(rows),
             "final_l1": last.get("l1_mass_error"), "final_max_rel": last.get("max_rel_mass_error")}]


if __name__ == "__main__":
    main(goal_rows, __doc__, summary=summary)
