"""A diffusers ``UNet2DModel`` (DDPM-style, discrete VP time) as a denoiser on flat rows.

A DDPM UNet predicts, from ``x_vp = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and its timestep t, either
``eps`` (``prediction_type="epsilon"``), ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` (``"v_prediction"``)
or ``x_0`` (``"sample"``). With ``sigma^2 = (1 - abar) / abar`` we have ``sqrt(abar) = 1 / sqrt(1 + sigma^2)``
and ``sqrt(1 - abar) = sigma / sqrt(1 + sigma^2)``, and every prediction type converts to eps:

    eps = sqrt(1 - abar) x_vp + sqrt(abar) v = (x_vp - sqrt(abar) x_0) / sqrt(1 - abar).

:class:`~dpmot_bench.denoisers.EpsModelDenoiser` then gives ``D(x, sigma) = x - sigma eps(x / sqrt(1 +
sigma^2), t(sigma))`` with the fractional timestep ``t(sigma)`` of :class:`~dpmot_bench.schedules.VPDiscrete`.

From files: :func:`load_diffusers` reads a saved pipeline directory (``model_index.json``, ``unet/``,
``scheduler/``) or a ``UNet2DModel`` directory plus a scheduler directory, local files only (no hub
access); :func:`~dpmot_bench.models.files.load_denoiser` turns them into a denoiser.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..denoisers import EpsModelDenoiser, append_dims
from ..errors import CorruptFileError, InputError, unknown_name
from ..schedules import VPDiscrete

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class UNetEpsModel:
    """``eps(x_vp, t)`` of a ``UNet2DModel``; ``x_vp`` is (B, C*H*W) flat rows or (B, C, H, W) images.

    The UNet runs in its own dtype and device (move it with ``unet.to(device)``); the result has x_vp's
    shape and dtype. UNets with learned variances (``out_channels = 2 * in_channels``) give their first
    ``in_channels`` outputs, the eps / v / x_0 prediction.
    """

    def __init__(self, unet, schedule: VPDiscrete, prediction_type: str = "epsilon"):
        config = unet.config
        if prediction_type not in PREDICTION_TYPES:
            raise unknown_name("prediction_type", prediction_type, PREDICTION_TYPES)
        if getattr(config, "time_embedding_type", "positional") != "positional":
            raise InputError(f"UNet time_embedding_type {config.time_embedding_type!r} is a continuous-sigma "
                             "(score SDE) model; only DDPM-style UNets with positional timesteps are supported")
        if config.out_channels not in (config.in_channels, 2 * config.in_channels):
            raise InputError(f"UNet has {config.in_channels} input and {config.out_channels} output channels; "
                             "expected equal (or twice as many outputs, for learned variances)")
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.unet, self.schedule, self.prediction_type = unet, schedule, prediction_type
        self.shape = (config.in_channels, height, width)

    @property
    def dim(self) -> int:
        channels, height, width = self.shape
        return channels * height * width

    def __call__(self, x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_vp.shape[1:] not in ((self.dim,), self.shape):
            raise InputError(f"the UNet takes rows of {self.dim} values or images of shape {self.shape}, "
                             f"got a batch of shape {tuple(x_vp.shape)}")
        images = x_vp.reshape(x_vp.shape[0], *self.shape).to(self.unet.dtype)
        out = self.unet(images, t.to(x_vp.device), return_dict=False)[0][:, :self.shape[0]]
        out = out.reshape(x_vp.shape).to(x_vp.dtype)
        if self.prediction_type == "epsilon":
            return out
        sigma = append_dims(self.schedule.sigma(t.double().cpu()).to(x_vp.device, x_vp.dtype), x_vp.ndim)
        signal, noise = torch.rsqrt(1 + sigma ** 2), sigma * torch.rsqrt(1 + sigma ** 2)  # sqrt(abar), sqrt(1-abar)
        if self.prediction_type == "v_prediction":
            return noise * x_vp + signal * out
        return (x_vp - signal * out) / noise


def unet_denoiser(unet, schedule, prediction_type: str | None = None) -> EpsModelDenoiser:
    """A diffusers ``UNet2DModel`` as a denoiser ``D(x, sigma)`` on flat rows (or images).

    ``schedule``: the model's training noise schedule, a :class:`~dpmot_bench.schedules.VPDiscrete` or a
    diffusers scheduler (its ``alphas_cumprod`` is used, and its ``config.prediction_type`` when
    ``prediction_type`` is None). Query it at ``schedule.sigma_min <= sigma <= schedule.sigma_max``:
    outside that range the timestep is clamped to the end of the model's range.
    """
    if not isinstance(schedule, VPDiscrete):
        if not hasattr(schedule, "alphas_cumprod"):
            raise InputError(f"schedule must be a VPDiscrete or a diffusers scheduler with alphas_cumprod, "
                             f"got {type(schedule).__name__}")
        if prediction_type is None:
            prediction_type = getattr(schedule.config, "prediction_type", "epsilon")
        schedule = VPDiscrete(schedule.alphas_cumprod.double().cpu().numpy())
    return EpsModelDenoiser(UNetEpsModel(unet, schedule, prediction_type or "epsilon"), schedule)


# ------------------------------------------------------------------------------------ loading from files

def _load_error(what: str, path, err: Exception) -> CorruptFileError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CorruptFileError(f"{what} {str(path)!r} could not be loaded ({type(err).__name__}: {first[:300]})")


def _read_json(path) -> dict:
    import json

    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _load_error("diffusers config", path, err) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"diffusers config {str(path)!r} is not a JSON object")
    return value


def load_scheduler(directory):
    """The diffusers scheduler saved in ``directory`` (``scheduler_config.json``), of the class its
    ``_class_name`` names (any diffusers scheduler with ``alphas_cumprod``; DDPMScheduler when unnamed)."""
    import diffusers

    directory = Path(directory)
    config_file = directory / "scheduler_config.json"
    if not config_file.is_file():
        raise CorruptFileError(f"scheduler directory {str(directory)!r} has no scheduler_config.json; pass the "
                               "scheduler/ folder of a saved pipeline (scheduler.save_pretrained writes it)")
    name = _read_json(config_file).get("_class_name") or "DDPMScheduler"
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise InputError(f"{str(config_file)!r} names the scheduler class {name!r}, which this diffusers "
                         f"({diffusers.__version__}) does not have")
    try:
        scheduler = cls.from_pretrained(directory, local_files_only=True)
    except Exception as err:  # diffusers raises OSError, ValueError, TypeError, ... for bad configs
        raise _load_error("scheduler", directory, err) from None
    if not hasattr(scheduler, "alphas_cumprod"):
        raise InputError(f"scheduler {name} in {str(directory)!r} has no alphas_cumprod (not a discrete VP "
                         "schedule); only DDPM-style (variance-preserving, discrete-time) models are supported")
    return scheduler


def load_unet(directory, device="cpu"):
    """The ``UNet2DModel`` saved in ``directory`` (``config.json`` + safetensors or .bin weights), local
    files only, float32, in eval mode without gradients, on ``device``."""
    import diffusers

    directory = Path(directory)
    config = _read_json(directory / "config.json")
    if config.get("_class_name") != "UNet2DModel":
        raise InputError(f"{str(directory)!r} holds a {config.get('_class_name')!r}, not a UNet2DModel; only "
                         "unconditional DDPM-style UNets (UNet2DModel) are supported")
    if config.get("class_embed_type") is not None or config.get("num_class_embeds") is not None:
        raise InputError(f"the UNet in {str(directory)!r} is class-conditional; only unconditional UNets are supported")
    try:
        unet = diffusers.UNet2DModel.from_pretrained(directory, local_files_only=True, torch_dtype=torch.float32,
                                                    low_cpu_mem_usage=False)  # no accelerate needed (or nagged for)
    except Exception as err:  # missing / truncated weights: OSError, RuntimeError, SafetensorError, ...
        raise _load_error("UNet", directory, err) from None
    return unet.to(device).eval().requires_grad_(False)


def load_diffusers(path, scheduler=None, device="cpu"):
    """A diffusers model directory as ``(unet, scheduler, info)``.

    ``path``: a pipeline directory (``model_index.json`` with ``unet/`` and ``scheduler/``, as
    ``DDPMPipeline.save_pretrained`` writes it; ``scheduler`` overrides its scheduler), or a UNet directory
    (``config.json`` of a ``UNet2DModel``) with ``scheduler`` the directory of its training scheduler.
    ``info``: ``model_index`` (or None), ``unet`` and ``scheduler`` (their configs), ``prediction_type``."""
    path = Path(path)
    index = None
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json")
        if "unet" not in index:
            raise InputError(f"pipeline {str(path)!r} ({index.get('_class_name')}) has no unet; only UNet "
                             "pipelines (DDPMPipeline, DDIMPipeline) are supported")
        unet_dir = path / "unet"
        if scheduler is None:
            if "scheduler" not in index:
                raise InputError(f"pipeline {str(path)!r} has no scheduler; pass --scheduler DIR")
            scheduler = path / "scheduler"
    elif (path / "config.json").is_file():
        unet_dir = path
        if scheduler is None:
            raise InputError(f"{str(path)!r} is a UNet directory without its noise schedule; pass --scheduler DIR "
                             "(the scheduler/ folder it was trained with)")
    else:
        raise CorruptFileError(f"directory {str(path)!r} has neither model_index.json (a diffusers pipeline) nor "
                               "config.json (a UNet2DModel); pass a folder written by save_pretrained")
    unet = load_unet(unet_dir, device)
    sched = load_scheduler(scheduler)
    prediction_type = getattr(sched.config, "prediction_type", "epsilon")
    info = {"model_index": index, "unet": dict(unet.config), "scheduler": dict(sched.config),
            "scheduler_class": type(sched).__name__, "prediction_type": prediction_type}
    return unet, sched, info
