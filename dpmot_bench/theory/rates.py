"""Predicted rates and the fits that check them (``theory/bound.md``, table "Predicted rates")."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..data.gmm import GaussianMixture
from ..errors import InputError


def fit_slope(x, y, level: float = 0.95) -> dict:
    """Least-squares slope of ``log y`` against ``log x`` with a Student-t confidence half-width.

    Non-positive or non-finite points are dropped (a term that is exactly 0 has no slope)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    x, y = np.log(x[keep]), np.log(y[keep])
    if len(np.unique(x)) < 2:
        return {"slope": math.nan, "slope_ci": math.nan, "points": int(keep.sum())}
    fit = stats.linregress(x, y)
    dof = len(x) - 2
    half = stats.t.ppf(0.5 + level / 2, dof) * fit.stderr if dof > 0 else math.nan
    return {"slope": float(fit.slope), "slope_ci": float(half), "points": int(len(x))}


def binomial_mad(n: int, p: float) -> float:
    """``E|B - n p|`` for ``B ~ Binomial(n, p)``: de Moivre's closed form
    ``2 k C(n, k) p^k (1 - p)^(n - k + 1)`` with ``k = floor(n p) + 1`` (tested against the pmf sum)."""
    if p <= 0 or p >= 1:
        return 0.0
    k = math.floor(n * p) + 1
    log_term = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                + k * math.log(p) + (n - k + 1) * math.log1p(-p))
    return 2 * k * math.exp(log_term)


def latent_lower_bound(mixture: GaussianMixture, n: int, sigma: float = 0.0, radii: int = 64) -> float:
    """Lower bound on ``(E W2^2(p_hat_N, p_sigma))^(1/2)`` for an isotropic GMM (``bound.md`` R1 (a)).

    Balls of radius r around the means are ``gamma = d_min - 2r`` apart; the mass outside them is
    ``eta = sum_k w_k P(chi_d > r / s_sigma)``; ``E W2^2 >= gamma^2 (1/2 sum_k E|b_k - a_k| - eta)`` with
    ``a_k = w_k (1 - P(chi_d > r / s_sigma))`` (mass of other components inside ball k, at most eta, is
    neglected). Maximised over a grid of r in (0, d_min / 2). Returns 0 when no r helps.
    """
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    means = mixture.means.cpu().double().numpy()
    weights = mixture.weights.cpu().double().numpy()
    stds = np.sqrt(mixture.stds.cpu().double().numpy() ** 2 + sigma ** 2)
    if len(means) < 2 or np.any(stds == 0):
        return 0.0
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    d_min = dist[~np.eye(len(means), dtype=bool)].min()
    best = 0.0
    for r in np.linspace(0, d_min / 2, radii + 2)[1:-1]:
        tails = stats.chi.sf(r / stds, mixture.dim)
        eta = float(np.sum(weights * tails))
        inside = weights * (1 - tails)
        mad = sum(binomial_mad(n, a) for a in inside) / n
        best = max(best, (d_min - 2 * r) ** 2 * (0.5 * mad - eta))
    return math.sqrt(best)
