"""A diffusers ``UNet2DModel`` (DDPM-style, discrete VP time) as a denoiser on flat rows.

A DDPM UNet predicts, from ``x_vp = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and its timestep t, either
``eps`` (``prediction_type="epsilon"``), ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` (``"v_prediction"``)
or ``x_0`` (``"sample"``). With ``sigma^2 = (1 - abar) / abar`` we have ``sqrt(abar) = 1 / sqrt(1 + sigma^2)``
and ``sqrt(1 - abar) = sigma / sqrt(1 + sigma^2)``, and every prediction type converts to eps:

    eps = sqrt(1 - abar) x_vp + sqrt(abar) v = (x_vp - sqrt(abar) x_0) / sqrt(1 - abar).

:class:`~dpmot_bench.denoisers.EpsModelDenoiser` then gives ``D(x, sigma) = x - sigma eps(x / sqrt(1 +
sigma^2), t(sigma))`` with the fractional timestep ``t(sigma)`` of :class:`~dpmot_bench.schedules.VPDiscrete`.
"""
from __future__ import annotations

import torch

from ..denoisers import EpsModelDenoiser, append_dims
from ..errors import InputError, unknown_name
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
