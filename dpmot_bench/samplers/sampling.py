"""Samplers: one small pure function per method, over a decreasing sigma grid that ends at 0.

Signature: ``sample_xxx(denoiser, x, sigmas, *, noise=None, callback=None, **method_options) -> x``, where
``x`` (B, ...) is the batch at ``sigmas[0]`` and the result is the batch at ``sigmas[-1] = 0`` (clean).
Deterministic samplers integrate the probability-flow ODE of ``x_sigma = x_0 + sigma eps``
(Karras et al. 2022, eq. 4 with s(t) = 1, sigma(t) = t)::

    dx / dsigma = (x - D(x, sigma)) / sigma

Stochastic samplers take all their randomness from ``noise`` (a :class:`~dpmot_bench.noise.SampleNoise`
for the batch's rows), so a sample does not depend on the batch it was drawn in. Each denoiser call is one
function evaluation (NFE); the NFE of each method on an n-step grid is stated in its docstring and checked
by the tests with :class:`~dpmot_bench.denoisers.CountingDenoiser`. ``callback``, when given, receives a
dict ``{"i", "x", "sigma", "sigma_next", "denoised"}`` once per step.

Step coefficients are Python floats computed in double precision from the (CPU, float64) grid, so the hot
loop stays on the device of ``x`` without host-device synchronisation.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..denoisers import Denoiser
from ..errors import InputError, ShapeError, check_finite
from ..noise import SampleNoise

Callback = Callable[[dict], None] | None
LOWER_ORDER_FINAL_BELOW = 15  # diffusers' DPMSolverMultistepScheduler: lower the final orders below 15 steps


def check_grid(sigmas) -> list[float]:
    """A sampler grid as floats: finite, strictly decreasing, positive, ending with a single 0."""
    values = torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()
    if len(values) < 2 or values[-1] != 0:
        raise InputError(f"a sigma grid needs at least two levels and must end at 0, got {values}")
    if not all(math.isfinite(s) and s > 0 for s in values[:-1]):
        raise InputError(f"sigma grid levels before the final 0 must be finite and > 0, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise InputError(f"a sigma grid must be strictly decreasing, got {values}")
    return values


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ShapeError("x must be a floating-point tensor of shape (batch, ...), "
                         f"got {getattr(x, 'shape', type(x).__name__)}")
    check_finite(x, "x")


def _need_noise(noise: SampleNoise | None, method: str) -> SampleNoise:
    if noise is None:
        raise InputError(f"{method} is stochastic: pass noise=SampleNoise(seed, n=batch rows, start=first row)")
    return noise


def _report(callback: Callback, i: int, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                 callback: Callback = None) -> torch.Tensor:
    """Euler steps of the probability-flow ODE; identical to DDIM with eta = 0.

    ``x_next = x + (sigma_next - sigma) (x - D) / sigma = D + (sigma_next / sigma) (x - D)``.
    NFE = number of steps (``len(sigmas) - 1``); the last step returns ``D(x, sigmas[-2])``.
    """
    grid = check_grid(sigmas)
    _check_batch(x)
    for i, (sigma, sigma_next) in enumerate(zip(grid, grid[1:])):
        denoised = denoiser(x, sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
        x = denoised + sigma_next / sigma * (x - denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                callback: Callback = None, euler_steps: int = 0) -> torch.Tensor:
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1 without churn): Heun's 2nd-order
    method, with an Euler step into sigma = 0 (the lower-order final step: D(x, 0) is not evaluated).

    The first ``euler_steps`` steps are plain Euler steps (to spend an even NFE budget).
    NFE = 2 * steps - 1 - euler_steps.
    """
    grid = check_grid(sigmas)
    _check_batch(x)
    if not 0 <= euler_steps < len(grid):
        raise InputError(f"euler_steps must be in [0, {len(grid) - 1}], got {euler_steps}")
    for i, (sigma, sigma_next) in enumerate(zip(grid, grid[1:])):
        denoised = denoiser(x, sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
        slope = (x - denoised) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if sigma_next > 0 and i >= euler_steps:
            slope_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
        x = x_next
    return x


@torch.no_grad()
def _sample_dpmpp_multistep(denoiser: Denoiser, x: torch.Tensor, sigmas, order: int,
                            callback: Callback, lower_order_final: bool) -> torch.Tensor:
    """DPM-Solver++ multistep (Lu et al. 2022, data prediction) in the VE form: with
    ``lambda = -log sigma``, ``h = lambda_next - lambda`` and ``D_0, D_-1, D_-2`` the current and previous
    denoised outputs,

        x_next = (sigma_next / sigma) x - expm1(-h) D0                       (order 1 = Euler / DDIM)
                 - 1/2 expm1(-h) D1,         D1 = (D0 - D_-1) / r0            (order 2, midpoint form)
        order 3: + (expm1(-h)/h + 1) D1' - ((expm1(-h) + h)/h^2 - 1/2) D2 with the 3-point differences

    (r0 = h_-1 / h). Step j of n uses order ``min(order, j + 1)``, lowered to ``n - j`` when
    ``lower_order_final`` and the grid has fewer than ``LOWER_ORDER_FINAL_BELOW`` = 15 steps (diffusers'
    rule: ``lower_order_final and len(timesteps) < 15``); the step into sigma = 0 is always first order
    (x_next = D0, diffusers' ``final_sigmas_type="zero"``). NFE = number of steps.
    """
    grid = check_grid(sigmas)
    _check_batch(x)
    lambdas = [-math.log(s) if s > 0 else math.inf for s in grid]
    n = len(grid) - 1
    lower_final = lower_order_final and n < LOWER_ORDER_FINAL_BELOW
    history: list[torch.Tensor] = []  # denoised outputs, most recent last
    for j, (sigma, sigma_next) in enumerate(zip(grid, grid[1:])):
        denoised = denoiser(x, sigma)
        _report(callback, j, x, sigma, sigma_next, denoised)
        history = (history + [denoised])[-order:]
        if sigma_next == 0:
            x = denoised
            continue
        step_order = min(order, len(history), n - j if lower_final else order)
        h = lambdas[j + 1] - lambdas[j]
        em = math.expm1(-h)
        x = sigma_next / sigma * x - em * denoised
        if step_order >= 2:
            r0 = (lambdas[j] - lambdas[j - 1]) / h
            d1_0 = (denoised - history[-2]) / r0
            if step_order == 2:
                x = x - 0.5 * em * d1_0
            else:
                r1 = (lambdas[j - 1] - lambdas[j - 2]) / h
                d1_1 = (history[-2] - history[-3]) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + (em / h + 1) * d1 - ((em + h) / h ** 2 - 0.5) * d2
    return x


def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep, first step and step into 0 first order.
    NFE = number of steps. (Same as diffusers ``DPMSolverMultistepScheduler(solver_order=2)``.)"""
    return _sample_dpmpp_multistep(denoiser, x, sigmas, 2, callback, lower_order_final=True)


def sample_dpmpp_3m(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                    callback: Callback = None, lower_order_final: bool = True) -> torch.Tensor:
    """DPM-Solver++(3M): third-order multistep with 1st/2nd-order warm-up; with ``lower_order_final``
    (the default, as diffusers) the second-to-last step is at most second order on grids of fewer than
    15 steps, third order on longer ones. NFE = number of steps."""
    return _sample_dpmpp_multistep(denoiser, x, sigmas, 3, callback, lower_order_final)


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral step: deterministic to sigma_down, then fresh noise of std
    sigma_up, with ``sigma_down^2 + sigma_up^2 = sigma_next^2`` and
    ``sigma_up = eta sigma_next sqrt(1 - sigma_next^2 / sigma^2)``: DDIM's sigma_t(eta) in VE form
    (eta = 1 is DDPM's posterior variance, eta = 0 is DDIM / Euler)."""
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                     callback: Callback = None, eta: float = 1.0) -> torch.Tensor:
    """Ancestral sampling (DDPM-like for eta = 1; DDIM(eta) on any grid):
    ``x_next = D + (sigma_down / sigma) (x - D) + sigma_up z``. NFE = number of steps."""
    grid = check_grid(sigmas)
    _check_batch(x)
    if not 0 <= eta <= 1:
        raise InputError(f"eta must be in [0, 1], got {eta}")
    noise = _need_noise(noise, "ancestral sampling")
    for i, (sigma, sigma_next) in enumerate(zip(grid, grid[1:])):
        denoised = denoiser(x, sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + sigma_down / sigma * (x - denoised)
        if sigma_next > 0:
            x = x + sigma_up * noise.randn_like(x)
    return x


def langevin_schedule(total_steps: int, steps_per_level: int) -> list[int]:
    """Spread ``total_steps`` Langevin steps over levels, ``steps_per_level`` per level and the rest on the
    last one: ``(11, 5) -> [5, 5, 1]``; ``0 -> [0]`` (a single level, only the final denoise)."""
    if not all(isinstance(v, int) for v in (total_steps, steps_per_level)) or total_steps < 0 or steps_per_level < 1:
        raise InputError(f"need total_steps >= 0 and steps_per_level >= 1, got {total_steps}, {steps_per_level}")
    full, rest = divmod(total_steps, steps_per_level)
    return [steps_per_level] * full + [rest] * (rest > 0) or [0]


@torch.no_grad()
def sample_langevin(denoiser: Denoiser, x: torch.Tensor, sigmas, *, noise: SampleNoise | None = None,
                    callback: Callback = None, step_lr: float,
                    steps_per_level: int | Sequence[int] = 5) -> torch.Tensor:
    """NCSNv2 annealed Langevin dynamics (Song & Ermon 2020, Algorithm 1), then Tweedie's denoise.

    The levels are ``sigmas[:-1]`` (sigma_1 > ... > sigma_L); at level i, with
    ``a_i = step_lr (sigma_i / sigma_L)^2`` and the score ``s = (D - x) / sigma_i^2``,

        x <- x + a_i s(x, sigma_i) + sqrt(2 a_i) z        (steps_per_level times)

    and finally ``x <- x + sigma_L^2 s(x, sigma_L) = D(x, sigma_L)``. ``steps_per_level`` is an int or one
    count per level (see :func:`langevin_schedule`). NFE = total Langevin steps + 1.
    """
    grid = check_grid(sigmas)
    _check_batch(x)
    levels = grid[:-1]
    counts = [steps_per_level] * len(levels) if isinstance(steps_per_level, int) else list(steps_per_level)
    if len(counts) != len(levels) or any(not isinstance(c, int) or c < 0 for c in counts):
        raise InputError(f"steps_per_level must be an int or {len(levels)} non-negative ints, got {steps_per_level}")
    if not (math.isfinite(step_lr) and step_lr > 0):
        raise InputError(f"step_lr must be finite and > 0, got {step_lr}")
    if sum(counts):
        noise = _need_noise(noise, "Langevin dynamics")
    i = 0
    for sigma, count in zip(levels, counts):
        step = step_lr * (sigma / levels[-1]) ** 2
        for _ in range(count):
            denoised = denoiser(x, sigma)
            _report(callback, i, x, sigma, sigma, denoised)
            x = x + step * (denoised - x) / sigma ** 2 + math.sqrt(2 * step) * noise.randn_like(x)
            i += 1
    denoised = denoiser(x, levels[-1])
    _report(callback, i, x, levels[-1], 0.0, denoised)
    return denoised
