"""Closed forms that the numerical checks of ``theory/`` are tested against.

* Wasserstein-2 between Gaussians (Bures-Wasserstein; POT) and between 1-D measures (quantiles; POT).
* Gaussian data ``p_0 = N(m, C)``: exact denoiser, the *linear* probability-flow map, its Lipschitz
  constant, the amplification factors of Euler / Heun on the same linear ODE, and the exact effect of a
  shifted denoiser ``D + delta`` (``theory/flow.md`` Prop. F2, ``theory/bound.md`` Example B1).
* Semi-discrete OT in 1-D: the optimal dual vector ``h*`` (closed form via quantiles), the exact cell masses
  of any ``h`` (upper envelope of lines) and the exact transport cost (``theory/ot_stage.md``).

Everything here is float64 numpy/scipy: these are oracles, not hot paths.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import torch
from scipy import stats
from scipy.linalg import eigh

from dpmot_bench.errors import InputError, ShapeError, check_sigma


# ----------------------------------------------------------------------------------------- W2 oracles
def _matrix(cov, dim: int) -> np.ndarray:
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim == 0:
        return float(cov) * np.eye(dim)
    if cov.shape != (dim, dim):
        raise ShapeError(f"covariance must be a scalar or ({dim}, {dim}), got {cov.shape}")
    return cov


def gaussian_w2(mean_a, cov_a, mean_b, cov_b) -> float:
    """``W2(N(mean_a, cov_a), N(mean_b, cov_b))`` (Bures-Wasserstein formula, POT)::

        W2^2 = |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2}).

    A scalar covariance means ``scalar * I``."""
    mean_a, mean_b = np.atleast_1d(np.asarray(mean_a, np.float64)), np.atleast_1d(np.asarray(mean_b, np.float64))
    if mean_a.shape != mean_b.shape or mean_a.ndim != 1:
        raise ShapeError(f"means must be vectors of one length, got {mean_a.shape} and {mean_b.shape}")
    dim = mean_a.shape[0]
    value = ot.gaussian.bures_wasserstein_distance(mean_a, mean_b, _matrix(cov_a, dim), _matrix(cov_b, dim))
    return float(value)


def w2_1d(x, y, x_weights=None, y_weights=None) -> float:
    """``W2`` between two weighted 1-D point sets: ``(int_0^1 |F^-1(t) - G^-1(t)|^2 dt)^(1/2)`` (POT)."""
    value = ot.wasserstein_1d(np.asarray(x, np.float64), np.asarray(y, np.float64),
                              None if x_weights is None else np.asarray(x_weights, np.float64),
                              None if y_weights is None else np.asarray(y_weights, np.float64), p=2)
    return float(np.sqrt(max(float(value), 0.0)))


# ------------------------------------------------------------------------------------ Gaussian data
class GaussianData:
    """Data ``p_0 = N(mean, cov)`` in the VE coordinate: everything about its probability flow is linear.

    * ``p_sigma = N(m, C + sigma^2 I)``; exact denoiser ``D(x, sigma) = m + C (C + sigma^2 I)^{-1} (x - m)``.
    * The flow of ``dx/dsigma = (x - D(x, sigma)) / sigma`` from level ``a`` to level ``b`` is
      ``x -> m + (C + b^2 I)^{1/2} (C + a^2 I)^{-1/2} (x - m)`` (all matrices are functions of C and commute).
    """

    def __init__(self, mean, cov):
        mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        if mean.ndim != 1:
            raise ShapeError(f"mean must be a vector, got shape {mean.shape}")
        self.mean = mean
        self.cov = _matrix(cov, mean.shape[0])
        self.eigvals, self.eigvecs = eigh(self.cov)
        if self.eigvals.min() < -1e-12 * max(1.0, self.eigvals.max()):
            raise InputError("cov must be positive semi-definite")
        self.eigvals = self.eigvals.clip(min=0.0)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def _spectral(self, fn) -> np.ndarray:
        return (self.eigvecs * fn(self.eigvals)) @ self.eigvecs.T

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The exact denoiser (a torch callable with the package's ``D(x, sigma)`` protocol)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
        lam = torch.as_tensor(self.eigvals, device=x.device)
        vecs = torch.as_tensor(self.eigvecs, device=x.device)
        mean = torch.as_tensor(self.mean, device=x.device)
        coords = (x.double() - mean) @ vecs
        gain = lam / (lam + sigma[:, None] ** 2)  # (B or 1, d): C (C + sigma^2)^-1 in the eigenbasis
        return (mean + (coords * gain) @ vecs.T).to(x.dtype)

    __call__ = denoise

    def flow(self, x, sigma_from: float, sigma_to: float) -> np.ndarray:
        """The exact probability-flow map from level ``sigma_from`` to ``sigma_to`` (either direction)."""
        check_sigma(sigma_from, "sigma_from", allow_zero=True)
        check_sigma(sigma_to, "sigma_to", allow_zero=True)
        if np.any(self.eigvals + sigma_from ** 2 == 0):
            raise InputError("the flow from a degenerate level is not defined; use sigma_from > 0")
        factor = self._spectral(lambda lam: np.sqrt((lam + sigma_to ** 2) / (lam + sigma_from ** 2)))
        return self.mean + (np.asarray(x, np.float64) - self.mean) @ factor

    def marginal_cov(self, sigma: float) -> np.ndarray:
        return self.cov + sigma ** 2 * np.eye(self.dim)

    def flow_lipschitz(self, sigma_end: float, sigma_star: float) -> float:
        """Exact Lipschitz constant of the flow from ``sigma_star`` down to ``sigma_end``:
        ``sqrt((lam_max + sigma_end^2) / (lam_max + sigma_star^2))`` (<= 1: the flow contracts)."""
        lam = self.eigvals.max()
        return math.sqrt((lam + sigma_end ** 2) / (lam + sigma_star ** 2))

    def sample(self, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
        return rng.multivariate_normal(self.mean, self.marginal_cov(sigma), size=n, method="eigh")


def linear_flow_factors(variances, sigmas, method: str = "euler") -> np.ndarray:
    """Amplification factor of a one-step sampler on the Gaussian-data flow, per eigen-variance ``lam``.

    In an eigendirection the flow is the scalar linear ODE ``dc/dsigma = a(sigma) c`` with
    ``a(sigma) = sigma / (lam + sigma^2)``, whose exact factor from ``sigmas[0]`` to ``sigmas[-1]`` is
    ``sqrt((lam + sigmas[-1]^2) / (lam + sigmas[0]^2))``. One Euler step multiplies by
    ``1 + dt a_k`` (``dt = sigma_{k+1} - sigma_k``); one Heun step by
    ``1 + dt/2 (a_k + a_{k+1} (1 + dt a_k))``, falling back to Euler on a step to sigma = 0 (as
    k-diffusion / EDM do). Returns the product over the grid, shape ``(len(variances),)``.
    """
    lam = np.atleast_1d(np.asarray(variances, np.float64))
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or np.any(np.diff(sigmas) >= 0) or sigmas[-1] < 0:
        raise InputError("sigmas must be a strictly decreasing grid of >= 2 non-negative levels")
    if method not in ("euler", "heun"):
        raise InputError(f"unknown method {method!r}; choose euler or heun")

    def rate(s):
        return s / (lam + s ** 2)

    factor = np.ones_like(lam)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        dt, a = s_next - s, rate(s)
        if method == "euler" or s_next == 0:
            factor = factor * (1 + dt * a)
        else:
            factor = factor * (1 + dt / 2 * (a + rate(s_next) * (1 + dt * a)))
    return factor


def shifted_denoiser_flow_error(std: float, sigma_end: float, sigma_star: float) -> float:
    """For isotropic Gaussian data (std ``s``) and the broken denoiser ``D + delta`` (a constant vector),
    the flow from ``sigma_star`` to ``sigma_end`` is displaced by exactly ``c * delta``, with

        c = sqrt(s^2 + sigma_end^2) / s * (asinh(s / sigma_end) - asinh(s / sigma_star)).

    (Solve ``de/dsigma = sigma / (s^2 + sigma^2) e - delta / sigma`` with ``e(sigma_star) = 0``.) Hence
    ``W2(Phi_theta # rho, Phi # rho) = c |delta|`` for every initial law rho; it equals the bound of
    ``theory/bound.md`` Lemma B1 (the bound is attained). Diverges like ``log(1 / sigma_end)``.
    """
    check_sigma(std, "std")
    check_sigma(sigma_end, "sigma_end")
    if not sigma_end < sigma_star:
        raise InputError("need sigma_end < sigma_star")
    return math.sqrt(std ** 2 + sigma_end ** 2) / std * (math.asinh(std / sigma_end) - math.asinh(std / sigma_star))


# --------------------------------------------------------------------------- semi-discrete OT in 1-D
def _partial_moments(source, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """``int_lo^hi x^k dF(x)`` for k = 0, 1, 2, for a scipy ``norm`` or ``uniform`` frozen distribution."""
    name = source.dist.name
    if name == "norm":
        loc, scale = source.mean(), source.std()
        a, b = (lo - loc) / scale, (hi - loc) / scale
        phi_a, phi_b = stats.norm.pdf(a), stats.norm.pdf(b)
        with np.errstate(invalid="ignore"):
            a_phi = np.where(np.isfinite(a), a * phi_a, 0.0)
            b_phi = np.where(np.isfinite(b), b * phi_b, 0.0)
        z0 = stats.norm.cdf(b) - stats.norm.cdf(a)
        z1 = phi_a - phi_b
        z2 = z0 + a_phi - b_phi
        return z0, loc * z0 + scale * z1, loc ** 2 * z0 + 2 * loc * scale * z1 + scale ** 2 * z2
    if name == "uniform":
        low, high = source.support()
        lo, hi = np.clip(lo, low, high), np.clip(hi, low, high)
        width = high - low
        return (hi - lo) / width, (hi ** 2 - lo ** 2) / (2 * width), (hi ** 3 - lo ** 3) / (3 * width)
    raise InputError(f"1-D sources must be scipy.stats.norm or uniform, got {name}")


def _check_1d(y, weights=None):
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or len(y) < 1:
        raise ShapeError(f"targets must be a non-empty 1-D array, got shape {y.shape}")
    if len(np.unique(y)) != len(y):
        raise InputError("targets must be distinct")
    if weights is None:
        return y, np.full(len(y), 1.0 / len(y))
    weights = np.asarray(weights, np.float64)
    if weights.shape != y.shape or np.any(weights <= 0) or abs(weights.sum() - 1) > 1e-9:
        raise InputError("weights must be positive, one per target, and sum to 1")
    return y, weights


def semidiscrete_1d(source, y, weights=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact semi-discrete OT in 1-D from ``source`` (scipy norm / uniform) to ``sum_i w_i delta_{y_i}``.

    The optimal map is monotone, so target i (in increasing order) receives the source quantile interval
    ``[b_{i-1}, b_i]``, ``b_i = F^{-1}(w_1 + ... + w_i)``. The cells of ``argmax_i x y_i + h_i`` meet
    where ``b_i y_i + h_i = b_i y_{i+1} + h_{i+1}``, which fixes ``h*`` up to a constant (centred here).

    Returns ``(h_star, boundaries, w2_squared)``: h* in the input order, the N+1 interval ends (sorted
    targets), and ``W2^2 = sum_i int_{b_{i-1}}^{b_i} (x - y_i)^2 dF``.
    """
    y, weights = _check_1d(y, weights)
    order = np.argsort(y)
    ys, ws = y[order], weights[order]
    inner = source.ppf(np.cumsum(ws)[:-1].clip(0, 1))
    bounds = np.concatenate([[source.support()[0]], inner, [source.support()[1]]])
    h_sorted = np.concatenate([[0.0], -np.cumsum(inner * np.diff(ys))])
    h = np.empty_like(h_sorted)
    h[order] = h_sorted - h_sorted.mean()
    m0, m1, m2 = _partial_moments(source, bounds[:-1], bounds[1:])
    return h, bounds, float(np.sum(m2 - 2 * ys * m1 + ys ** 2 * m0))


def cell_masses_1d(source, y, h) -> np.ndarray:
    """Exact masses ``mu({x : argmax_i x y_i + h_i = j})`` in 1-D (upper envelope of the lines
    ``x y_i + h_i``: the convex-hull trick), in the input order. Cells that are never the max get 0."""
    y, _ = _check_1d(y)
    h = np.asarray(h, np.float64)
    if h.shape != y.shape:
        raise ShapeError(f"h must have shape {y.shape}, got {h.shape}")
    order = np.argsort(y)
    hull: list[int] = []  # indices into the sorted lines, slopes increasing

    def cross(i, j):  # x where line i (smaller slope) and line j meet
        return (h[order[i]] - h[order[j]]) / (y[order[j]] - y[order[i]])

    for k in range(len(y)):
        while len(hull) >= 2 and cross(hull[-2], k) <= cross(hull[-2], hull[-1]):
            hull.pop()
        hull.append(k)
    ends = [cross(a, b) for a, b in zip(hull[:-1], hull[1:])]
    lo = np.array([-np.inf] + ends)
    hi = np.array(ends + [np.inf])
    masses = np.zeros(len(y))
    masses[order[hull]] = np.clip(source.cdf(hi) - source.cdf(lo), 0, None)
    return masses
