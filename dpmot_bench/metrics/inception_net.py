"""The FID InceptionV3 network in torch alone (no torchvision), its weights files and its two input pipelines.

The network is the "2015-12-05" TensorFlow InceptionV3 graph that FID was defined with (TTUR), as ported
by pytorch-fid (``FIDInceptionA/C/E_1/E_2`` patched onto torchvision's ``Inception3``) and by torch-fidelity
(``FeatureExtractorInceptionV3``). It differs from torchvision's ImageNet InceptionV3 in three places:

* the average-pool branch of the A, C and first E blocks (``Mixed_5b-d``, ``Mixed_6b-e``, ``Mixed_7b``)
  averages over the window's in-image pixels only (``avg_pool2d(3, 1, 1, count_include_pad=False)``: TF's
  pooling ignores the zero padding);
* the pool branch of the last E block (``Mixed_7c``) is a 3x3 *max* pool (stride 1, padding 1);
* every batch norm has eps = 0.001 (with running statistics: the network is used in eval mode only).

Every convolution is ``BasicConv2d``: conv (no bias) -> batch norm -> ReLU. The pool3 feature is the
2048-d global average of ``Mixed_7c``'s (n, 2048, 8, 8) output (before dropout and ``fc``).

Weights files. Both published files name their tensors as torchvision's ``Inception3`` does
(``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.running_mean``, ``Mixed_5b.branch1x1.conv.weight``, ...,
``fc.weight`` (1008, 2048), ``fc.bias``; no ``AuxLogits``): pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` loads into torchvision's ``Inception3(num_classes=1008,
aux_logits=False)`` with ``strict=True``, and torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
is written by its ``util_convert_inception_weights.py`` under exactly these names (a plain dict, without
BN ``num_batches_tracked`` entries) and loads strictly into ``FeatureExtractorInceptionV3``, whose module
names are torchvision's. The key names are therefore the SAME in both files (no renaming needed; BN
``num_batches_tracked``, unused in eval mode, may be present for all BN layers or for none), and both are
conversions of the same TF graph's constants (per their sources): the keys cannot reliably tell the two
files apart (they may differ only in ``num_batches_tracked``), and they need not: the networks are the
same. What differs is the input pipeline (below), chosen by name or from the file name
(:func:`choose_preprocessing`).
A third layout is accepted and mapped by name: the ``state_dict()`` of pytorch-fid's wrapper module
``pytorch_fid.inception.InceptionV3()`` (``blocks.0.0.conv.weight`` = ``Conv2d_1a_3x3.conv.weight``, ...;
no ``fc``), see ``PYTORCH_FID_BLOCKS``.

Input pipelines (both take uint8 RGB images (n, 3, H, W), as saved in a PNG):

* ``"pytorch-fid"``: ``x / 255`` in [0, 1] -> ``F.interpolate(size=(299, 299), mode="bilinear",
  align_corners=False)`` (half-pixel centres) -> ``2 x - 1``.
* ``"torch-fidelity"``: float32 pixel values -> TF1's ``resize_bilinear`` to 299 x 299
  (:func:`resize_bilinear_tf1`: source coordinate ``dst * in / out``, no half-pixel offset) ->
  ``(x - 128) / 128``. This is the pipeline of the TF graph (and of torch-fidelity, which matches it to
  float precision), the one published TF FID numbers used.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CorruptFileError, InputError, unknown_name
from ..io import load_tensors

INPUT_SIZE = 299
NUM_CLASSES = 1008  # the TF graph's softmax: 1000 ImageNet classes + 8 unused
PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
TORCH_FIDELITY_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                      "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_FIX = (f"pass a local copy of pytorch-fid's pt_inception-2015-12-05-6726825d.pth ({PYTORCH_FID_URL}) or "
               f"torch-fidelity's weights-inception-2015-12-05-6726825d.pth ({TORCH_FIDELITY_URL}); "
               "nothing is downloaded")


# ------------------------------------------------------------------------------------------- network
class BasicConv2d(nn.Module):
    """``relu(bn(conv(x)))``: conv without bias, batch norm with eps = 0.001 (running statistics)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool3(x: torch.Tensor) -> torch.Tensor:
    """3x3 average, stride 1, padding 1, over the in-image pixels of each window only (TF's SAME pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max, stride 1, padding 1 (the last E block's pool branch)."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35 x 35 block: [1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1] concatenated on channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(tf_avg_pool3(x)),
        ], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: [3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | max-pool 3x3 stride 2]."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions (1x7 and 7x1), ``c7`` inner channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(tf_avg_pool3(x))], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: [1x1 -> 3x3 stride 2 | 1x1 -> 1x7 -> 7x1 -> 3x3 stride 2 | max-pool 3x3 stride 2]."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 heads; ``pool`` is ``"avg"`` (TF average, ``Mixed_7b``) or ``"max"``
    (``Mixed_7c``: the FID graph's max pool)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise InputError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = tf_avg_pool3 if pool == "avg" else max_pool3
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(self.pool(x)),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3 (module docstring). ``forward`` takes preprocessed images (n, 3, 299, 299) and
    returns the pool3 features (n, 2048); ``num_classes=None`` builds it without ``fc`` (unused for FID)."""

    STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
    MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
             "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, num_classes: int | None = NUM_CLASSES):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, num_classes) if num_classes else None

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, 299, 299) -> (n, 192, 35, 35): five BasicConv2d with two 3x3 stride-2 max pools."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.MIXED:
            x = getattr(self, name)(x)
        return x.mean((2, 3))  # pool3: global average of the (n, 2048, 8, 8) map


# ------------------------------------------------------------------------------------------- resizing
def _tf1_axis(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index: lower and upper source index and the weight of the upper one, TF1's rule in float32:
    ``src = dst * (in / out)``, ``lo = floor(src)``, ``hi = min(lo + 1, in - 1)``, ``frac = src - lo``."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lo = src.floor()
    frac = src - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)`` of float images (n, C, H, W) to ``size``.

    Output pixel (i, j) samples the input at ``(i * H / H_out, j * W / W_out)`` (no half-pixel offset), in
    float32 as TF computes it, clamped at the last row/column:
    ``top = a + (b - a) fx``, ``bottom = c + (d - c) fx``, ``out = top + (bottom - top) fy`` with a, b (c, d)
    the two neighbours on the upper (lower) source row (torch-fidelity's rule, its "slow" exact method).
    ``F.interpolate(align_corners=False)`` samples at ``(dst + 1/2) in / out - 1/2`` instead (pixel centres
    aligned), i.e. ``(in / out - 1) / 2`` input pixels further on: -0.45 pixels for 32 -> 299."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise InputError("resize_bilinear_tf1 takes a float tensor of shape (n, C, H, W)")
    out_h, out_w = size
    y_lo, y_hi, fy = _tf1_axis(images.shape[2], out_h, images.device)
    x_lo, x_hi, fx = _tf1_axis(images.shape[3], out_w, images.device)
    fx, fy = fx.to(images.dtype), fy.to(images.dtype)
    upper, lower = images[:, :, y_lo], images[:, :, y_hi]
    top = upper[..., x_lo] + (upper[..., x_hi] - upper[..., x_lo]) * fx
    bottom = lower[..., x_lo] + (lower[..., x_hi] - lower[..., x_lo]) * fx
    return top + (bottom - top) * fy[:, None]


def preprocess_pytorch_fid(rgb: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's input: uint8 (n, 3, H, W) -> ``x / 255`` -> bilinear (half-pixel) to 299 -> ``2 x - 1``."""
    x = rgb.float() / 255
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


def preprocess_torch_fidelity(rgb: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's (the TF graph's) input: uint8 (n, 3, H, W) -> TF1 bilinear to 299 -> ``(x - 128) / 128``."""
    return (resize_bilinear_tf1(rgb.float()) - 128) / 128


PREPROCESSING = {"pytorch-fid": preprocess_pytorch_fid, "torch-fidelity": preprocess_torch_fidelity}


# ------------------------------------------------------------------------------------------- weights
# pytorch_fid.inception.InceptionV3's state_dict: block b, position p -> the torchvision module name.
PYTORCH_FID_BLOCKS = {
    "blocks.0.0": "Conv2d_1a_3x3", "blocks.0.1": "Conv2d_2a_3x3", "blocks.0.2": "Conv2d_2b_3x3",
    "blocks.1.0": "Conv2d_3b_1x1", "blocks.1.1": "Conv2d_4a_3x3",
    **{f"blocks.2.{i}": name for i, name in enumerate(FIDInceptionV3.MIXED[:8])},
    **{f"blocks.3.{i}": name for i, name in enumerate(FIDInceptionV3.MIXED[8:])},
}
_BATCHES = ".num_batches_tracked"


def _rename_pytorch_fid_blocks(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        prefix = ".".join(key.split(".")[:3])
        renamed[PYTORCH_FID_BLOCKS[prefix] + key[len(prefix):] if prefix in PYTORCH_FID_BLOCKS else key] = value
    return renamed


def detect_key_format(state: dict) -> str:
    """``"torchvision"`` (both published files: ``Conv2d_1a_3x3.conv.weight``, ...) or ``"pytorch-fid-module"``
    (``blocks.0.0.conv.weight``, ...: pytorch-fid's wrapper module), from the stem's first key."""
    if "blocks.0.0.conv.weight" in state:
        return "pytorch-fid-module"
    return "torchvision"


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_state_dict(state, model: nn.Module, where: str) -> dict:
    """``state`` checked against ``model.state_dict()``: the same keys (BN ``num_batches_tracked`` optional,
    for all BN layers or none), tensors of the same shapes, finite floating-point weights. Returns it
    completed with zero ``num_batches_tracked`` where absent; raises a one-line CorruptFileError naming the
    first offending key and what was expected."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CorruptFileError(f"{where} holds a {type(state).__name__}, not a state dict (names -> tensors); "
                               f"{WEIGHTS_FIX}")
    expected = model.state_dict()
    required = [k for k in expected if not k.endswith(_BATCHES)]
    missing = [k for k in required if k not in state]
    if missing:
        raise CorruptFileError(f"{where} lacks key {missing[0]!r} (expected shape {tuple(expected[missing[0]].shape)}"
                               f"; {len(missing)} of {len(required)} weights missing); {WEIGHTS_FIX}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CorruptFileError(f"{where} has unexpected key {extra[0]!r} ({len(extra)} unexpected in all; the FID "
                               f"InceptionV3 has none of that name); {WEIGHTS_FIX}")
    batches = [k for k in expected if k.endswith(_BATCHES)]
    present = [k for k in batches if k in state]
    if present and len(present) != len(batches):
        absent = next(k for k in batches if k not in state)
        raise CorruptFileError(f"{where} lacks key {absent!r} (it has {len(present)} of the {len(batches)} BN "
                               f"num_batches_tracked entries: all or none); {WEIGHTS_FIX}")
    for key, want in expected.items():
        if key not in state:
            continue
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise CorruptFileError(f"{where}: key {key!r} has shape {_shape(got)}, the FID InceptionV3 expects "
                                   f"{tuple(want.shape)}; {WEIGHTS_FIX}")
        if want.is_floating_point() and not (got.is_floating_point() and bool(torch.isfinite(got).all())):
            raise CorruptFileError(f"{where}: key {key!r} must hold finite floating-point values "
                                   f"(got {got.dtype}); {WEIGHTS_FIX}")
    return {**{k: torch.zeros((), dtype=torch.long) for k in batches}, **state}


def choose_preprocessing(path: str | os.PathLike, key_format: str, preprocessing: str = "auto") -> str:
    """The input pipeline for a weights file: ``preprocessing`` itself unless ``"auto"``; for ``"auto"``:
    ``"pytorch-fid"`` for pytorch-fid's wrapper-module layout or a file named ``pt_inception*`` (pytorch-fid's
    release name), ``"torch-fidelity"`` otherwise (its release name ``weights-inception*``, and any other
    name: the TF graph's own pipeline, the one the published TF FID numbers used)."""
    if preprocessing != "auto":
        if preprocessing not in PREPROCESSING:
            raise unknown_name("Inception preprocessing", preprocessing, [*PREPROCESSING, "auto"])
        return preprocessing
    if key_format == "pytorch-fid-module" or Path(path).name.startswith("pt_inception"):
        return "pytorch-fid"
    return "torch-fidelity"


def load_fid_inception(path: str | os.PathLike, num_classes: int | None = NUM_CLASSES):
    """``(FIDInceptionV3 in eval mode with the file's weights, key_format)``; the file is read with
    ``torch.load(weights_only=True)`` (tensors only) and loaded with ``strict=True`` after the checks of
    :func:`check_state_dict`. The pytorch-fid-module layout (no ``fc``) gives a network without ``fc``."""
    where = f"Inception weights file {str(path)!r}"
    state = load_tensors(path, "Inception weights file", WEIGHTS_FIX)
    if isinstance(state, dict):
        key_format = detect_key_format(state)
        if key_format == "pytorch-fid-module":
            state, num_classes = _rename_pytorch_fid_blocks(state), None
    else:
        key_format = "torchvision"
    model = FIDInceptionV3(num_classes=num_classes)
    model.load_state_dict(check_state_dict(state, model, where), strict=True)
    return model.eval().requires_grad_(False), key_format


def random_fid_inception(seed: int = 0, num_classes: int | None = NUM_CLASSES, calibration_images: int = 2):
    """A FIDInceptionV3 with random weights whose activations stay of order one (for checks without the
    real file: same keys and shapes). Convolutions keep torch's default initialisation, BN scales are drawn
    from U(0.5, 1.5) and shifts from N(0, 0.1^2); then every BN's running mean and variance are set to the
    batch statistics of its input on ``calibration_images`` random 32 x 32 images in [-1, 1] upsampled
    to 299 (one train-mode pass with cumulative averaging), so each BN standardises its input as trained
    weights do. Returned in eval mode. Use it to test plumbing (e.g. the CLI) without the real file:
    ``torch.save(random_fid_inception().state_dict(), path)`` is a file that loads like the real ones."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FIDInceptionV3(num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one pass sets the batch statistics
        images = torch.rand(calibration_images, 3, 32, 32, generator=generator) * 2 - 1
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        model.train()(images)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
            module.num_batches_tracked.zero_()
    return model.eval().requires_grad_(False)
