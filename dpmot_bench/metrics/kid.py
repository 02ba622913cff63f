"""Kernel Inception Distance (Binkowski et al. 2018), as torch-fidelity computes it.

With the polynomial kernel ``k(x, y) = (gamma <x, y> + coef0)^degree`` (defaults: gamma = 1/d, coef0 = 1,
degree = 3), each of ``subsets`` rounds draws m rows of A and m rows of B without replacement and takes
the unbiased MMD^2 estimate

    MMD^2 = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (m (m - 1))
            - 2 sum_{i, j} k(a_i, b_j) / m^2

(torch-fidelity's ``mmd_est="unbiased"``: the cross term keeps its diagonal). ``kid_mean`` is the mean over
the rounds, ``kid_std`` their standard deviation (ddof = 0, as torch-fidelity: the spread of one round's
estimate, not the standard error of the mean). Rows are drawn as torch-fidelity does, with
``np.random.RandomState(seed)``: ``choice(n_a, m, replace=False)`` then ``choice(n_b, m, replace=False)``
per round, so equal inputs, seed and m give torch-fidelity's numbers (computed here in float64; torch-fidelity
works in its features' float32).

Subset size rule: torch-fidelity refuses ``subset_size`` larger than either set; here
``m = min(subset_size, n_a, n_b)`` (reported as ``subset_size`` in the result), and m >= 2 is needed. KID
is unbiased: E[MMD^2] = 0 when A and B come from one distribution, so small negative values are valid.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._points import as_points, same_dim


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> np.ndarray:
    """``(gamma x y^T + coef0)^degree`` for rows x (n, d), y (m, d), float64."""
    return (gamma * (x @ y.T) + coef0) ** degree


def unbiased_mmd2(k_aa: np.ndarray, k_ab: np.ndarray, k_bb: np.ndarray) -> float:
    """The unbiased MMD^2 of the module docstring from the three m x m kernel matrices."""
    m = k_aa.shape[0]
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2 * k_ab.sum() / (m * m))


def kernel_inception_distance(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                              gamma: float | None = None, coef0: float = 1, seed: int = 0) -> dict:
    """KID between feature sets (n_a, d) and (n_b, d) (module docstring). Returns ``kid_mean``, ``kid_std``,
    ``subset_size`` (the m used) and ``subsets``."""
    a, b = as_points(feats_a, "feats_a", min_rows=2), as_points(feats_b, "feats_b", min_rows=2)
    same_dim(a, b, "feats_a", "feats_b")
    a, b = a.cpu().numpy(), b.cpu().numpy()
    for name, value, low in (("subsets", subsets, 1), ("subset_size", subset_size, 2), ("degree", degree, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    if not (np.isfinite(gamma) and gamma > 0 and np.isfinite(coef0)):
        raise InputError(f"gamma must be finite and > 0 and coef0 finite, got gamma={gamma}, coef0={coef0}")
    m = int(min(subset_size, a.shape[0], b.shape[0]))
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for r in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kernels = (polynomial_kernel(p, q, degree, gamma, coef0) for p, q in ((x, x), (x, y), (y, y)))
        values[r] = unbiased_mmd2(*kernels)
    return {"kid_mean": float(values.mean()), "kid_std": float(values.std()), "subset_size": m,
            "subsets": int(subsets)}
