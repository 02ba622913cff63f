"""Models from files: a diffusers directory, an NCSNv2 checkpoint (+ its YAML) or this toolkit's own
checkpoint, each turned into the one form the samplers take, a denoiser ``D(x, sigma)`` for
``x = x_0 + sigma eps`` (:mod:`dpmot_bench.denoisers`). Start with :func:`load_denoiser`.

What the path is decides how it is read (every file with ``torch.load(weights_only=True)``: data, never
code):

- a directory with ``model_index.json`` (a saved ``DDPMPipeline``: ``unet/`` + ``scheduler/``), or a
  ``UNet2DModel`` directory (``config.json``) with ``scheduler=DIR``: a VP model, wrapped by
  :func:`~dpmot_bench.models.diffusers_unet.unet_denoiser` (``D = x - sigma eps(x / sqrt(1 + sigma^2),
  t(sigma))``, ``sigma_t^2 = (1 - abar_t) / abar_t``); data on [-1, 1];
- a file holding the list the NCSNv2 code saves, with ``config`` its YAML: ``D = x + sigma^2 s(x, sigma)``
  (:mod:`dpmot_bench.models.ncsnv2`); data on [0, 1] (or [-1, 1] with ``data.rescaled``);
- a file written by ``dpmot train`` (``format: dpmot-bench/denoiser-checkpoint``): the EDM network.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..denoisers import MICRO_BATCH, Denoiser, FixedBatchDenoiser
from ..devices import as_device
from ..errors import CorruptFileError, InputError, ShapeError
from ..io import load_tensors
from .diffusers_unet import load_diffusers, unet_denoiser
from .ncsnv2 import NCSNv2Denoiser, is_ncsnv2_states, load_ncsnv2
from .training import CHECKPOINT_FORMAT, model_from_checkpoint

MODEL_KINDS = ("diffusers", "ncsnv2", "dpmot")
FILE_FIX = ("pass a diffusers pipeline directory, an NCSNv2 checkpoint (with --model-config FILE) or a "
            "checkpoint written by `dpmot train`")
PIXELS_PER_BATCH = 64 * 32 * 32  # micro-batch of image networks: 64 rows at 32x32, fewer for larger images
EDM_RANGE_STDS = 4.0  # a dpmot model's sigma range: exp(p_mean +- 4 p_std), all but 6e-5 of its training sigmas


@dataclass(frozen=True)
class LoadedModel:
    """A model read from a file, as a denoiser, with what a sampler needs to know about it.

    denoiser: ``D(x, sigma)``; ``x`` flat rows (B, d) or images (B, *shape) on ``device``; ``sigma`` a
        float, a 0-d tensor or a (B,) tensor; returns x's shape; eval mode, no gradients; evaluated in
        fixed micro-batches (:class:`~dpmot_bench.denoisers.FixedBatchDenoiser`), so a row's result does
        not depend on the batch it came in.
    kind: ``"diffusers"``, ``"ncsnv2"`` or ``"dpmot"``.
    shape: one sample's shape ((C, H, W) for image models).
    data_range: the data scale the model was trained on (diffusers (-1, 1); NCSNv2 (0, 1), or (-1, 1)
        when rescaled; dpmot checkpoints the stored range of their data, None when unknown).
    sigma_min, sigma_max: the range of noise levels it was trained on (dpmot: ``exp(p_mean +- 4 p_std)``
        of its log-normal training distribution).
    sigmas: its own discrete grid, descending, float64 (NCSNv2's L levels; diffusers' ``sigma_t`` for
        t = K-1..0), None for continuous-sigma models.
    path, description, config: where it came from, one line about it, and what was read (provenance).
    network: the ``torch.nn.Module`` behind the denoiser (the UNet, the NCSNv2 network, the EDM network),
        for inspection; the denoiser is what to sample with.
    """

    denoiser: Denoiser
    kind: str
    shape: tuple[int, ...]
    data_range: tuple[float, float] | None
    sigma_min: float
    sigma_max: float
    sigmas: torch.Tensor | None
    path: str
    description: str
    config: dict
    network: torch.nn.Module | None = None
    _warned: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def dim(self) -> int:
        """Values per sample (the width of a flat row)."""
        return math.prod(self.shape)

    def clip_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """A sampler's grid (1-D, descending) clipped into ``[sigma_min, sigma_max]``, a final 0 kept.

        Where it had to clip (a level outside the range by more than a relative 1e-6, so that a bound
        that went through float32 is not "outside"), ``warnings.warn`` says so, once per model, naming
        the range. Same length, dtype and device as ``sigmas`` (clipped levels may repeat)."""
        sigmas = torch.as_tensor(sigmas)
        if sigmas.ndim != 1:
            raise ShapeError(f"sigmas must be a 1-D grid, got shape {tuple(sigmas.shape)}")
        keep = 1 if sigmas.numel() and float(sigmas[-1]) == 0 else 0
        body = sigmas[:sigmas.numel() - keep]
        clipped = body.clamp(self.sigma_min, self.sigma_max)
        outside = bool(((body < self.sigma_min * (1 - 1e-6)) | (body > self.sigma_max * (1 + 1e-6))).any())
        if outside and not self._warned.get("clip"):
            self._warned["clip"] = True
            low, high = float(body.min()), float(body.max())
            warnings.warn(f"the sampler's noise levels [{low:.4g}, {high:.4g}] leave the range this model was "
                          f"trained on, [{self.sigma_min:.4g}, {self.sigma_max:.4g}] ({self.description}); "
                          "they were clipped into it", stacklevel=2)
        return torch.cat([clipped, sigmas[sigmas.numel() - keep:]])


class _NoGrad:
    """Evaluate a denoiser without building an autograd graph."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        with torch.no_grad():
            return self.denoiser(x, sigma)


class _Rows:
    """A denoiser on flat rows seen as one that takes rows (B, d) or samples (B, *shape)."""

    def __init__(self, denoiser: Denoiser, shape: tuple[int, ...]):
        self.denoiser, self.shape, self.dim = denoiser, tuple(shape), math.prod(shape)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if x.shape[1:] not in ((self.dim,), self.shape):
            raise InputError(f"the model takes rows of {self.dim} values or samples of shape {self.shape}, got a "
                             f"batch of shape {tuple(x.shape)}")
        return self.denoiser(x.reshape(x.shape[0], self.dim), sigma).reshape(x.shape)


def micro_batch_rows(shape: tuple[int, ...]) -> int:
    """Rows per network evaluation: 64 for 32x32 images and smaller, proportionally fewer (at least 1) for
    larger ones (memory of a batch of activations), 64 for flat rows."""
    if len(shape) != 3:
        return MICRO_BATCH
    return max(1, min(MICRO_BATCH, PIXELS_PER_BATCH // (shape[1] * shape[2])))


def _wrap(denoiser: Denoiser, rows: int) -> Denoiser:
    return FixedBatchDenoiser(_NoGrad(denoiser), rows)


def load_denoiser(path: str | os.PathLike, config: dict | str | os.PathLike | None = None,
                  device: str | torch.device = "cpu", *, scheduler: str | os.PathLike | None = None,
                  micro_batch: int | None = None) -> LoadedModel:
    """The model stored at ``path`` as a :class:`LoadedModel` (its denoiser on ``device``).

    ``path``: a diffusers pipeline directory (``model_index.json``), a ``UNet2DModel`` directory (with
    ``scheduler`` the directory of its scheduler, ``scheduler_config.json``), an NCSNv2 checkpoint (with
    ``config`` its YAML file or parsed dict: required), or a checkpoint written by ``dpmot train``.
    ``scheduler``: only for diffusers directories (overrides a pipeline's own). ``config``: only for
    NCSNv2 checkpoints. ``micro_batch``: rows per network evaluation (default :func:`micro_batch_rows`
    of the sample shape: 64 up to 32x32 images); results depend on it in the last bits, never on the
    batch a row comes in.

    Bad input is one line: :class:`~dpmot_bench.errors.CorruptFileError` for files that are missing,
    unreadable or not what they claim (a pickle of objects, a text file, damaged weights, a folder
    without a model), :class:`~dpmot_bench.errors.InputError` for a missing or unfitting config."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"model path must be a file or directory name, got {path!r}")
    device = as_device(device)
    if micro_batch is not None and (isinstance(micro_batch, bool) or not isinstance(micro_batch, int)
                                    or micro_batch < 1):
        raise InputError(f"micro_batch must be a positive integer, got {micro_batch!r}")
    where = Path(path)
    if where.is_dir():
        if config is not None:
            raise InputError(f"{str(where)!r} is a diffusers directory; --model-config is only for NCSNv2 "
                             "checkpoints (a diffusers model's configs are in its folder)")
        return _from_diffusers(where, scheduler, device, micro_batch)
    if scheduler is not None:
        raise InputError(f"--scheduler is only for diffusers UNet directories; {str(where)!r} is not a directory")
    state = load_tensors(where, "model file", FILE_FIX)
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        if config is not None:
            raise InputError(f"{str(where)!r} is a dpmot-bench checkpoint, which holds its own config; drop "
                             "--model-config (it is for NCSNv2 checkpoints)")
        del state
        return _from_dpmot(where, device, micro_batch)
    if is_ncsnv2_states(state):
        return _from_ncsnv2(where, state, config, device, micro_batch)
    kind = type(state).__name__
    if isinstance(state, dict):
        kind = f"dict with keys {', '.join(map(repr, list(state)[:4]))}{', ...' if len(state) > 4 else ''}"
    raise CorruptFileError(f"{str(where)!r} holds a {kind}, not a model this toolkit reads; {FILE_FIX}")


def _from_diffusers(path: Path, scheduler, device: torch.device, rows: int | None) -> LoadedModel:
    unet, sched, info = load_diffusers(path, scheduler, device)
    denoiser = unet_denoiser(unet, sched)
    schedule, eps_model = denoiser.schedule, denoiser.eps_model
    sigmas = schedule.log_sigmas.exp().flip(0)  # t = K-1 .. 0: descending
    shape = eps_model.shape
    name = (info["model_index"] or {}).get("_class_name") or "UNet2DModel"
    description = (f"diffusers {name} ({eps_model.prediction_type}, {len(sigmas)} timesteps, "
                   f"{'x'.join(map(str, shape))}, {info['scheduler_class']}) from {path.name}")
    return LoadedModel(_wrap(denoiser, rows or micro_batch_rows(shape)), "diffusers", tuple(shape), (-1.0, 1.0),
                       float(sigmas[-1]), float(sigmas[0]), sigmas, str(path), description, info, unet)


def _from_ncsnv2(path: Path, states, config, device: torch.device, rows: int | None) -> LoadedModel:
    net, info = load_ncsnv2(path, config, device, states=states)
    parsed = net.config
    sigmas = parsed.sigmas()
    description = (f"{parsed.arch} (ngf {parsed.ngf}, {parsed.num_classes} levels, "
                   f"{'EMA' if info['ema'] else 'raw'} weights) from {path.name}")
    return LoadedModel(_wrap(NCSNv2Denoiser(net), rows or micro_batch_rows(parsed.shape)), "ncsnv2", parsed.shape,
                       parsed.data_range, float(sigmas.min()), float(sigmas.max()), sigmas, str(path),
                       description, info, net)


def _from_dpmot(path: Path, device: torch.device, rows: int | None) -> LoadedModel:
    model, meta = model_from_checkpoint(path, device)
    config = meta["config"]
    if not meta["finished"]:
        raise InputError(f"checkpoint {str(path)!r} is unfinished (step {meta['step']} of {config['steps']}); "
                         f"finish it with `dpmot train ... --out {path} --resume`")
    shape = tuple(meta["shape"])
    low = math.exp(config["p_mean"] - EDM_RANGE_STDS * config["p_std"])
    high = math.exp(config["p_mean"] + EDM_RANGE_STDS * config["p_std"])
    description = (f"dpmot {config['arch']} (width {config['width']}, {meta['step']} steps, "
                   f"{'EMA' if config['ema_decay'] > 0 else 'raw'} weights) trained on {meta['dataset']} "
                   f"from {path.name}")
    return LoadedModel(_wrap(_Rows(model, shape), rows or MICRO_BATCH), "dpmot", shape, meta["value_range"], low, high,
                       None, str(path), description, meta, model)
