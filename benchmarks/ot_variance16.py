"""Can a cleverer estimator of the cell masses cut the 16-D sample (issue 15)? In d = 16 a newton-qmc fit
needs about 8000 N points for l1 <= 0.01 (quasi-Monte Carlo integrates cell indicators barely better than
Monte Carlo there); this measures, at the h of a newton-qmc fit (N = 1000 standard Gaussian targets, the
16-D goal's problem), how many independent points one draw of each estimator is worth:

- ``antithetic``: x and -x (one GEMM gives both scores, ``h - <x, y>`` and ``h + <x, y>``);
- ``ray``: the exact integral along the ray through x, ``r -> r x / |x|``, over the chi law of the
  radius (here by 400 stratified radii: the limit of stratifying the radius), one GEMM per direction;
- ``line``: the ray and its antithetic ray together.

Worth = ``(sum_i sd_i(one point) / sum_i sd_i(one draw))^2``, the sums of per-cell standard deviations
(what the expected l1 error of a mean over n draws scales with). An estimator pays off when its worth
exceeds its cost in passes: a direction's scores cost one GEMM plus one argmax per radius.

    python benchmarks/ot_variance16.py --out FILE.csv   # ~3 min on one thread
"""
import numpy as np
import torch
from _ot_common import main
from scipy.stats import chi

from dpmot_bench.ot import GaussianSource
from dpmot_bench.ot.problem import Problem
from dpmot_bench.ot.solvers import SOLVERS, solver_options

N_TARGETS, DIM, RADII = 1000, 16, 400


def variance_rows(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    directions = 1000 if suite == "quick" else 4000
    targets = torch.randn(N_TARGETS, DIM, generator=torch.Generator().manual_seed(1)).to(device)
    problem = Problem(GaussianSource(DIM), targets,
                      torch.full((N_TARGETS,), 1 / N_TARGETS, dtype=torch.float64, device=device), seed=0)
    options = solver_options("newton-qmc", {"n_samples": 256 * N_TARGETS, "first_smoothing": None})
    h = SOLVERS["newton-qmc"].solve(problem, options, None, None)["solution"]
    g = torch.Generator().manual_seed(5)
    u = torch.randn(directions, DIM, generator=g)
    u /= u.norm(dim=1, keepdim=True)
    radii = torch.tensor(chi.ppf((np.arange(RADII) + 0.5) / RADII, DIM), dtype=torch.float32)

    def along(sign: float) -> torch.Tensor:  # (directions, N): each ray's share of every cell
        share = torch.zeros(directions, N_TARGETS, dtype=torch.float64)
        rows = torch.arange(directions)
        for r in radii:
            share[rows, problem.assign((sign * r * u).to(device), h).cpu()] += 1 / RADII
        return share

    ray, opposite = along(1.0), along(-1.0)
    x = torch.randn(8 * directions, DIM, generator=g)
    pair = torch.zeros(x.shape[0], N_TARGETS, dtype=torch.float64)
    rows = torch.arange(x.shape[0])
    pair[rows, problem.assign(x.to(device), h).cpu()] += 0.5
    pair[rows, problem.assign((-x).to(device), h).cpu()] += 0.5
    p = (ray.mean(0) + opposite.mean(0)) / 2

    def spread(variance: torch.Tensor) -> float:
        return float(variance.clamp_min(0).sqrt().sum())

    point = spread(p * (1 - p))
    draws = {"antithetic": (pair, 2, "1 GEMM + 2 argmax"), "ray": (ray, RADII, "1 GEMM + 1 argmax per radius"),
             "line": ((ray + opposite) / 2, 2 * RADII, "1 GEMM + 1 argmax per radius")}
    out = [{"estimator": "point", "draws": x.shape[0], "points_per_draw": 1, "worth_in_points": 1.0,
            "cost": "1 GEMM + 1 argmax"}]
    for name, (values, points, cost) in draws.items():
        out.append({"estimator": name, "draws": values.shape[0], "points_per_draw": points,
                    "worth_in_points": (point / spread(values.var(0))) ** 2, "cost": cost})
    return [{**row, "N": N_TARGETS, "d": DIM, "suite": suite} for row in out]


if __name__ == "__main__":
    main(variance_rows, __doc__)
