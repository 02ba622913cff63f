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

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from .. import schedules
from ..errors import InputError, check_sigma, unknown_name
from ..options import check_fields, option, parse
from .sampling import (langevin_schedule, sample_ancestral, sample_dpmpp_2m, sample_dpmpp_3m, sample_euler,
                       sample_heun, sample_langevin)

GRID_KINDS = ("karras", "geometric", "vp")

# EDM's defaults (Karras et al. 2022, Table 1).
SIGMA_MAX, SIGMA_MIN, RHO = 80.0, 0.002, 7.0
# Langevin defaults: one step per level with a_i = sigma_i^2 (step_ratio 1) down to NCSNv2's sigma_L = 0.01
# (the sweep behind them: benchmarks/README.md, "Langevin defaults").
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
    if nfe > MAX_NFE:
        raise InputError(f"nfe must be at most {MAX_NFE} (a sigma grid per call), got {nfe}")
    return int(nfe)


MAX_NFE = 100_000


@dataclass(frozen=True)
class PlanOptions:
    """The options of a baseline sampler (``--option KEY=VALUE``); each method takes the grid's four and its
    own (:data:`METHODS`). None means the method's default."""
    grid: str | None = option(None, str, choices=GRID_KINDS, optional=True,
                              help="karras (default; geometric for langevin) | geometric | vp")
    sigma_max: float = option(SIGMA_MAX, float, above=0, help=f"first level (default {SIGMA_MAX:g})")
    sigma_min: float | None = option(None, float, above=0, optional=True,
                                     help=f"last level before 0 (default {SIGMA_MIN:g}; langevin {LANGEVIN_SIGMA_MIN:g})")
    rho: float = option(RHO, float, above=0, help=f"karras grid exponent (default {RHO:g})")
    eta: float = option(1.0, float, low=0, high=1, help="ancestral: share of DDPM's step noise (default 1)")
    lower_order_final: bool = option(True, bool, help="dpmpp-3m: diffusers' lower final order below 15 steps")
    steps_per_level: int = option(1, int, low=1, help="langevin: steps per level (default 1)")
    step_ratio: float = option(LANGEVIN_STEP_RATIO, float, above=0,
                               help="langevin: step_lr / sigma_min^2 (default 1; NCSNv2's 0.062)")
    step_lr: float | None = option(None, float, above=0, optional=True,
                                   help="langevin: the step size at the last level (default step_ratio sigma_min^2)")

    def __post_init__(self):
        check_fields(self)


GRID_OPTIONS = ("grid", "sigma_max", "sigma_min", "rho")
# method -> (sampler function, the method options a user may set besides the grid's)
METHODS = {
    "euler": (sample_euler, ()),
    "heun": (sample_heun, ()),
    "dpmpp-2m": (sample_dpmpp_2m, ()),
    "dpmpp-3m": (sample_dpmpp_3m, ("lower_order_final",)),
    "ancestral": (sample_ancestral, ("eta",)),
    "langevin": (sample_langevin, ("step_lr", "steps_per_level", "step_ratio")),
}


def plan_options(method: str, values: Mapping, base: PlanOptions | None = None) -> PlanOptions:
    """``values`` (user options) checked and typed for ``method``: the one place they are checked."""
    if method not in METHODS:
        raise unknown_name("sampling method", method, METHODS)
    return parse(PlanOptions, values, what=method, base=base, allowed=GRID_OPTIONS + METHODS[method][1])


def plan(method: str, nfe: int, options: PlanOptions | None = None, **values) -> tuple[Callable, torch.Tensor, dict]:
    """The sampler function, sigma grid and keyword arguments that spend exactly ``nfe`` denoiser calls.

    ``options`` (typed, see :class:`PlanOptions`) or ``values`` (checked here into one) set the grid and
    the method's options. Langevin's ``step_lr`` defaults to ``step_ratio * sigma_min^2``.
    Returns ``(fn, sigmas, kwargs)``.
    """
    nfe = check_nfe(nfe)
    options = plan_options(method, values, options) if values or options is None else options
    fn, _ = METHODS[method]
    steps, langevin = nfe, method == "langevin"
    sigma_min = options.sigma_min if options.sigma_min is not None else LANGEVIN_SIGMA_MIN if langevin else SIGMA_MIN
    kwargs: dict = {}
    if method == "heun":
        steps, kwargs = nfe // 2 + 1, {"euler_steps": 1 - nfe % 2}
    elif method == "dpmpp-3m":
        kwargs = {"lower_order_final": options.lower_order_final}
    elif method == "ancestral":
        kwargs = {"eta": options.eta}
    elif langevin:
        counts = langevin_schedule(nfe - 1, options.steps_per_level)
        step_lr = options.step_lr if options.step_lr is not None else options.step_ratio * sigma_min ** 2
        kwargs, steps = {"step_lr": step_lr, "steps_per_level": counts}, len(counts)
    kind = options.grid or ("geometric" if langevin else "karras")
    if kind != "karras" and options.rho != RHO:
        raise InputError(f"rho shapes the karras grid only; {method} runs on a {kind} grid here (set grid=karras "
                         "or drop rho)")
    return fn, sigma_grid(kind, steps, options.sigma_max, sigma_min, options.rho), kwargs
