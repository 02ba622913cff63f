"""2-Wasserstein distance between sample sets, and its sampling floor.

``w2`` is exact up to ``max_exact`` points per set: POT's network simplex (``ot.emd2``) on uniform
weights and the squared Euclidean cost, ``W2 = sqrt(min_P <P, C>)``. Beyond that it is the sliced
distance ``SW2 = sqrt(mean_theta W2^2(theta # x, theta # y))`` over fixed seeded unit directions (on
the tensors' device). SW2 <= W2 and they differ in general (they coincide in 1-D): compare values only
at equal sample sizes and methods, which is what the floor is for.

The floor is the W2 between two independent samples of the true distribution of the same size: an
estimate at that size cannot resolve differences below it. By joint convexity of W2^2,
``W2^2(x_n, p) <= E W2^2(x_n, y_n)`` for y_n an independent n-sample of p, so the floor also bounds how
far a sample set's W2 can sit from its population value.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import torch
from scipy.spatial import distance

from ..errors import InputError, unknown_name
from ..resources import check_memory
from ._points import as_points, same_dim

W2_EXACT_MAX = 3000  # exact OT at 3000 x 3000: ~2 s in 2-D, ~9 s in 64-D on one (shared) core
N_PROJECTIONS = 512
_BLOCK_ENTRIES = 1 << 23  # projected values held at once
_EMD_MAX_ITERATIONS = 10 ** 9  # a cap that a few thousand points never reach; reaching it raises


def w2_method(n_x: int, n_y: int, max_exact: int = W2_EXACT_MAX) -> str:
    """``"exact"`` when both sets have at most ``max_exact`` points, else ``"sliced"``."""
    return "exact" if max(n_x, n_y) <= max_exact else "sliced"


def exact_w2(x, y) -> float:
    """Exact W2 between the uniform empirical measures of x (n, d) and y (m, d) (``ot.emd2``)."""
    x, y = as_points(x, "x", device="cpu"), as_points(y, "y", device="cpu")
    same_dim(x, y, "x", "y")
    # scipy's cdist sums squared differences directly: unlike the |x|^2 + |y|^2 - 2<x, y> form of
    # ot.dist it keeps tiny costs exact, so W2 of a set with itself (or of near copies) is resolved.
    cost = distance.cdist(x.numpy(), y.numpy(), "sqeuclidean")
    total, log = ot.emd2(ot.unif(len(x)), ot.unif(len(y)), cost, numItermax=_EMD_MAX_ITERATIONS, log=True)
    if log["warning"] is not None:
        raise RuntimeError(f"ot.emd2 did not converge ({log['warning']}); W2 would be wrong")
    return math.sqrt(max(float(total), 0.0))


def _quantile_pairs(n: int, m: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pieces of [0, 1] on which the quantile functions of uniform n- and m-point measures are both
    constant: breakpoints {i/n} and {j/m} in exact integer units of 1/(n m). Returns the sorted-order
    index into each set and the width of each piece."""
    steps = [torch.arange(n + 1, device=device) * m, torch.arange(m + 1, device=device) * n]
    breaks = torch.unique(torch.cat(steps))
    twice_mid = breaks[:-1] + breaks[1:]
    return twice_mid // (2 * m), twice_mid // (2 * n), (breaks[1:] - breaks[:-1]).double() / (n * m)


def sliced_directions(dim: int, n_projections: int = N_PROJECTIONS, seed: int = 0) -> torch.Tensor:
    """The unit directions (n_projections, dim) float64 of ``sliced_w2``: normalised seeded normals."""
    directions = np.random.default_rng(seed).standard_normal((n_projections, dim))
    return torch.from_numpy(directions / np.linalg.norm(directions, axis=1, keepdims=True))


def sliced_w2(x, y, n_projections: int = N_PROJECTIONS, seed: int = 0) -> float:
    """Sliced W2 over ``n_projections`` unit directions drawn from ``seed`` (fixed given seed and d).

    Each projection's 1-D W2^2 is the integral of the squared difference of the quantile functions,
    exact for any sizes n and m. Written here, not with ``ot.sliced_wasserstein_distance`` (which agrees;
    see the tests), because that sorts the (n, n_projections) array along its strided axis: 4x slower
    at 5,000-20,000 points here. Projections are processed in blocks; runs on the inputs' device."""
    x = as_points(x, "x")
    y = as_points(y, "y", device=x.device)
    same_dim(x, y, "x", "y")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise InputError(f"n_projections must be an integer >= 1, got {n_projections!r}")
    check_memory(8 * n_projections * x.shape[1], f"{n_projections} projection directions in {x.shape[1]} dimensions",
                 x.device)
    directions = sliced_directions(x.shape[1], n_projections, seed).to(x.device)
    ix, iy, width = _quantile_pairs(x.shape[0], y.shape[0], x.device)
    total = 0.0
    for block in directions.split(max(1, _BLOCK_ENTRIES // (x.shape[0] + y.shape[0]))):
        qx, qy = (block @ x.T).sort(dim=1).values, (block @ y.T).sort(dim=1).values
        total += float(((qx[:, ix] - qy[:, iy]) ** 2 @ width).sum())
    return math.sqrt(total / n_projections)


def w2(x, y, method: str = "auto", max_exact: int = W2_EXACT_MAX, n_projections: int = N_PROJECTIONS,
       seed: int = 0) -> float:
    """W2 between sample sets: ``"exact"``, ``"sliced"``, or ``"auto"`` (exact up to ``max_exact`` points)."""
    x, y = as_points(x, "x"), as_points(y, "y")
    methods = {"exact": exact_w2, "sliced": lambda a, b: sliced_w2(a, b, n_projections, seed)}
    if method == "auto":
        method = w2_method(x.shape[0], y.shape[0], max_exact)
    if method not in methods:
        raise unknown_name("W2 method", method, [*methods, "auto"])
    return methods[method](x, y)


def w2_floor(sampler_of_true_data, n: int, seed: int, repeats: int = 5, **w2_options) -> dict:
    """W2 between two independent true samples of size n, over ``repeats`` pairs.

    ``sampler_of_true_data(n, seed)`` returns points (n, d) or a tuple whose first item is the points
    (as ``Dataset.sample``). The 2 x repeats seeds are derived from ``seed`` through numpy's SeedSequence.
    Returns ``mean``, ``std`` (ddof 1), ``values``, ``n`` and ``method``."""
    if n < 1 or repeats < 2:
        raise InputError(f"w2_floor needs n >= 1 and repeats >= 2, got n={n}, repeats={repeats}")
    seeds = np.random.SeedSequence(seed).generate_state(2 * repeats, np.uint32).tolist()

    def draw(s):
        sample = sampler_of_true_data(n, s)
        return sample[0] if isinstance(sample, tuple) else sample

    values = [w2(draw(seeds[2 * i]), draw(seeds[2 * i + 1]), **w2_options) for i in range(repeats)]
    method = w2_options.get("method", "auto")
    if method == "auto":
        method = w2_method(n, n, w2_options.get("max_exact", W2_EXACT_MAX))
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": values, "n": n,
            "method": method}
