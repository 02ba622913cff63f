"""Isotropic Gaussian mixtures with exact marginals, denoisers and scores at every noise level.

``p(x) = sum_k w_k N(x; m_k, s_k^2 I)``. Diffusing to level sigma gives the mixture with variances
``v_k = s_k^2 + sigma^2``. Its posterior responsibilities ``r_k(x) proportional to w_k N(x; m_k, v_k I)``
give the exact (MMSE) denoiser

    D(x, sigma) = E[x_0 | x_sigma = x] = sum_k r_k(x) (m_k + (s_k^2 / v_k) (x - m_k)),

computed in log space (log-sum-exp over components) in float64, so it is accurate from sigma ~ 1e-4 to
1e4. Components may have ``s_k = 0`` (point masses): the mixture is then a weighted finite point set and
``D`` is that set's optimal denoiser, ``sum_k softmax_k(log w_k - |x - m_k|^2 / (2 sigma^2)) m_k``.
"""
from __future__ import annotations

import math

import torch

from ..denoisers import sigma_batch
from ..errors import InputError, ShapeError, check_finite, check_points, check_sigma, check_weights
from ..noise import SampleNoise
from ..resources import check_memory

# Rows per chunk are chosen so that a chunk's (rows x components) float64 work arrays stay near this size.
_CHUNK_ELEMENTS = 1 << 22


class GaussianMixture:
    """An isotropic Gaussian mixture; ``stds`` may be 0 for point masses.

    Parameters
    ----------
    means: (K, d) component means.
    stds: (K,) or scalar component standard deviations (>= 0).
    weights: (K,) mixture weights summing to 1 (default uniform).
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        check_points(means, "means")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64, device=means.device)
        stds = stds.expand(k).clone() if stds.ndim == 0 else stds
        if stds.shape != (k,):
            raise ShapeError(f"stds must be a scalar or have shape ({k},), got {tuple(stds.shape)}")
        check_finite(stds, "stds")
        if bool((stds < 0).any()):
            raise InputError("stds must be >= 0")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=torch.float64, device=means.device)
        weights = check_weights(torch.as_tensor(weights, dtype=torch.float64, device=means.device), k)
        self.means, self.stds, self.weights = means, stds, weights
        self._log_weights = torch.log(weights)
        self._sq_norms = (means ** 2).sum(1)

    # ----------------------------------------------------------------------------------- structure
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to(self, device) -> "GaussianMixture":
        return GaussianMixture(self.means.to(device), self.stds.to(device), self.weights.to(device))

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """``sum_k w_k (s_k^2 I + m_k m_k^T) - mu mu^T``."""
        mu = self.mean()
        second = (self.means.T * self.weights) @ self.means
        return second + torch.eye(self.dim, dtype=torch.float64, device=self.means.device) * (
            self.weights @ self.stds ** 2) - torch.outer(mu, mu)

    def marginal(self, sigma: float) -> "GaussianMixture":
        """The law of ``x_0 + sigma * eps``: the same mixture with stds ``sqrt(s_k^2 + sigma^2)``."""
        check_sigma(sigma, allow_zero=True)
        return GaussianMixture(self.means, torch.sqrt(self.stds ** 2 + float(sigma) ** 2), self.weights)

    # ------------------------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int, start: int = 0,
               stream: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``start .. start+n-1`` of the sample stream ``seed``: (x float32 (n, d), labels (n,)).

        Row i depends only on (seed, stream, i): one uniform picks the component, d normals its offset.
        """
        check_memory(24 * n * (self.dim + 1), f"{n} samples of a {self.dim}-D mixture")  # float64 noise, x, result
        noise = SampleNoise(seed, n, start, dtype=torch.float64, stream=stream)
        u, z = noise.rand(), noise.randn(self.dim)
        cdf = torch.cumsum(self.weights.cpu(), 0)
        labels = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(max=self.n_components - 1)
        x = self.means.cpu()[labels] + self.stds.cpu()[labels, None] * z
        return x.float(), labels

    # --------------------------------------------------------------------- densities and denoising
    def _chunks(self, x: torch.Tensor):
        rows = max(1, _CHUNK_ELEMENTS // max(self.n_components, self.dim))
        for start in range(0, x.shape[0], rows):
            yield slice(start, start + rows)

    def _log_joint(self, x: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; m_k, var_k I)`` for x (B, d) float64 and var (B, K): shape (B, K)."""
        means = self.means.to(x.device)
        sq = ((x ** 2).sum(1, keepdim=True) - 2 * x @ means.T + self._sq_norms.to(x.device)).clamp_min(0)
        return (self._log_weights.to(x.device) - 0.5 * self.dim * torch.log(2 * math.pi * var)
                - 0.5 * sq / var)

    def _variances(self, sigma: torch.Tensor, device) -> torch.Tensor:
        return self.stds.to(device) ** 2 + sigma[:, None] ** 2

    def _prepare(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        check_finite(x, "x")
        sigma = sigma_batch(sigma, x).double()
        check_sigma(sigma, allow_zero=True)
        return x.double(), sigma

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``log p_sigma(x)``, shape (n,), float64. Needs every ``s_k^2 + sigma^2 > 0``."""
        x64, sigma = self._prepare(x, sigma)
        out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
        for rows in self._chunks(x64):
            var = self._variances(sigma[rows], x.device)
            if bool((var == 0).any()):
                raise InputError("log_prob of a point mass at sigma = 0 is undefined; use sigma > 0")
            out[rows] = torch.logsumexp(self._log_joint(x64[rows], var), 1)
        return out

    def posterior(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Responsibilities ``r_k(x) = P(component k | x_sigma = x)``, shape (n, K), float64.

        At sigma = 0 a point-mass component takes the whole posterior where x sits on it, and the
        nearest point mass elsewhere (the sigma -> 0 limit)."""
        x64, sigma = self._prepare(x, sigma)
        out = torch.empty(x.shape[0], self.n_components, dtype=torch.float64, device=x.device)
        tiny = torch.finfo(torch.float64).tiny
        for rows in self._chunks(x64):
            var = self._variances(sigma[rows], x.device).clamp_min(tiny)
            out[rows] = torch.softmax(self._log_joint(x64[rows], var), 1)
        return out

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The exact denoiser ``E[x_0 | x_sigma = x]`` (see the module docstring); same dtype as x.

        At sigma = 0 it returns x (no noise to remove)."""
        x64, sigma = self._prepare(x, sigma)
        out = torch.empty_like(x64)
        means, stds2 = self.means.to(x.device), self.stds.to(x.device) ** 2
        for rows in self._chunks(x64):
            s = sigma[rows]
            var = self._variances(s, x.device).clamp_min(torch.finfo(torch.float64).tiny)
            resp = torch.softmax(self._log_joint(x64[rows], var), 1)
            gain = stds2 / var  # shrinkage towards m_k; 0 for point masses
            out[rows] = resp @ means - (resp * gain) @ means + (resp * gain).sum(1, keepdim=True) * x64[rows]
            zero = s == 0
            if bool(zero.any()):
                out[rows][zero] = x64[rows][zero]
        return out.to(x.dtype)

    __call__ = denoise

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2`` for sigma > 0, computed from the float64
        denoiser (so it is exact to float64 rounding)."""
        x64, sigma = self._prepare(x, sigma)
        check_sigma(sigma)
        return ((self.denoise(x64, sigma) - x64) / sigma[:, None] ** 2).to(x.dtype)

    def nearest_component(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the closest mean to each row (the mode a sample belongs to), shape (n,)."""
        x64, _ = self._prepare(x, 0.0)
        return torch.cdist(x64, self.means.to(x.device)).argmin(1)
