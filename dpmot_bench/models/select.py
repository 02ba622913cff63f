"""The model a command samples with, and the data in that model's own scale: one place for the CLI, the
benchmarks and ``dpmot reproduce``.

``model`` is ``"exact"`` / ``"trained"`` (see :func:`~dpmot_bench.models.get_denoiser`), a checkpoint of
this toolkit, or any file :func:`~dpmot_bench.models.files.load_denoiser` reads (a diffusers pipeline or
UNet directory, an NCSNv2 checkpoint with its YAML config). A loaded model fixes the data scale (diffusers
(-1, 1), NCSNv2 (0, 1) unless its config rescales): the dataset's rows are mapped affinely from their
value range into it, so latents, OT maps and samples all live where the model was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Dataset
from ..denoisers import Denoiser
from ..errors import InputError, ShapeError

BUILTIN_MODELS = ("exact", "trained")


@dataclass
class ModelChoice:
    """What to sample with: the dataset in the model's scale, the denoiser, and (for a loaded model file)
    its description and trained sigma range."""
    dataset: Dataset
    denoiser: Denoiser
    name: str  # "exact", "trained" or the path given
    description: str
    sigma_min: float | None = None  # the trained sigma range of a loaded model (None: no limit)
    sigma_max: float | None = None
    sigmas: torch.Tensor | None = None  # the model's own discrete levels, descending (NCSNv2, DDPM)
    kind: str = "builtin"  # or the loaded model's: diffusers, ncsnv2, dpmot
    step_lr: float | None = None  # an NCSNv2 YAML's sampling.step_lr (its annealed Langevin step)


def _is_own_checkpoint(path: Path) -> bool:
    """A single file that is not an NCSNv2 list: this toolkit's checkpoint format (get_denoiser checks it)."""
    if not path.is_file():
        return False
    from ..io import load_tensors

    state = load_tensors(path, "model file", "pass a dpmot checkpoint, an NCSNv2 checkpoint or a diffusers directory")
    return isinstance(state, dict)


def choose_model(dataset: Dataset, model: str | None = None, *, config: str | None = None,
                 scheduler: str | None = None, device="cpu", progress: bool = False) -> ModelChoice:
    """The model named by ``model`` (default: the dataset's, see :func:`default_model`) for ``dataset``,
    with the dataset mapped into a loaded model's data range and checked against its sample shape."""
    from .registry import default_model, get_denoiser

    model = default_model(dataset) if model is None else model
    if not isinstance(model, (str, Path)) or not str(model).strip():
        raise InputError(f"model must be exact, trained or a model file / directory, got {model!r}")
    model = str(model)
    if model in BUILTIN_MODELS or (config is None and scheduler is None and _is_own_checkpoint(Path(model))):
        if config is not None or scheduler is not None:
            raise InputError("--model-config / --scheduler apply to NCSNv2 and diffusers models only")
        description = {"exact": "the dataset's exact denoiser", "trained": "this toolkit's trained network"}
        return ModelChoice(dataset, get_denoiser(dataset, model, device=device, progress=progress), model,
                           description.get(model, f"dpmot checkpoint {model}"))
    from .files import load_denoiser

    loaded = load_denoiser(model, config=config, device=device, scheduler=scheduler)
    if dataset.dim != int(torch.tensor(loaded.shape).prod()):
        raise ShapeError(f"the model takes samples of shape {tuple(loaded.shape)} ({int(torch.tensor(loaded.shape).prod())} "
                         f"values); {dataset.name} has samples of shape {tuple(dataset.shape)}")
    if loaded.data_range is not None and dataset.is_finite:
        dataset = dataset.rescaled(*loaded.data_range)
    return ModelChoice(dataset, loaded.denoiser, model, loaded.description, float(loaded.sigma_min),
                       float(loaded.sigma_max), loaded.sigmas, loaded.kind,
                       _ncsn_step_lr(config) if loaded.kind == "ncsnv2" else None)


def _ncsn_step_lr(config) -> float | None:
    """``sampling.step_lr`` of an NCSNv2 YAML (a path or the parsed mapping), None when absent."""
    if isinstance(config, (str, Path)):
        import yaml

        config = yaml.safe_load(Path(config).read_text())  # load_denoiser has read it once already
    value = ((config or {}).get("sampling") or {}).get("step_lr") if isinstance(config, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None
