"""Denoisers to sample with: exact ones (GMMs), small trained networks (EDM preconditioning and loss),
and an adapter for diffusers' ``UNet2DModel``. Start with :func:`get_denoiser`."""
from .diffusers_unet import PREDICTION_TYPES, UNetEpsModel, unet_denoiser
from .evaluation import DenoisingLoss, data_std, denoiser_distance, denoising_loss
from .networks import MLP, EDMDenoiser, FourierFeatures, SmallUNet, edm_scalings
from .registry import cached_model_path, default_model, get_denoiser, train_cached
from .training import (TrainConfig, default_config, edm_loss, load_checkpoint, model_from_checkpoint,
                       save_checkpoint, train_denoiser)

__all__ = ["PREDICTION_TYPES", "UNetEpsModel", "unet_denoiser", "DenoisingLoss", "data_std", "denoiser_distance", "denoising_loss",
           "MLP", "EDMDenoiser", "FourierFeatures", "SmallUNet", "edm_scalings",
           "cached_model_path", "default_model", "get_denoiser", "train_cached", "TrainConfig",
           "default_config", "edm_loss", "load_checkpoint", "model_from_checkpoint", "save_checkpoint",
           "train_denoiser"]
