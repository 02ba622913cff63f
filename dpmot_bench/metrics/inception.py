"""InceptionV3 pool3 features (2048-d) for FID comparable with published CIFAR-10 numbers.

The network comes from torch-fidelity (``FeatureExtractorInceptionV3``, the TF-ported FID Inception that
pytorch-fid also uses) or, failing that, torchmetrics (``NoTrainInceptionV3``, a thin wrapper of the
same class). Neither is a dependency of dpmot-bench: installing them from PyPI pulls a torchvision that may
replace the local torch, so a GPU user installs ``torch-fidelity`` into their own environment and passes
the weights file ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release asset) as
``weights_path``. Nothing is ever downloaded: the file must exist locally.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..devices import as_device
from ..errors import InputError, ShapeError, check_finite
from ..io import load_tensors


def _load_extractor(weights_path: str):
    """torch-fidelity's FID InceptionV3 built from ``weights_path`` (or torchmetrics' wrapper of it)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                           feature_extractor_weights_path=weights_path)
    except ImportError:
        pass
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        return NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_path)
    except ImportError:
        raise InputError("Inception FID needs torch-fidelity: install it into an environment whose torch it "
                         "keeps (`pip install torch-fidelity`, or `pip install torchmetrics[image]`)") from None


class InceptionFeatures:
    """Callable: images (n, C, H, W) in [-1, 1], C in {1, 3} -> InceptionV3 pool3 features (n, 2048).

    Images are quantised to uint8 RGB as they would be when saved as PNG (``round((x + 1) * 127.5)``,
    clipped; grey images repeated to 3 channels); the extractor resizes them to 299 x 299 itself."""

    def __init__(self, weights_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 100):
        path = Path(weights_path)
        # only tensors: refuse pickled code before handing the path to the third-party loader
        load_tensors(path, "Inception weights file", "pass a local copy of torch-fidelity's "
                     "weights-inception-2015-12-05-6726825d.pth (nothing is downloaded)")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.device, self.batch_size = as_device(device), batch_size
        self.extractor = _load_extractor(str(path)).to(self.device).eval()

    @staticmethod
    def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] float images (n, 1 or 3, H, W) as uint8 RGB (n, 3, H, W)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ShapeError(f"images must be a tensor of shape (n, 1 or 3, H, W), got {shape}")
        if images.shape[0] == 0:
            raise ShapeError("images must hold at least one image")
        check_finite(images, "images")
        quantised = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return quantised.repeat(1, 3, 1, 1) if quantised.shape[1] == 1 else quantised

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        rgb = self.to_uint8_rgb(images)
        out = []
        for start in range(0, rgb.shape[0], self.batch_size):
            features = self.extractor(rgb[start:start + self.batch_size].to(self.device))
            features = features[0] if isinstance(features, (tuple, list)) else features  # torch-fidelity: a tuple
            out.append(features.reshape(features.shape[0], -1).float())
        return torch.cat(out)
