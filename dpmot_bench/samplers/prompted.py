"""Text-prompted sampling: UPainting's guided denoiser (samplers/guidance.py) under any sigma-grid sampler,
and composed with DPM-OT through class-conditional OT maps.

:class:`Guidance` is the typed set of guidance options (checked once). :data:`ARMS` names UniBench-small's
three arms: ``text`` (the text-conditional model with CFG, no matcher: a GLIDE / Imagen-like system),
``matcher`` (the unconditional model steered by the matcher alone: a Disco-Diffusion-like system) and
``both`` (UPainting).

DPM-OT for a prompt: the OT jump lands on latents of the prompt's classes only, then the guided tail runs
from sigma_star. The latents come from the **train** split (the prompted models' own data; the held-out
split is the evaluator's, models/evaluator.py, and samples copied near its rows would flatter the judge).
The classes are given (``classes=``), or chosen by the matcher (:func:`choose_classes`): the prompt is
compared with each class's prototype (the normalised mean of the matcher's image embeddings of that class's
train rows) at the matcher's own learned temperature, and every class within a factor
:data:`CHOICE_RATIO` of the most probable one is kept. A known prompt's exact class set is never read:
what the prompt means is the models' to understand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import InputError
from ..options import check_fields, option
from .dpmot import FIT_FIELDS
from .generate import DIFFUSERS_SAMPLERS, DPMOT_SAMPLERS, SampleResult, prepare
from .guidance import INPUTS, SCHEDULES, prompted_denoiser

CHOICE_RATIO = 4.0  # matcher class choice: keep classes at least 1/4 as probable as the best
MAX_PROMPT_CHARS = 500


@dataclass(frozen=True)
class Guidance:
    """How a prompt steers sampling (samplers/guidance.py): CFG weight ``cfg`` over the text-conditional
    model (1: the conditional model; 0: the unconditional one), matcher guidance of scale ``guidance`` on
    ``schedule``, the matcher's ``input`` (x0, x_sigma or UPainting's blend), the gradient through the
    denoiser or with its Jacobian as the identity, and an optional per-sample RMS clip."""
    cfg: float = option(2.0, float, low=0, help="classifier-free guidance weight w (1: conditional; 0: unconditional)")
    guidance: float = option(0.0, float, low=0, help="matcher guidance scale s (0: none)")
    schedule: str = option("skip-noisiest", str, choices=SCHEDULES, help="where on the grid the matcher acts")
    input: str = option("blend", str, choices=INPUTS, help="what the matcher sees")
    through_denoiser: bool = option(True, bool, help="the guidance gradient through the denoiser (else identity)")
    clip_rms: float | None = option(None, float, above=0, optional=True, help="per-sample RMS clip of the gradient")

    def __post_init__(self):
        check_fields(self)
        if self.cfg == 0 and self.guidance == 0:
            raise InputError("cfg 0 and guidance 0 ignore the prompt (the unconditional model); give cfg > 0 or "
                             "guidance > 0")


ARMS = {"text": Guidance(cfg=2.0, guidance=0.0), "matcher": Guidance(cfg=0.0, guidance=3.0),
        "both": Guidance(cfg=2.0, guidance=3.0)}


def check_prompt(prompt, encoder=None) -> str:
    """A prompt is a non-empty string of at most MAX_PROMPT_CHARS characters (checked before any model is
    loaded) that ``encoder``, when given, can read whole; a one-line InputError otherwise."""
    if not isinstance(prompt, str):
        raise InputError(f"a prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("the prompt is empty; give the text to condition on")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    if encoder is not None:
        encoder.encode([prompt])  # its token limit, checked where it is known (and the embedding cached)
    return prompt


def check_sampler(sampler) -> None:
    """Prompted sampling positions its guidance schedule on a sigma grid: diffusers' schedulers are refused."""
    if sampler in DIFFUSERS_SAMPLERS:
        raise InputError(f"prompted sampling runs on this project's sigma-grid samplers, not {sampler} (diffusers' "
                         "schedulers have their own timesteps)")


@torch.no_grad()
def class_probabilities(models, prompt: str) -> np.ndarray:
    """The matcher's p(class | prompt): softmax over classes of its learned scale times the cosine between
    the prompt and each class prototype (:func:`_prototypes`)."""
    text = models.encoder.encode([check_prompt(prompt)])[0]
    matcher = models.matcher
    device = next(matcher.parameters()).device
    prototypes = _prototypes(models.dataset.name, matcher, str(device))
    t = matcher.embed_text(text.to(device).reshape(1, -1))[0]
    logits = matcher.log_scale.exp().clamp(max=100) * prototypes @ t
    return torch.softmax(logits.double(), 0).cpu().numpy()


@lru_cache(maxsize=8)
def _prototypes(name: str, matcher, device: str) -> torch.Tensor:
    """(classes, dim) normalised mean image embeddings of each class's train rows (up to 2000 per class)."""
    from ..data import get_dataset

    dataset = get_dataset(name)
    x, y = dataset.data("train", None if dataset.is_finite else 20_000)
    rows = []
    for c in range(dataset.n_classes):
        z = matcher.embed_image(x[y == c][:2000].to(device))
        rows.append(torch.nn.functional.normalize(z.mean(0), dim=0))
    return torch.stack(rows)


def choose_classes(models, prompt: str) -> list[int]:
    """The classes the matcher reads in ``prompt`` (module docstring): those with p(c | prompt) >= p_max /
    :data:`CHOICE_RATIO`."""
    p = class_probabilities(models, prompt)
    return [int(c) for c in np.flatnonzero(p >= p.max() / CHOICE_RATIO)]


@lru_cache(maxsize=64)
def _class_map(name: str, classes: tuple[int, ...], sampler: str, nfe: int, device: str, fit_options: str):
    from . import dpmot

    preset = dpmot.preset_with(DPMOT_SAMPLERS[sampler], {"split": "train", **json.loads(fit_options)}, sampler)
    return preset, preset.fit(name, nfe, device=device, classes=list(classes))


def class_map(models, classes, sampler: str = "dpm-ot", nfe: int = 5, device="cpu", options: dict | None = None):
    """``(preset, fitted map)``: the DPM-OT preset of ``sampler`` with its latents on the train split (and
    the fit options among ``options``: sigma_star, solver, ...), its map onto the latents of ``classes``
    only (fitted once per process and key)."""
    from ..devices import as_device
    from ..ot.latents import check_classes
    classes = tuple(check_classes(classes, models.dataset))
    fit = {k: v for k, v in (options or {}).items() if k in FIT_FIELDS}
    return _class_map(models.dataset.name, classes, sampler, int(nfe), str(as_device(device)),
                      json.dumps(fit, sort_keys=True))


@dataclass
class PromptedResult:
    result: SampleResult
    classes: list[int] | None  # DPM-OT: the classes of the map's latents
    chosen_by: str | None  # "given" or "matcher" (DPM-OT), else None


def sample_prompted(models, prompt: str, sampler: str, nfe: int, n: int, seed: int, *,
                    guidance: Guidance = Guidance(), classes=None, options: dict | None = None,
                    device="cpu", batch_size: int = 2048, progress: bool = False) -> PromptedResult:
    """``n`` samples for ``prompt`` from a dataset's prompted models
    (:func:`~dpmot_bench.models.prompted.get_prompted_models`): ``sampler`` (a sigma-grid baseline, or
    ``dpm-ot`` / ``dpm-ot-paper`` through a class-conditional map of ``classes``, or of the classes the
    matcher chooses) spending ``nfe`` guided-denoiser calls per sample, guided by ``guidance``; the guidance
    schedule is positioned on the sampler's own grid (DPM-OT: its tail from sigma_star). Row i depends only
    on ``seed`` and i, as in :func:`~dpmot_bench.samplers.generate.generate`.

    An NFE here is one call of the guided denoiser: CFG costs a second network evaluation per call (none
    at ``cfg`` 0 or 1) and matcher guidance a backward pass (through the denoiser by default); the wall
    time says what they cost."""
    check_prompt(prompt, models.encoder)
    if not isinstance(guidance, Guidance):
        raise InputError(f"guidance must be a Guidance, got {type(guidance).__name__}")
    check_sampler(sampler)
    chosen_by, ot_map, name = None, None, sampler
    if sampler in DPMOT_SAMPLERS:
        chosen_by = "matcher" if classes is None else "given"
        classes = choose_classes(models, prompt) if classes is None else classes
        name, ot_map = class_map(models, classes, sampler, nfe, device, options)
        classes = ot_map.meta_["classes"]
        options = {k: v for k, v in (options or {}).items() if k not in FIT_FIELDS}  # the map has them
    elif classes is not None:
        raise InputError(f"classes choose the latents of a DPM-OT map; {sampler} has none (use dpm-ot)")
    job = prepare(models.dataset, name, nfe, options, ot_map=ot_map, device=device)
    denoiser = prompted_denoiser(models, prompt, cfg=guidance.cfg, guidance=guidance.guidance,
                                 schedule=guidance.schedule, guidance_input=guidance.input,
                                 sigma_range=job.sigma_range, clip_rms=guidance.clip_rms,
                                 through_denoiser=guidance.through_denoiser)
    result = job.sample(denoiser, n, seed, device=device, batch_size=batch_size, progress=progress)
    return PromptedResult(result, classes, chosen_by)


__all__ = ["ARMS", "Guidance", "PromptedResult", "check_prompt", "check_sampler", "choose_classes", "class_map",
           "class_probabilities", "sample_prompted"]
