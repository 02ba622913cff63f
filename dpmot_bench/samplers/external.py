"""diffusers' schedulers as external baselines, run on our denoisers.

Each scheduler drives a VP eps-prediction model: our denoiser seen through
:class:`~dpmot_bench.denoisers.VPEpsModel` on the scheduler's own ``alphas_cumprod`` (DDPM's linear betas
1e-4 .. 0.02 over 1000 steps), i.e. ``eps(x_vp, t) = (x - D(x, sigma_t)) / sigma_t`` with
``x = x_vp sqrt(1 + sigma_t^2)``. The loop is diffusers' pipeline loop::

    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(eps(scheduler.scale_model_input(x, t), t), t, x).prev_sample

DDIM / DPM-Solver++ / UniPC keep x in VP form and Heun / Euler in VE form; all end at sigma = 0, where both
are the clean sample. One model call per timestep, so NFE = ``len(scheduler.timesteps)``:

* ``diffusers-ddim``: ``DDIMScheduler`` with ``timestep_spacing="trailing"`` (diffusers' default "leading"
  never visits t = 999 and starts a 1-step run at t = 0; Lin et al. 2023 recommend trailing) and
  ``clip_sample=False`` (the default clips x_0 to [-1, 1], wrong for data outside it). K steps.
* ``diffusers-dpmpp-2m``: ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)``,
  diffusers' defaults otherwise (linspace spacing, lower-order final step into 0). K steps.
* ``diffusers-unipc``: ``UniPCMultistepScheduler`` defaults (bh2, order 2, corrector reusing the next
  step's model call). K steps.
* ``diffusers-heun``: ``HeunDiscreteScheduler`` spends 2 calls per step except the last (Euler into 0):
  2 m - 1 calls for m timesteps. An odd budget K uses m = (K + 1) / 2 timesteps of diffusers' linspace
  spacing (m = 1: t = 999, where diffusers' own would pick t = 0); an even K starts with one
  ``EulerDiscreteScheduler`` step (t_0 -> t_1) and runs Heun from t_1.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from ..denoisers import Denoiser, VPEpsModel
from ..errors import InputError, unknown_name
from ..noise import SampleNoise
from ..schedules import VPDiscrete
from .plans import check_nfe

DDPM_BETAS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def _scheduler_classes() -> dict:
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler,
                           UniPCMultistepScheduler)

    return {
        "diffusers-ddim": (DDIMScheduler, {"clip_sample": False, "timestep_spacing": "trailing"}),
        "diffusers-dpmpp-2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "diffusers-unipc": (UniPCMultistepScheduler, {}),
        "diffusers-heun": (HeunDiscreteScheduler, {}),
    }


DIFFUSERS_SAMPLERS = ("diffusers-ddim", "diffusers-dpmpp-2m", "diffusers-unipc", "diffusers-heun")


def make_scheduler(name: str, **config):
    """The diffusers scheduler behind sampler ``name`` with DDPM's betas; ``config`` overrides its settings
    (e.g. ``timestep_spacing``, ``solver_order``). Unknown settings are an error, not silently ignored."""
    if name not in DIFFUSERS_SAMPLERS:
        raise unknown_name("diffusers sampler", name, DIFFUSERS_SAMPLERS)
    cls, defaults = _scheduler_classes()[name]
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"{name} has no setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**{**DDPM_BETAS, **defaults, **config})


def eps_model_for(scheduler, denoiser: Denoiser) -> VPEpsModel:
    """Our denoiser as an eps-prediction model on exactly the scheduler's discrete VP schedule."""
    return VPEpsModel(denoiser, VPDiscrete(scheduler.alphas_cumprod.double()))


def run_scheduler(scheduler, eps_model, x: torch.Tensor, *, steps: int | None = None,
                  noise: SampleNoise | None = None, eta: float = 0.0) -> torch.Tensor:
    """diffusers' pipeline loop over the first ``steps`` timesteps (all by default). With ``eta > 0``
    (DDIM only) the step noise comes from ``noise``, one draw per step."""
    for t in scheduler.timesteps[:steps]:
        eps = eps_model(scheduler.scale_model_input(x, t), t)
        extra = {"eta": eta, "variance_noise": noise.randn_like(x)} if eta else {}
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


def _heun_schedulers(nfe: int, config: dict) -> list:
    """[(scheduler, steps)] spending exactly ``nfe`` calls (see the module docstring)."""
    from diffusers import EulerDiscreteScheduler

    train_steps = (config.get("num_train_timesteps") or DDPM_BETAS["num_train_timesteps"])
    # diffusers' "linspace" spacing, written descending so that a single timestep is t = T - 1, not 0
    timesteps = np.linspace(train_steps - 1, 0, nfe // 2 + 1)
    heun = make_scheduler("diffusers-heun", **config)
    if nfe % 2:
        heun.set_timesteps(timesteps=timesteps)
        return [(heun, None)]
    shared = set(inspect.signature(EulerDiscreteScheduler.__init__).parameters)
    euler = EulerDiscreteScheduler(**{**DDPM_BETAS, **{k: v for k, v in config.items() if k in shared}})
    euler.set_timesteps(timesteps=timesteps[:2])
    heun.set_timesteps(timesteps=timesteps[1:])
    return [(euler, 1), (heun, None)]


@torch.no_grad()
def sample_diffusers(name: str, denoiser: Denoiser, nfe: int, noise: SampleNoise, shape: tuple[int, ...],
                     *, eta: float = 0.0, **config) -> torch.Tensor:
    """Clean samples (noise.n, *shape) from diffusers scheduler ``name`` spending ``nfe`` model calls; the
    initial noise is ``noise``'s first draw (then, for DDIM with eta > 0, one draw per step)."""
    nfe = check_nfe(nfe)
    if eta and name != "diffusers-ddim":
        raise InputError("eta applies to diffusers-ddim only")
    if not 0 <= eta <= 1:
        raise InputError(f"eta must be in [0, 1], got {eta}")
    try:
        if name == "diffusers-heun":
            phases = _heun_schedulers(nfe, config)
        else:
            scheduler = make_scheduler(name, **config)
            scheduler.set_timesteps(nfe)
            phases = [(scheduler, None)]
    except (ValueError, NotImplementedError) as err:  # diffusers' own checks of its settings
        raise InputError(f"{name}: diffusers rejected the settings {config}: {err}") from None
    x = noise.randn(*shape) * float(phases[0][0].init_noise_sigma)
    for scheduler, steps in phases:
        x = run_scheduler(scheduler, eps_model_for(scheduler, denoiser), x, steps=steps, noise=noise, eta=eta)
    return x
