"""Denoisers to sample with: exact ones (GMMs), small trained networks (EDM preconditioning and loss),
an adapter for diffusers' ``UNet2DModel``, and models from files (diffusers directories, NCSNv2
checkpoints, own checkpoints). Start with :func:`get_denoiser`, or :func:`load_denoiser` for a file."""
from .diffusers_unet import (PREDICTION_TYPES, UNetEpsModel, load_diffusers, load_scheduler, load_unet,
                             unet_denoiser)
from .files import MODEL_KINDS, LoadedModel, load_denoiser
from .ncsnv2 import NCSNv2Config, NCSNv2Denoiser, NCSNv2Net, load_ncsnv2, parse_ncsnv2_config
from .evaluation import DenoisingLoss, data_std, denoiser_distance, denoising_loss
from .networks import MLP, EDMDenoiser, FourierFeatures, SmallUNet, edm_scalings
from .registry import cached_model_path, default_model, get_denoiser, train_cached
from .text import TextEncoder, TextEncoderUnavailable, get_text_encoder
from .training import (TrainConfig, default_config, edm_loss, load_checkpoint, model_from_checkpoint,
                       save_checkpoint, train_denoiser)

__all__ = ["PREDICTION_TYPES", "UNetEpsModel", "unet_denoiser", "load_diffusers", "load_scheduler", "load_unet",
           "MODEL_KINDS", "LoadedModel", "load_denoiser", "NCSNv2Config", "NCSNv2Denoiser", "NCSNv2Net",
           "load_ncsnv2", "parse_ncsnv2_config", "DenoisingLoss", "data_std", "denoiser_distance", "denoising_loss",
           "MLP", "EDMDenoiser", "FourierFeatures", "SmallUNet", "edm_scalings",
           "cached_model_path", "default_model", "get_denoiser", "train_cached", "TrainConfig",
           "default_config", "edm_loss", "load_checkpoint", "model_from_checkpoint", "save_checkpoint",
           "train_denoiser", "TextEncoder", "TextEncoderUnavailable", "get_text_encoder"]
