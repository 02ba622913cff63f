"""InceptionV3 pool3 features (2048-d) for FID / KID comparable with published numbers, in torch alone, and
reference statistics files in pytorch-fid's ``.npz`` format.

The network is :class:`~dpmot_bench.metrics.inception_net.FIDInceptionV3` (the TF "2015-12-05" graph that
pytorch-fid and torch-fidelity port; no torchvision) with the weights of a local file: pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
(their GitHub release assets; nothing is ever downloaded). Images go through the input pipeline of the
library the file comes from (``preprocessing="auto"``, see :func:`inception_net.choose_preprocessing`):

* ``"pytorch-fid"``: uint8 / 255 -> ``F.interpolate(299, bilinear, align_corners=False)`` -> ``2 x - 1``;
* ``"torch-fidelity"``: uint8 -> TF1 bilinear resize to 299 (``src = dst * in / out``) -> ``(x - 128) / 128``
  (the TF graph's own pipeline).

Statistics file (pytorch-fid's ``--save-stats`` format): arrays ``mu`` (d,) and ``sigma`` (d, d), float64;
this toolkit adds ``meta``, a JSON string (what the statistics were computed from), which pytorch-fid
ignores.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..devices import as_device
from ..errors import CorruptFileError, InputError, ShapeError, check_finite
from ..io import save_npz
from .frechet import feature_statistics
from .inception_net import PREPROCESSING, choose_preprocessing, load_fid_inception


class InceptionFeatures:
    """Callable: images (n, C, H, W) in [-1, 1], C in {1, 3} -> InceptionV3 pool3 features (n, 2048) float32.

    Images are quantised to uint8 RGB as they would be when saved as PNG (``round((x + 1) * 127.5)``,
    clipped; grey images repeated to 3 channels), then preprocessed by the weights' library's pipeline
    (``preprocessing``: ``"auto"``, ``"pytorch-fid"`` or ``"torch-fidelity"``; the choice is kept in
    ``self.preprocessing``) and run in batches of ``batch_size`` on ``device``. A row's features do not
    depend on the batch it was computed in (up to float rounding of the convolution kernels)."""

    def __init__(self, weights_path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 100,
                 preprocessing: str = "auto"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(weights_path, (str, os.PathLike)) or not str(weights_path):
            raise InputError(f"weights_path must be a file path, got {weights_path!r}")
        self.device, self.batch_size = as_device(device), batch_size
        network, self.key_format = load_fid_inception(Path(weights_path))
        self.preprocessing = choose_preprocessing(weights_path, self.key_format, preprocessing)
        self._preprocess = PREPROCESSING[self.preprocessing]
        self.network = network.to(self.device)

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
    def from_uint8(self, rgb: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """pool3 features (n, 2048) of uint8 RGB images (n, 3, H, W) (e.g. decoded PNGs), on ``device``;
        ``progress``: a progress bar over the batches."""
        if not isinstance(rgb, torch.Tensor) or rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ShapeError(f"expected uint8 RGB images (n, 3, H, W), got "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)} {tuple(getattr(rgb, 'shape', ()))}")
        starts = range(0, rgb.shape[0], self.batch_size)
        out = [self.network(self._preprocess(rgb[start:start + self.batch_size].to(self.device))).float()
               for start in tqdm(starts, desc="Inception features", unit="batch", disable=not progress, leave=False)]
        return torch.cat(out)

    def __call__(self, images: torch.Tensor, progress: bool = False) -> torch.Tensor:
        return self.from_uint8(self.to_uint8_rgb(images), progress=progress)


def inception_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of pool3 features (n, d), n >= 2: the mean and the unbiased (ddof = 1) covariance in
    float64, as pytorch-fid's ``calculate_activation_statistics`` (this is :func:`frechet.feature_statistics`)."""
    return feature_statistics(features)


def _checked_stats(mu, sigma, where: str) -> tuple[np.ndarray, np.ndarray]:
    """mu (d,) and sigma (d, d) as float64: real numbers, finite, sigma symmetric to float32 rounding."""
    arrays = []
    for name, value in (("mu", mu), ("sigma", sigma)):
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise InputError(f"{where}: {name} must hold real numbers, got dtype {value.dtype}")
        value = value.astype(np.float64)
        if not np.isfinite(value).all():
            raise InputError(f"{where}: {name} holds NaN or infinity")
        arrays.append(value)
    mu, sigma = arrays
    if mu.ndim != 1 or mu.shape[0] < 1:
        raise ShapeError(f"{where}: mu must have shape (d,), got {mu.shape}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ShapeError(f"{where}: sigma must have shape ({d}, {d}) to match mu, got {sigma.shape}")
    asymmetry = float(np.abs(sigma - sigma.T).max())
    if asymmetry > 1e-6 * max(float(np.abs(sigma).max()), 1e-300):  # float32 rounding of a symmetric matrix
        raise InputError(f"{where}: sigma must be symmetric (a covariance), its largest |sigma - sigma^T| is "
                         f"{asymmetry:.3g}")
    return mu, sigma


def save_fid_stats(path: str | os.PathLike, mu, sigma, **meta) -> None:
    """Write ``mu`` (d,) and ``sigma`` (d, d) to ``path`` (``.npz``, atomically) in pytorch-fid's format
    (arrays ``mu``, ``sigma``, float64), plus ``meta`` as a JSON string array (keyword values must be
    JSON-serialisable: e.g. ``n``, ``source``, ``preprocessing``, ``weights``)."""
    mu, sigma = _checked_stats(mu, sigma, "save_fid_stats")
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError as err:
        raise InputError(f"save_fid_stats: meta must be JSON-serialisable ({err})") from None
    save_npz(path, mu=mu, sigma=sigma, meta=np.array(text))


def load_fid_stats(path: str | os.PathLike, with_meta: bool = False):
    """``(mu, sigma)`` from a statistics ``.npz`` (pytorch-fid's, TTUR's or :func:`save_fid_stats`'s) read with
    ``allow_pickle=False``, checked (shapes (d,), (d, d), finite, symmetric), as float64; with
    ``with_meta``: ``(mu, sigma, meta)``, ``meta`` the saved dict (``{}`` when the file has none)."""
    path = Path(path)
    fix = "pass a .npz with arrays mu (d,) and sigma (d, d) (dpmot fid-stats or pytorch-fid --save-stats)"
    if not path.is_file():
        raise CorruptFileError(f"FID statistics file {str(path)!r} does not exist; {fix}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single array, not an .npz archive")
            missing = [k for k in ("mu", "sigma") if k not in archive.files]
            if missing:
                raise CorruptFileError(f"FID statistics file {str(path)!r} has no array {missing[0]!r} "
                                       f"(it has {sorted(archive.files)}); {fix}")
            mu, sigma = archive["mu"], archive["sigma"]
            meta_text = str(archive["meta"][()]) if "meta" in archive.files else "{}"
    except CorruptFileError:
        raise
    except Exception as err:  # not a zip, pickled object arrays, truncated file, ...
        raise CorruptFileError(f"FID statistics file {str(path)!r} is not a readable .npz of arrays "
                               f"({type(err).__name__}: {err}); {fix}") from None
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        raise CorruptFileError(f"FID statistics file {str(path)!r}: meta is not a JSON string; {fix}") from None
    try:
        mu, sigma = _checked_stats(mu, sigma, f"FID statistics file {str(path)!r}")
    except InputError as err:
        raise CorruptFileError(str(err)) from None
    meta = meta if isinstance(meta, dict) else {"meta": meta}
    return (mu, sigma, meta) if with_meta else (mu, sigma)
