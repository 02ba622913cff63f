"""Which denoiser to use for a dataset: ``exact``, ``trained`` (cached) or a checkpoint file."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from ..cache import cache_dir, config_key
from ..data import Dataset, empirical_denoiser
from ..denoisers import Denoiser, FixedBatchDenoiser
from ..devices import as_device
from ..errors import CorruptFileError, InputError
from ..io import exclusive_lock, remove_stale_temps
from .training import TrainConfig, as_dataset, default_config, model_from_checkpoint, train_denoiser

DEFAULT_SEED = 0


def default_model(dataset: Dataset | str) -> str:
    """``"exact"`` where the dataset has an exact denoiser (GMMs), else ``"trained"`` (digits)."""
    dataset = as_dataset(dataset)
    return "exact" if dataset.mixture is not None else "trained"


def cached_model_path(dataset: Dataset | str, config: TrainConfig | None = None, seed: int = DEFAULT_SEED) -> Path:
    """Where the trained model of ``(dataset, config, seed)`` lives in the cache (``$DPMOT_CACHE/models``).

    The file name carries a hash of the dataset (for a user's data, of its content), the config, the seed
    and the package version, so a change of any of them never reuses a stale model."""
    dataset = as_dataset(dataset)
    config = config or default_config(dataset)
    identity = {"dataset": dataset.name, "train": asdict(config), "seed": seed}
    if dataset.fingerprint is not None:  # a user's data: its content, not only its name
        identity["data"] = [dataset.fingerprint, list(dataset.value_range or ())]  # and the scale of its rows
    key = config_key(identity)
    return cache_dir("models") / f"{dataset.name}-{key}.pt"


def partial_path(path: Path) -> Path:
    """The checkpoint of an unfinished cache entry (renamed onto ``path`` when training ends)."""
    return path.with_name(path.stem + ".partial" + path.suffix)


def train_cached(dataset: Dataset | str, config: TrainConfig | None = None, seed: int = DEFAULT_SEED, *,
                 device: str | torch.device = "cpu", progress: bool = True, resume: bool = False,
                 checkpoint_every: int = 500) -> tuple[Path, dict]:
    """Train into the cache: checkpoints go to the entry's ``.partial.pt`` file (``resume`` continues
    from it), which becomes the entry when training ends. Returns ``(path, history)``. Temp files of
    the entry and of its checkpoint left by killed runs are removed first (a live writer's are kept)."""
    dataset = as_dataset(dataset)
    config = config or default_config(dataset)
    path = cached_model_path(dataset, config, seed)
    partial = partial_path(path)
    with exclusive_lock(lock_path(path), f"cached model {path.name}", wait=True):  # one trainer per entry
        remove_stale_temps(path.parent, names=[path.name, partial.name], recursive=False)
        _, history = train_denoiser(dataset, config, seed=seed, device=device, progress=progress,
                                    checkpoint=partial, checkpoint_every=checkpoint_every, resume=resume)
        os.replace(partial, path)
    return path, history


def lock_path(path: Path) -> Path:
    """The lock file of a cache entry (held while it is trained, so concurrent users wait for it)."""
    return path.with_name(path.name + ".lock")


def get_denoiser(dataset: Dataset | str, model: str = "exact", device: str | torch.device = "cpu",
                 progress: bool = False) -> Denoiser:
    """The denoiser ``D(x, sigma)`` of ``dataset`` named by ``model``.

    - ``"exact"``: GMMs: the exact posterior mean (``dataset.mixture.denoise``). digits: the empirical
      denoiser of the train split, the optimal denoiser of the 1347 training images *as a finite set*:
      sampling with it can only reproduce training images (it memorises), so use it as a reference,
      not as a generative model.
    - ``"trained"``: the network trained with :func:`default_config` and seed 0, loaded from the cache
      (``$DPMOT_CACHE/models``), or trained on first use (seconds for the toys, about two minutes for
      digits on a CPU) and then cached.
    - anything else: the path of a checkpoint written by ``dpmot train`` / :func:`train_denoiser`
      (missing, corrupt or foreign files raise :class:`~dpmot_bench.errors.CorruptFileError`; a model
      trained on another dataset, by name or sample shape, raises :class:`~dpmot_bench.errors.InputError`).
      The network is rebuilt from the shape stored in the file, so a user's own (unregistered) data set
      works; older files without a shape need their data set to be registered.

    Trained models come back in eval mode without gradients, on ``device``, wrapped in
    :class:`~dpmot_bench.denoisers.FixedBatchDenoiser` (samples independent of the batch size); inputs must
    be on ``device`` too.
    """
    dataset = as_dataset(dataset)
    device = as_device(device)
    if model == "exact":
        if dataset.mixture is not None:
            return dataset.mixture.to(device).denoise
        return empirical_denoiser(dataset.data("train")[0].to(device)).denoise
    if model == "trained":
        path = cached_model_path(dataset)
        # one trainer per cache entry: a second process waits, then loads what the first wrote
        with exclusive_lock(lock_path(path), f"cached model {path.name}", wait=True):
            if not path.is_file():  # train on first use, continuing an interrupted run (same result)
                train_cached(dataset, device=device, progress=progress, resume=partial_path(path).is_file())
        denoiser, meta = model_from_checkpoint(path, device)
        if not meta["finished"]:
            raise CorruptFileError(f"cached model {str(path)!r} is unfinished; delete it to retrain")
        return FixedBatchDenoiser(denoiser)
    if not isinstance(model, (str, Path)) or not str(model):
        raise InputError(f"model must be 'exact', 'trained' or a checkpoint path, got {model!r}")
    denoiser, meta = model_from_checkpoint(model, device)  # rebuilt from the stored shape (any data set)
    if meta["dataset"] != dataset.name:
        raise InputError(f"checkpoint {str(model)!r} was trained on {meta['dataset']}, not {dataset.name}; "
                         f"pass a {dataset.name} checkpoint or --dataset {meta['dataset']}")
    if tuple(meta["shape"]) != tuple(dataset.shape):
        raise InputError(f"checkpoint {str(model)!r} was trained on samples of shape {tuple(meta['shape'])}, but "
                         f"{dataset.name} has samples of shape {tuple(dataset.shape)}; pass a checkpoint of this data")
    if not meta["finished"]:
        raise InputError(f"checkpoint {str(model)!r} is unfinished (step {meta['step']} of "
                         f"{meta['config']['steps']}); finish it with `dpmot train ... --out {model} --resume`")
    return FixedBatchDenoiser(denoiser)
