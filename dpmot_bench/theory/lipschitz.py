"""Lipschitz constants of probability-flow maps (``theory/flow.md``).

The flow of ``dx/dsigma = (x - D(x, sigma)) / sigma`` from ``sigma_star`` down to ``sigma_end`` is
Lipschitz with constant at most

    Lambda(sigma_end, sigma_star) = exp( int_{sigma_end}^{sigma_star} (ell(sigma) - 1) / sigma dsigma ),

where ``ell(sigma)`` is a one-sided Lipschitz constant of ``D(., sigma)`` (Lemma F1). For the exact
denoiser ``grad D = Cov[x_0 | x_sigma = x] / sigma^2`` (second-order Tweedie), symmetric and PSD.

Three kinds of ``ell`` are computed here, and the distinction matters:

* **rigorous**: ``ell_hi`` for an isotropic GMM with equal stds (Popoviciu's variance inequality), and the
  exact value for Gaussian data; integrated in closed form.
* **probe lower bound**: ``max`` of ``lambda_max(grad D)`` over chosen points. The true sup is at least
  this, so ``Lambda`` computed from it is a *lower bound on the rigorous constant* (it shows vacuity is
  not an artefact of ``ell_hi``), never an upper bound.
* **estimated** (pathwise): the same maximum over points on the trajectories actually followed. Valid
  only to first order for perturbations that stay near those trajectories: an estimate, not a proof.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import cumulative_trapezoid
from scipy.special import logsumexp

from ..data.gmm import GaussianMixture
from ..denoisers import sigma_batch
from ..errors import InputError, check_sigma


def gmm_denoiser_jacobian(mixture: GaussianMixture, x: torch.Tensor, sigma) -> torch.Tensor:
    """``grad_x D(x, sigma) = Cov[x_0 | x_sigma = x] / sigma^2`` for the exact GMM denoiser, (n, d, d).

    Given component k, ``x_0 | x ~ N(mu_k(x), c_k I)`` with ``v_k = s_k^2 + sigma^2``,
    ``mu_k = m_k + (s_k^2 / v_k)(x - m_k)``, ``c_k = s_k^2 sigma^2 / v_k``; so
    ``Cov = sum_k r_k c_k I + sum_k r_k mu_k mu_k^T - mu_bar mu_bar^T`` with ``r = posterior(x)``.
    """
    x64 = x.double()
    sigma = sigma_batch(sigma, x64)
    check_sigma(sigma)
    resp = mixture.posterior(x64, sigma)                                   # (n, K)
    means, s2 = mixture.means.to(x.device), mixture.stds.to(x.device) ** 2
    var = s2 + sigma[:, None] ** 2                                         # (n, K)
    mu = means + (s2 / var)[..., None] * (x64[:, None, :] - means)         # (n, K, d)
    within = (resp * s2 * sigma[:, None] ** 2 / var).sum(1)                # (n,)
    mu_bar = torch.einsum("nk,nkd->nd", resp, mu)
    centred = mu - mu_bar[:, None, :]
    between = torch.einsum("nk,nkd,nke->nde", resp, centred, centred)
    eye = torch.eye(mixture.dim, dtype=torch.float64, device=x.device)
    return (within[:, None, None] * eye + between) / sigma[:, None, None] ** 2


def denoiser_jacobian(denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``grad_x D(x, sigma)`` row by row, (n, d, d), by autograd (d backward passes; rows of a denoiser
    are independent, so the gradient of a column sum is the per-row gradient). For any differentiable
    denoiser, e.g. a trained network."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = denoiser(x, sigma)
        rows = [torch.autograd.grad(out[:, j].sum(), x, retain_graph=j + 1 < out.shape[1])[0]
                for j in range(out.shape[1])]
    return torch.stack(rows, 1).double()


def max_eigenvalue(jacobians: torch.Tensor) -> torch.Tensor:
    """``lambda_max`` of the symmetric part, per matrix: the one-sided Lipschitz constant at a point."""
    return torch.linalg.eigvalsh(0.5 * (jacobians + jacobians.transpose(-1, -2)))[..., -1]


def _equal_std(mixture: GaussianMixture) -> float:
    stds = mixture.stds
    if float(stds.max() - stds.min()) > 1e-12 * max(1.0, float(stds.max())):
        raise InputError("the rigorous GMM bound needs components with one common std")
    return float(stds[0])


def means_diameter(mixture: GaussianMixture) -> float:
    return float(torch.cdist(mixture.means, mixture.means).max())


def gmm_ell_upper(mixture: GaussianMixture, sigma) -> np.ndarray:
    """Rigorous ``ell_hi(sigma) = g + sigma^2 Delta^2 / (4 v^2)`` (equal stds s, ``v = s^2 + sigma^2``,
    ``g = s^2 / v``, ``Delta`` = diameter of the means). From ``grad D = g I + (sigma^2 / v^2) Cov_r(m)``
    and Popoviciu: a variance of a law on an interval of length Delta is at most Delta^2 / 4."""
    s2 = _equal_std(mixture) ** 2
    sigma = np.asarray(sigma, np.float64)
    v = s2 + sigma ** 2
    return s2 / v + sigma ** 2 * means_diameter(mixture) ** 2 / (4 * v ** 2)


def gmm_log_lipschitz_upper(mixture: GaussianMixture, sigma_end: float, sigma_star: float) -> float:
    """``log Lambda_hi`` in closed form: ``int (ell_hi - 1)/sigma = -1/2 log(v*/v_end) + Delta^2/8 (1/v_end - 1/v*)``.

    Infinite for point masses (s = 0) with sigma_end = 0."""
    check_sigma(sigma_end, "sigma_end", allow_zero=True)
    check_sigma(sigma_star, "sigma_star")
    s2 = _equal_std(mixture) ** 2
    v_end, v_star = s2 + sigma_end ** 2, s2 + sigma_star ** 2
    if v_end == 0:
        return math.inf
    return -0.5 * math.log(v_star / v_end) + means_diameter(mixture) ** 2 / 8 * (1 / v_end - 1 / v_star)


def log_sigma_grid(sigma_end: float, sigma_star: float, n: int = 257) -> np.ndarray:
    """An increasing grid from sigma_end to sigma_star, uniform in log sigma (quadrature nodes)."""
    check_sigma(sigma_end, "sigma_end")
    check_sigma(sigma_star, "sigma_star")
    if not sigma_end < sigma_star:
        raise InputError(f"need sigma_end < sigma_star, got {sigma_end} and {sigma_star}")
    return np.exp(np.linspace(math.log(sigma_end), math.log(sigma_star), n))


def log_gronwall(sigmas: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """``log Lambda(sigmas[0], sigmas[j]) = int_{sigmas[0]}^{sigmas[j]} (ell - 1) dlog(sigma)`` for every j
    (trapezoid rule on an increasing grid). ``ell`` is sampled at the nodes, shape (G,) or (G, n) for n
    separate profiles (e.g. one per trajectory)."""
    sigmas, ell = np.asarray(sigmas, np.float64), np.asarray(ell, np.float64)
    if sigmas.ndim != 1 or ell.shape[:1] != sigmas.shape or np.any(np.diff(sigmas) <= 0) or sigmas[0] <= 0:
        raise InputError("sigmas must be an increasing positive grid with one ell value (row) per node")
    return cumulative_trapezoid(ell - 1, np.log(sigmas), axis=0, initial=0.0)


def _log_trapezoid(t: np.ndarray, log_f: np.ndarray) -> np.ndarray:
    """``log int f dt`` by the trapezoid rule, from ``log f`` at the nodes t (along axis 0)."""
    dt = np.diff(t).reshape((-1,) + (1,) * (log_f.ndim - 1))
    return logsumexp(np.logaddexp(log_f[:-1], log_f[1:]) + np.log(dt / 2), axis=0)


def log_k1(sigmas: np.ndarray, log_lambda: np.ndarray) -> float:
    """``log k1`` with ``k1^2 = int sigma Lambda(sigma_end, sigma)^2 dsigma`` (``theory/bound.md`` Thm A),
    in log space because Lambda may be astronomically large (trapezoid in log sigma)."""
    t = np.log(np.asarray(sigmas, np.float64))
    return 0.5 * float(_log_trapezoid(t, 2 * t + 2 * np.asarray(log_lambda, np.float64)))


def alekseev_integral(sigmas: np.ndarray, log_lambda: np.ndarray, error: np.ndarray):
    """``int Lambda(sigma_end, sigma) eps(sigma) / sigma dsigma`` (Lemma B1), trapezoid in log sigma; ``inf``
    where it overflows. ``log_lambda`` and ``error`` are (G,) or (G, n) (one integral per column)."""
    t = np.log(np.asarray(sigmas, np.float64))
    log_f = np.asarray(log_lambda, np.float64) + np.log(np.maximum(np.asarray(error, np.float64), 1e-300))
    value = _log_trapezoid(t, log_f)
    out = np.where(value < 700, np.exp(np.minimum(value, 700)), np.inf)
    return float(out) if out.ndim == 0 else out


def gmm_probe_points(mixture: GaussianMixture, sigma: float, n_samples: int, seed: int = 0) -> torch.Tensor:
    """Points where ``lambda_max(grad D)`` is large: samples of ``p_sigma`` plus the midpoints of all pairs
    of means (the posterior covariance between modes peaks on the boundaries between them)."""
    samples = mixture.marginal(sigma).sample(n_samples, seed)[0].double()
    i, j = torch.triu_indices(mixture.n_components, mixture.n_components, 1)
    midpoints = 0.5 * (mixture.means[i] + mixture.means[j])
    return torch.cat([samples, midpoints.cpu()])
