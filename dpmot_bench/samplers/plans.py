"""Sigma grids, and the NFE budget -> (grid, options) plan of each baseline sampler.

A plan spends exactly the NFE asked (the tests count the calls):

=========================== ======================================================================
sampler                     budget K
=========================== ======================================================================
euler, dpmpp-2m, dpmpp-3m,  K steps: K levels then 0, one call per step
ancestral
heun                        K // 2 + 1 steps, 2 calls per step except the Euler step into 0; for an
                            even K the first step is an Euler step too (2 n - 1 - (1 - K mod 2) = K)
langevin                    K - 1 Langevin steps (``steps_per_level`` per level, the rest on the last
                            level) + 1 Tweedie denoise; K = 1 is the denoise alone at sigma_max
=========================== ======================================================================
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import schedules
from ..errors import InputError, check_sigma, unknown_name
from .sampling import (langevin_schedule, sample_ancestral, sample_dpmpp_2m, sample_dpmpp_3m, sample_euler,
                       sample_heun, sample_langevin)

GRID_KINDS = ("karras", "geometric", "vp")

# EDM's defaults (Karras et al. 2022, Table 1).
SIGMA_MAX, SIGMA_MIN, RHO = 80.0, 0.002, 7.0
# Langevin defaults. NCSNv2's CIFAR-10 step (6.2e-6 at sigma_L = 0.01, i.e. a_L / sigma_L^2 = 0.062, the
# fraction of the noise variance one step moves) is tuned for 5 steps on each of 232 levels (~1160 NFE); at
# 5..50 NFE one step per level with a_i = sigma_i^2 (step_ratio 1) and NCSNv2's sigma_L = 0.01 did best in a
# sweep on gmm-grid25 / gmm-ring8 (NFE 10: W2 0.99 / 0.16; 79 / 72 with 0.062 and sigma_L 0.002; floor
# 0.68 / 0.19 at 1000 samples), so those are the defaults.
LANGEVIN_STEP_RATIO, LANGEVIN_SIGMA_MIN = 1.0, 0.01


def sigma_grid(kind: str, n: int, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN,
               rho: float = RHO):
    """``n`` decreasing levels from sigma_max to sigma_min, then 0 (float64, length n + 1).

    ``karras``: EDM's rho-spacing; ``geometric``: NCSN's log-uniform levels; ``vp``: uniform in the time t
    of the VP-linear SDE (beta 0.1 .. 20) between t(sigma_max) and t(sigma_min) (DDPM / score-SDE style).
    """
    if n < 1:
        raise InputError(f"a sigma grid needs at least 1 level before 0, got {n}")
    check_sigma(sigma_max, "sigma_max")
    check_sigma(sigma_min, "sigma_min")
    if n > 1 and not sigma_min < sigma_max:
        raise InputError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
    if kind == "karras":
        levels = schedules.karras(sigma_max, sigma_min, n, rho)
    elif kind == "geometric":
        levels = schedules.geometric(sigma_max, sigma_min, n)
    elif kind == "vp":
        vp = schedules.VPLinear()
        if sigma_max > float(vp.sigma(1.0)):
            raise InputError(f"the vp grid reaches sigma = {float(vp.sigma(1.0)):.4g} at t = 1; "
                             f"sigma_max={sigma_max} is beyond it")
        levels = vp.sigmas(n, float(vp.t(sigma_min)), float(vp.t(sigma_max)))
    else:
        raise unknown_name("sigma grid", kind, GRID_KINDS)
    return schedules.append_zero(levels)


def check_nfe(nfe) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise InputError(f"nfe must be an integer >= 1, got {nfe!r}")
    return int(nfe)


# method -> (sampler function, the method options a user may set besides the grid's)
METHODS = {
    "euler": (sample_euler, ()),
    "heun": (sample_heun, ()),
    "dpmpp-2m": (sample_dpmpp_2m, ()),
    "dpmpp-3m": (sample_dpmpp_3m, ("lower_order_final",)),
    "ancestral": (sample_ancestral, ("eta",)),
    "langevin": (sample_langevin, ("step_lr", "steps_per_level", "step_ratio")),
}


def plan(method: str, nfe: int, *, grid: str | None = None, sigma_max: float = SIGMA_MAX,
         sigma_min: float | None = None, rho: float = RHO, **options) -> tuple[Callable, torch.Tensor, dict]:
    """The sampler function, sigma grid and options that spend exactly ``nfe`` denoiser calls.

    ``grid`` defaults to karras (geometric for langevin), ``sigma_min`` to 0.002 (0.01 for langevin). Method
    options: dpmpp-3m ``lower_order_final``; ancestral ``eta``; langevin ``steps_per_level`` (default 1) and
    ``step_lr`` (default ``step_ratio * sigma_min^2``, ``step_ratio`` default 1; NCSNv2's is 0.062).
    Returns ``(fn, sigmas, options)``.
    """
    nfe = check_nfe(nfe)
    if method not in METHODS:
        raise unknown_name("sampling method", method, METHODS)
    fn, allowed = METHODS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"{method} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(('grid', 'sigma_max', 'sigma_min', 'rho') + allowed)}")
    steps, langevin = nfe, method == "langevin"
    sigma_min = sigma_min if sigma_min is not None else LANGEVIN_SIGMA_MIN if langevin else SIGMA_MIN
    if method == "heun":
        steps, options = nfe // 2 + 1, {"euler_steps": 1 - nfe % 2}
    elif langevin:
        counts = langevin_schedule(nfe - 1, options.pop("steps_per_level", 1))
        ratio = options.pop("step_ratio", LANGEVIN_STEP_RATIO)
        options = {"step_lr": ratio * sigma_min ** 2, **options, "steps_per_level": counts}
        steps = len(counts)
    kind = grid or ("geometric" if langevin else "karras")
    return fn, sigma_grid(kind, steps, sigma_max, sigma_min, rho), options
