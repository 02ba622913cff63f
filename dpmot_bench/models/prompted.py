"""The prompted models of a dataset, trained on first use and cached (``$DPMOT_CACHE/models``): the
text-conditional denoiser and the matcher, on **disjoint** rows of the train split (even rows: the
denoiser; odd rows: the matcher), both with the frozen text encoder.
:func:`~dpmot_bench.samplers.guidance.prompted_denoiser` composes them into one ``D(x, sigma)`` for a
prompt (classifier-free guidance, then matcher guidance with a schedule), for any sampler.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import torch

from ..cache import cache_dir
from ..data import from_array, get_dataset, get_prompt_set
from ..devices import as_device
from ..errors import CorruptFileError
from ..io import atomic_path, exclusive_lock, load_tensors
from .conditional import build_conditional, train_text_conditional
from .matcher import Matcher, train_matcher
from .networks import EDMDenoiser
from .text import get_text_encoder
from .training import TrainConfig, default_config

MATCHER_STEPS = 1500
FORMAT = "dpmot-bench/prompted-models/1"


@dataclass
class PromptedModels:
    dataset: object
    prompt_set: object
    encoder: object
    denoiser: EDMDenoiser  # D(x, sigma, cond)
    matcher: Matcher
    path: str


def _halves(dataset):
    x, y = dataset.data("train", None if dataset.is_finite else 40_000)
    return (x[0::2], y[0::2]), (x[1::2], y[1::2])


def _key(name: str, config: TrainConfig, encoder, texts) -> str:
    identity = {"dataset": name, "config": asdict(config), "encoder": encoder.identity, "prompts": texts,
                "matcher_steps": MATCHER_STEPS, "format": FORMAT}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _cached(name: str, device_text: str, progress: bool) -> PromptedModels:
    device = as_device(device_text)
    dataset, prompt_set, encoder = get_dataset(name), get_prompt_set(name), get_text_encoder()
    config = default_config(dataset)
    texts = [p.text for p in prompt_set.prompts("any", "train")]
    path = cache_dir("models") / f"{name}-prompted-{_key(name, config, encoder, texts)}.pt"
    (x_d, y_d), (x_m, y_m) = _halves(dataset)
    with exclusive_lock(path.with_name(path.name + ".lock"), f"prompted models {path.name}", wait=True):
        if not path.is_file():
            rows = x_d.numpy().reshape(-1, *dataset.shape)  # images stay images (the UNet of digits)
            half = from_array(rows, y_d.numpy(), name=name, heldout=rows[:2], heldout_labels=y_d[:2].numpy())
            model, _ = train_text_conditional(half, prompt_set, encoder.encode, replace(config, n_train=None),
                                              seed=0, progress=progress)
            matcher, _ = train_matcher(x_m, y_m, prompt_set, encoder.encode, steps=MATCHER_STEPS, seed=0,
                                       progress=progress)
            state = {"format": FORMAT, "denoiser": model.state_dict(), "matcher": matcher.state_dict(),
                     "config": asdict(config), "sigma_data": float(model.sigma_data), "cond_dim": encoder.dim}
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
    state = load_tensors(path, "prompted models", "delete it to retrain")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptFileError(f"{str(path)!r} is not a prompted-models file; delete it to retrain")
    model = build_conditional(dataset, config, state["cond_dim"], state["sigma_data"])
    model.load_state_dict(state["denoiser"])
    matcher = Matcher(dataset.dim, state["cond_dim"])
    matcher.load_state_dict(state["matcher"])
    return PromptedModels(dataset, prompt_set, encoder, model.to(device).eval().requires_grad_(False),
                          matcher.to(device).eval().requires_grad_(False), str(path))


def get_prompted_models(dataset: str, device="cpu", progress: bool = False) -> PromptedModels:
    """The cached prompted models of ``dataset`` (``digits`` or ``gmm-grid25``), trained on first use."""
    from ..data import prompt_sets
    from ..errors import unknown_name

    if dataset not in prompt_sets():
        raise unknown_name("prompted dataset", dataset, prompt_sets())
    return _cached(dataset, str(as_device(device)), progress)
