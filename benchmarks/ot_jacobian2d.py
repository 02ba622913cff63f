"""How good newton-qmc's facet Jacobian is, where the exact one is known (issue 15): in 2-D, against the
Jacobian of the exact power-cell masses (``power2d.power_diagram``), for the Gaussian source and the uniform
square, N = 1000 random targets. At the exact solution h* (an ``exact-2d`` fit) moved by a random delta whose
exact l1 mass error is about 0.01 (a final stage's error), each row gives, for a Jacobian sample of m N
quasi-Monte-Carlo points (newton-qmc's Jacobian stream) and a band quantile: the relative Frobenius error of
the estimate, the ratio of its trace to the exact one, and the exact l1 error after one step of the
solver's own hard direction (``newton.hard_direction``: ``newton_direction`` with the option ``shift``)
computed from it. The "exact" rows
take the step with the exact Jacobian. A step's quality on exact masses, not on a sample's counts: it says
whether the Jacobian estimate limits newton-qmc's convergence.

    python benchmarks/ot_jacobian2d.py --out FILE.csv      # ~20 s on 2 cores (--suite full: N = 1000 and 4000, ~2.5 min)
"""
import numpy as np
import torch
from _ot_common import main

from dpmot_bench.ot import GaussianSource, SemiDiscreteOT, UniformSource
from dpmot_bench.ot.curvature import facet_jacobian, newton_direction
from dpmot_bench.ot.newton import NewtonQMCOptions
from dpmot_bench.ot.power2d import power_diagram
from dpmot_bench.ot.problem import NEWTON_KEY, Head, Problem

TARGET_L1 = 0.01


def jacobian_rows(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    rows, shift = [], NewtonQMCOptions().shift
    sizes = (1000,) if suite == "quick" else (1000, 4000)
    for n in sizes:
        for source in (GaussianSource(2), UniformSource(2, 0.0, 1.0)):
            g = torch.Generator().manual_seed(1)
            targets = torch.randn(n, 2, generator=g) if source.kind == "gaussian" else torch.rand(n, 2, generator=g)
            weights = torch.full((n,), 1 / n, dtype=torch.float64)
            h_star = SemiDiscreteOT(source, seed=0).fit(targets).h_.double()
            problem = Problem(source, targets.to(device), weights.to(device), seed=0)
            exact = power_diagram(source, targets.numpy(), h_star.numpy()).jacobian().toarray()
            direction = torch.randn(n, generator=g, dtype=torch.float64)
            direction -= direction.mean()
            # scaled so that the exact l1 error is about TARGET_L1 (to first order: |J delta|_1)
            h = h_star + direction * TARGET_L1 / float(np.abs(exact @ direction.numpy()).sum())
            diagram = power_diagram(source, targets.numpy(), h.numpy())
            jacobian = torch.from_numpy(diagram.jacobian().toarray())
            error = torch.from_numpy(diagram.masses) - weights
            base = {"source": source.kind, "N": n, "l1_before": float(error.abs().sum())}

            def after(jacobian_used: torch.Tensor) -> float:
                """The exact l1 error after the hard direction's step computed with ``jacobian_used``."""
                step = newton_direction(jacobian_used, error, 0.0, 0.0, shift)
                moved = power_diagram(source, targets.numpy(), (h - step).numpy(), with_jacobian=False)
                return float(np.abs(moved.masses - weights.numpy()).sum())

            rows.append({**base, "jacobian_points": "exact", "band_quantile": None, "rel_frobenius_error": 0.0,
                         "trace_ratio": 1.0, "l1_after": after(jacobian)})
            for per_target in (64, 256):
                points = Head(problem.sample(per_target * n, (NEWTON_KEY, 0), quasi=True), per_target * n)
                for band in (0.05, 0.1, 0.2, 0.4):
                    estimate = facet_jacobian(problem, points, h, band, dense=True).cpu()
                    rows.append({**base, "jacobian_points": f"{per_target} N", "band_quantile": band,
                                 "rel_frobenius_error": float((estimate - jacobian).norm() / jacobian.norm()),
                                 "trace_ratio": float(estimate.trace() / jacobian.trace()),
                                 "l1_after": after(estimate)})
    for row in rows:
        row["contraction"] = row["l1_after"] / row["l1_before"]
    return rows


if __name__ == "__main__":
    main(jacobian_rows, __doc__)
