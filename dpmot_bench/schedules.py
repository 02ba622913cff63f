"""Noise schedules, all expressed as decreasing noise levels sigma in the VE / EDM coordinate
``x_sigma = x_0 + sigma * eps``.

A variance-preserving (VP) process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` is the same process
after the change of scale ``x_vp = x / sqrt(1 + sigma^2)`` with ``sigma_t^2 = (1 - abar_t) / abar_t``.
The VP schedules below are objects with both directions, ``sigma(t)`` and ``t(sigma)``, because model
adapters need the model's own time for a given sigma.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError, check_sigma


def _check_levels(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise InputError(f"a schedule needs at least 1 level, got {n}")
    check_sigma(sigma_min, "sigma_min")
    check_sigma(sigma_max, "sigma_max")
    if sigma_min > sigma_max:
        raise InputError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})")


def _as_tensor(values, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(values, dtype=dtype)


def geometric(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """NCSN levels: ``sigma_i = sigma_max (sigma_min / sigma_max)^(i / (n - 1))``, i = 0..n-1 (decreasing)."""
    _check_levels(n, sigma_min, sigma_max)
    if n == 1:
        return _as_tensor([sigma_max])
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


def karras(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """EDM levels: ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``."""
    _check_levels(n, sigma_min, sigma_max)
    if rho <= 0:
        raise InputError(f"rho must be > 0, got {rho}")
    if n == 1:
        return _as_tensor([sigma_max])
    # In logs, divided through by sigma_max^(1/rho): sigma_i = sigma_max ((1 - t_i) + t_i r)^rho with
    # r = (sigma_min / sigma_max)^(1/rho) in (0, 1]. Nothing overflows for small rho, and expm1/log1p keep
    # the levels accurate for large rho (the geometric limit). The base is >= r, so the exact levels are
    # >= sigma_min; the clamp only undoes round-off, and the last level is pinned to sigma_min (log1p
    # cancels near t = 1 when r is small).
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    log_ratio = math.log(sigma_min) - math.log(sigma_max)
    levels = sigma_max * torch.exp(rho * torch.log1p(ramp * math.expm1(log_ratio / rho)))
    levels[-1] = sigma_min
    return levels.clamp(min=sigma_min)


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Append the final level sigma = 0 (the clean-data end of a sampler's grid)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


@dataclass(frozen=True)
class VPSchedule:
    """Base for VP schedules on t in [0, 1]: ``sigma(t) = sqrt(1 / abar(t) - 1)``; t(sigma) inverts it."""

    def log_abar(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        return torch.sqrt(torch.expm1(-self.log_abar(t)))

    def t(self, sigma) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigmas(self, n: int, t_min: float = 1e-3, t_max: float = 1.0) -> torch.Tensor:
        """n levels at uniformly spaced t from t_max down to t_min (the "VP-uniform-in-t" grid)."""
        if n < 1 or not 0 < t_min <= t_max <= 1:
            raise InputError(f"need n >= 1 and 0 < t_min <= t_max <= 1, got n={n}, t=[{t_min}, {t_max}]")
        return self.sigma(torch.linspace(t_max, t_min, n, dtype=torch.float64))


@dataclass(frozen=True)
class VPLinear(VPSchedule):
    """Linear beta(t) = beta_min + t (beta_max - beta_min): ``log abar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)``."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_abar(self, t):
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2)

    def t(self, sigma):
        # Solve a t^2/2 + b t = log(1 + sigma^2) for t >= 0 (stable root form).
        c = torch.log1p(_as_tensor(sigma) ** 2)
        a, b = self.beta_max - self.beta_min, self.beta_min
        return 2 * c / (b + torch.sqrt(b * b + 2 * a * c))


@dataclass(frozen=True)
class VPCosine(VPSchedule):
    """Cosine schedule (Nichol & Dhariwal): ``abar(t) = cos^2((t + s) / (1 + s) pi / 2) / cos^2(s / (1 + s) pi / 2)``.

    abar(1) = 0 (sigma infinite), so grids should stop at t_max < 1.
    """

    s: float = 0.008

    def _phase(self, t):
        return (t + self.s) / (1 + self.s) * math.pi / 2

    def log_abar(self, t):
        zero = torch.as_tensor(self._phase(0.0), dtype=torch.float64)
        return 2 * (torch.log(torch.cos(self._phase(t))) - torch.log(torch.cos(zero)))

    def t(self, sigma):
        abar = 1 / (1 + _as_tensor(sigma) ** 2)
        phase = torch.arccos(torch.sqrt(abar) * math.cos(self._phase(0.0)))
        return phase * 2 / math.pi * (1 + self.s) - self.s

    def sigmas(self, n: int, t_min: float = 1e-3, t_max: float = 0.9946) -> torch.Tensor:
        return super().sigmas(n, t_min, t_max)


class VPDiscrete:
    """A discrete-time VP model (DDPM / diffusers): ``alphas_cumprod[k]`` for k = 0..K-1.

    ``sigma(k)`` interpolates log sigma linearly between integer timesteps, and ``t(sigma)`` inverts that
    interpolation (clamped to [0, K-1]): the convention of k-diffusion's discrete wrappers, which lets a
    sampler query a discrete model at any sigma inside its range.
    """

    def __init__(self, alphas_cumprod):
        abar = _as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))
        if abar.ndim != 1 or abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()):
            raise InputError("alphas_cumprod must be a 1-D array of values in (0, 1)")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise InputError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = abar
        self.log_sigmas = 0.5 * torch.log((1 - abar) / abar)

    @classmethod
    def linear(cls, n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "VPDiscrete":
        """DDPM's linear betas (diffusers ``beta_schedule="linear"``)."""
        betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
        return cls(np.cumprod(1 - betas))

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def sigma(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        table = self.log_sigmas.to(t.device)  # the query's device (CUDA when the model runs there)
        t = t.clamp(0, len(table) - 1)
        low = t.floor().long().clamp(max=len(table) - 2)
        frac = t - low
        log_sigma = (1 - frac) * table[low] + frac * table[low + 1]
        return log_sigma.exp()

    def t(self, sigma) -> torch.Tensor:
        log_sigma = torch.log(_as_tensor(sigma))
        table = self.log_sigmas.to(log_sigma.device)
        idx = torch.searchsorted(table, log_sigma.clamp(table[0], table[-1]).contiguous())
        idx = idx.clamp(1, len(table) - 1)
        lo, hi = table[idx - 1], table[idx]
        frac = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return idx - 1 + frac

    def sigmas(self, n: int) -> torch.Tensor:
        """n levels at uniformly spaced timesteps from K-1 down to 0 (DDIM's "uniform" spacing)."""
        if n < 1:
            raise InputError(f"a schedule needs at least 1 level, got {n}")
        return self.sigma(torch.linspace(len(self.log_sigmas) - 1, 0, n, dtype=torch.float64))
