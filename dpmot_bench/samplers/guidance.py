"""Guidance in the sigma coordinate (UPainting, arXiv 2210.16031; see ../shared/reference/upainting.md): a
guided denoiser is still a ``D(x, sigma)``, so every sampler and DPM-OT's tail take it unchanged.

Classifier-free guidance (CFG), with one network trained with condition dropout::

    D_w(x, sigma) = D(x, sigma, none) + w(sigma) (D(x, sigma, c) - D(x, sigma, none))

Cross-modal (matcher) guidance on top of it::

    x_tilde = a x0_hat + (1 - a) x_in,      x0_hat = D_w(x, sigma)
    g       = -grad_x L(x_tilde),           L = the matcher's distance to the prompt
    D_g     = D_w + s(sigma) sigma^2 clip(g)

The matcher is trained on clean data only, so it sees ``x_tilde``, an estimate of a clean sample:
``input="x0"`` (a = 1), ``"x_sigma"`` (a = 0, x_in = x: the noisy sample itself) or ``"blend"`` (UPainting's
released pipeline: a = sigma / sqrt(1 + sigma^2), x_in = x / sqrt(1 + sigma^2), i.e. its VP blend
``sqrt(1 - abar) x0_hat + (1 - sqrt(1 - abar)) x_t`` written in this coordinate: mostly the clean
estimate at high noise, mostly the sample itself at low noise, where the two agree). The gradient runs
through the denoiser (``through_denoiser=True``) or, cheaper, with its Jacobian replaced by the identity
(``dx_tilde / dx = I``). ``clip``: the gradient is rescaled per sample to RMS at most ``clip_rms``
(UPainting's ``g min(rms(g), c) / rms(g)``).

Schedules say, per step, how strongly each guidance acts (:class:`Schedule`): ``none``, ``constant``,
``skip-noisiest`` (off on the noisiest ``fraction`` of the steps, UPainting's default: its pipeline runs
the first 10 of 50 steps with CFG alone), ``late`` / ``early`` (only the least / most noisy
``fraction``), ``ramp-up`` / ``ramp-down`` (linear in the step's position from 0 to 1 / 1 to 0), ``cosine``
(a bump, sin^2(pi u), peaking mid-way). The position of a level is ``u = (log sigma_max - log sigma) /
(log sigma_max - log sigma_min)`` over the sampler's grid, so a schedule means the same on any grid; on
the grid itself :meth:`Schedule.plan` lists the weight of every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..denoisers import append_dims, sigma_batch
from ..errors import InputError, unknown_name

SCHEDULES = ("none", "constant", "skip-noisiest", "late", "early", "ramp-up", "ramp-down", "cosine")
INPUTS = ("x0", "x_sigma", "blend")


@dataclass(frozen=True)
class Schedule:
    """A guidance weight over the noise levels of a grid (module docstring): ``scale`` times a shape in [0, 1]."""
    name: str = "constant"
    scale: float = 1.0
    fraction: float = 0.2  # skip-noisiest / late / early: the share of steps concerned

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise unknown_name("guidance schedule", self.name, SCHEDULES)
        if not math.isfinite(self.scale) or self.scale < 0:
            raise InputError(f"a guidance scale must be a finite number >= 0, got {self.scale}")
        if not 0 < self.fraction < 1:
            raise InputError(f"the schedule's fraction must be in (0, 1), got {self.fraction}")

    def shape(self, u: torch.Tensor) -> torch.Tensor:
        """The schedule's shape at positions u in [0, 1] (0: the noisiest level, 1: the last)."""
        f = self.fraction
        one = torch.ones_like(u)
        return {
            "none": torch.zeros_like(u),
            "constant": one,
            "skip-noisiest": (u >= f).to(u.dtype),
            "late": (u >= 1 - f).to(u.dtype),
            "early": (u <= f).to(u.dtype),
            "ramp-up": u.clamp(0, 1),
            "ramp-down": (1 - u).clamp(0, 1),
            "cosine": torch.sin(math.pi * u.clamp(0, 1)) ** 2,
        }[self.name]

    def plan(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The weight of each step of a sampler grid ``sigmas`` (descending, optionally ending in 0): one
        per level before the last 0, at position i / (steps - 1) (the first step u = 0)."""
        levels = sigmas[:-1] if float(sigmas[-1]) == 0 else sigmas
        steps = levels.shape[0]
        u = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
        return self.scale * self.shape(u)

    def at(self, sigma: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
        """The weight at level(s) ``sigma`` of a grid spanning [sigma_min, sigma_max] (log position)."""
        span = math.log(sigma_max) - math.log(sigma_min)
        u = (math.log(sigma_max) - torch.log(sigma.double().clamp_min(1e-300))) / span if span > 0 else \
            torch.ones_like(sigma, dtype=torch.float64)
        return self.scale * self.shape(u)


def cfg_denoiser(conditional: Callable, unconditional: Callable, weight: Schedule | float,
                 sigma_range: tuple[float, float] | None = None) -> Callable:
    """``D_w = D_none + w (D_c - D_none)``: ``conditional`` / ``unconditional`` are ``D(x, sigma)``
    callables (the same network with and without the condition). ``weight``: a number (w; 1 is the
    conditional model itself, computed without the unconditional call; 0 the unconditional model, without
    the conditional one) or a :class:`Schedule` of w over ``sigma_range``."""
    if not isinstance(weight, Schedule):
        weight = float(weight)
        if not math.isfinite(weight):
            raise InputError(f"the CFG weight must be finite, got {weight}")
        if weight == 1.0:
            return conditional  # exactly the conditional model, one call
        if weight == 0.0:
            return unconditional  # exactly the unconditional model, one call

    def guided(x, sigma):
        s = sigma_batch(sigma, x)
        if isinstance(weight, Schedule):
            if sigma_range is None:
                raise InputError("a CFG schedule needs sigma_range=(sigma_min, sigma_max) of the sampler's grid")
            w = weight.at(s, *sigma_range).to(x.dtype)
        else:
            w = torch.full_like(s, weight)
        d_c, d_u = conditional(x, sigma), unconditional(x, sigma)
        return d_u + append_dims(w, x.ndim) * (d_c - d_u)
    return guided


def matcher_guided(denoiser: Callable, loss: Callable[[torch.Tensor], torch.Tensor], schedule: Schedule,
                   sigma_range: tuple[float, float], *, input: str = "blend", through_denoiser: bool = True,
                   clip_rms: float | None = None) -> Callable:
    """``D_g = D_w + s(sigma) sigma^2 clip(-grad_x L(x_tilde))`` (module docstring). ``denoiser``: D_w;
    ``loss(x_tilde) -> (B,)`` per-sample matcher losses (summed for the gradient, so each sample gets its
    own); ``schedule``: s over ``sigma_range``. With a zero weight at a level no gradient is computed and
    D_w is returned as it is."""
    if input not in INPUTS:
        raise unknown_name("guidance input", input, INPUTS)
    if clip_rms is not None and not (math.isfinite(clip_rms) and clip_rms > 0):
        raise InputError(f"clip_rms must be a finite number > 0 or None, got {clip_rms}")

    def guided(x, sigma):
        s = sigma_batch(sigma, x)
        scale = schedule.at(s, *sigma_range).to(x.dtype)
        if not bool((scale != 0).any()):
            return denoiser(x, sigma)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = denoiser(x_in if through_denoiser else x_in.detach(), sigma)
            if input == "x0":
                a, rest = torch.ones_like(s), x_in
            elif input == "x_sigma":
                a, rest = torch.zeros_like(s), x_in
            else:
                a, rest = s / torch.sqrt(1 + s ** 2), x_in / append_dims(torch.sqrt(1 + s ** 2), x.ndim)
            a = append_dims(a, x.ndim)
            if through_denoiser or input == "x_sigma":
                tilde = a * x0 + (1 - a) * rest
                (grad,) = torch.autograd.grad(loss(tilde).sum(), x_in)
            else:  # the denoiser's Jacobian replaced by the identity: d x_tilde / d x = I
                tilde = (a * x0.detach() + (1 - a) * rest.detach()).requires_grad_(True)
                (grad,) = torch.autograd.grad(loss(tilde).sum(), tilde)
        g = -torch.nan_to_num(grad.detach())
        if clip_rms is not None:
            rms = g.flatten(1).pow(2).mean(1).sqrt()
            g = g * append_dims(torch.where(rms > clip_rms, clip_rms / rms.clamp_min(1e-30), torch.ones_like(rms)), x.ndim)
        return x0.detach() + append_dims(scale * s ** 2, x.ndim) * g
    return guided


def prompted_denoiser(models, prompt: str, *, cfg: float = 2.0, guidance: float = 0.0,
                      schedule: str = "skip-noisiest", guidance_input: str = "blend",
                      sigma_range: tuple[float, float] = (0.002, 80.0), clip_rms: float | None = None,
                      through_denoiser: bool = True):
    """``D(x, sigma)`` for ``prompt`` from a dataset's prompted models
    (:func:`~dpmot_bench.models.prompted.get_prompted_models`): CFG with weight ``cfg`` over the
    text-conditional denoiser (1: the conditional model; 0: the unconditional one, the prompt then acting
    through the matcher alone), then matcher guidance of scale ``guidance`` on ``schedule`` (0: none)."""
    from ..models.conditional import conditioned

    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
    embedding = models.encoder.encode([prompt])[0]
    d = cfg_denoiser(conditioned(models.denoiser, embedding), conditioned(models.denoiser, None), cfg)
    if guidance == 0:
        return d
    text = embedding.to(next(models.matcher.parameters()).device)
    return matcher_guided(d, lambda x: models.matcher.distance(x.float(), text).to(x.dtype),
                          Schedule(schedule, guidance), sigma_range, input=guidance_input, clip_rms=clip_rms,
                          through_denoiser=through_denoiser)
