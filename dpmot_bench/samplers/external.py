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
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from ..denoisers import Denoiser, VPEpsModel
from ..errors import InputError, unknown_name
from ..noise import SampleNoise
from ..schedules import VPDiscrete
from ..options import Spec, check_fields, check_value, option, unknown_keys
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


@dataclass(frozen=True)
class DiffusersOptions:
    """A diffusers sampler's options, checked: ``eta`` (DDIM only) and scheduler settings ``config`` (names
    and types from the scheduler's constructor; see :func:`diffusers_options`)."""
    eta: float = option(0.0, float, low=0, high=1, help="diffusers-ddim: DDIM's eta (default 0)")
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        check_fields(self)


# Settings whose range diffusers does not check itself (it fails later inside torch, or silently).
_SETTING_SPECS = {"num_train_timesteps": Spec(int, low=2), "beta_start": Spec(float, above=0, high=1),
                  "beta_end": Spec(float, above=0, high=1), "solver_order": Spec(int, low=1)}


def _setting_spec(name: str, default) -> Spec | None:
    if name in _SETTING_SPECS:
        return _SETTING_SPECS[name]
    if isinstance(default, bool):
        return Spec(bool)
    if isinstance(default, (int, float)):
        return Spec(type(default))
    return None  # strings, lists, None: diffusers checks them (its ValueError becomes an InputError)


def diffusers_options(name: str, values: Mapping) -> DiffusersOptions:
    """``values`` checked for diffusers sampler ``name``: ``eta`` for DDIM, else the scheduler's own
    settings by name (unknown ones are an error, not silently ignored) and, where the default is a number
    or a bool, by type."""
    if name not in DIFFUSERS_SAMPLERS:
        raise unknown_name("diffusers sampler", name, DIFFUSERS_SAMPLERS)
    cls, _ = _scheduler_classes()[name]
    parameters = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    valid = set(parameters) | ({"eta"} if name == "diffusers-ddim" else set())
    unknown_keys(values, valid, name)
    config = {}
    for key, value in values.items():
        if key == "eta":
            continue
        spec = _setting_spec(key, parameters[key])
        config[key] = value if spec is None else check_value(key, value, spec)
    return DiffusersOptions(values.get("eta", 0.0), config)


def make_scheduler(name: str, **config):
    """The diffusers scheduler behind sampler ``name`` with DDPM's betas; ``config`` overrides its settings
    (e.g. ``timestep_spacing``, ``solver_order``), checked by :func:`diffusers_options`."""
    return _build_scheduler(name, diffusers_options(name, config).config)


def _build_scheduler(name: str, config: dict):
    """The scheduler with DDPM's betas, our defaults and ``config`` (already checked)."""
    cls, defaults = _scheduler_classes()[name]
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
    heun = _build_scheduler("diffusers-heun", config)
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
                     options: DiffusersOptions | None = None, **values) -> torch.Tensor:
    """Clean samples (noise.n, *shape) from diffusers scheduler ``name`` spending ``nfe`` model calls; the
    initial noise is ``noise``'s first draw (then, for DDIM with eta > 0, one draw per step). ``options``
    (typed) or ``values`` (checked here) set ``eta`` and the scheduler's settings."""
    nfe = check_nfe(nfe)
    options = diffusers_options(name, values) if values or options is None else options
    config, eta = options.config, options.eta
    train_steps = config.get("num_train_timesteps", DDPM_BETAS["num_train_timesteps"])
    if nfe > train_steps:
        raise InputError(f"{name} has {train_steps} training timesteps, so at most {train_steps} NFE; got {nfe}")
    try:
        if name == "diffusers-heun":
            phases = _heun_schedulers(nfe, config)
        else:
            scheduler = _build_scheduler(name, config)
            scheduler.set_timesteps(nfe)
            phases = [(scheduler, None)]
    except (ValueError, NotImplementedError, TypeError) as err:  # diffusers' own checks of its settings
        raise InputError(f"{name}: diffusers rejected the settings {config}: {err}") from None
    x = noise.randn(*shape) * float(phases[0][0].init_noise_sigma)
    for scheduler, steps in phases:
        x = run_scheduler(scheduler, eps_model_for(scheduler, denoiser), x, steps=steps, noise=noise, eta=eta)
    return x
