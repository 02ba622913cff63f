"""NCSNv2 score networks (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
Models") and the loader of the checkpoints their reference code writes.

The reference code (github.com/ermongroup/ncsnv2, which DPM-OT's reference code builds on) trains a
RefineNet-style network ``F(x)`` with **no noise conditioning** and scales its output by the level:

    s_theta(x, i) = F(x) / sigma_i,     sigma_i = exp(linspace(log sigma_begin, log sigma_end, L))_i

(technique 3 of the paper; ``sigma_dist: uniform`` configs use ``linspace(sigma_begin, sigma_end, L)``).
Since ``F`` does not see the level, ``s(x, sigma) = F(x) / sigma`` is the network's own score at every
sigma, and the denoiser (Tweedie) is

    D(x, sigma) = x + sigma^2 s(x, sigma) = x + sigma F(x),

written in the second form so that sigma = 0 gives ``D = x`` (the limit) instead of ``0 * inf``. The
network was trained on ``sigma_end <= sigma <= sigma_begin`` only: between the grid levels the score
interpolates, outside it extrapolates (use :meth:`~dpmot_bench.models.files.LoadedModel.clip_sigmas`).

Data scale: images in [0, 1], or [-1, 1] with ``data.rescaled: true``; the network maps [0, 1] inputs to
``2x - 1`` itself (inside ``forward``, when neither ``rescaled`` nor ``logit_transform`` is set), and the
score is with respect to the data coordinate ``x``. ``logit_transform: true`` is not supported.

Architectures (``get_model`` of the reference runner, chosen by ``data.dataset``): CIFAR10, CELEBA ->
:class:`NCSNv2` (4 stages), LSUN -> NCSNv2Deeper (5 stages, 4 ngf deep), FFHQ -> NCSNv2Deepest (6
stages). A config for another data set names its architecture with ``model.arch`` (an extension of
this loader). The modules below are written from the published description so that their state-dict
keys and shapes are the reference modules': a released checkpoint loads with ``strict=True``.

Checkpoint (``torch.save`` of a list by the reference runner): ``[score.state_dict(),
optimizer.state_dict(), epoch, step]``, plus ``ema_helper.state_dict()`` when ``model.ema`` is on. The
model was wrapped in ``DataParallel``, so its keys start with ``module.``; the EMA state is a dict
parameter name -> tensor of the *unwrapped* model's parameters (no ``module.``, no ``sigmas`` buffer).
As the reference sampler does, the EMA weights are used when the config has ``model.ema: true``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CorruptFileError, InputError, unknown_name
from ..io import load_tensors

ARCHITECTURES = ("NCSNv2", "NCSNv2Deeper", "NCSNv2Deepest")
DATASET_ARCHITECTURES = {"CIFAR10": "NCSNv2", "CELEBA": "NCSNv2", "LSUN": "NCSNv2Deeper", "FFHQ": "NCSNv2Deepest"}
NONLINEARITIES = ("elu", "relu", "lrelu", "swish")
NORMALIZATIONS = ("InstanceNorm++",)  # every published config; the reference code's others are not supported
CONFIG_FIX = "pass --model-config FILE (the NCSNv2 YAML the checkpoint was trained with)"
_EPS = 1e-5  # the normalisation epsilon of the reference layers

# Stages of each architecture, shallow to deep: (name, input channels, output channels, first block
# resamples, dilation, refine block fed by this stage, that block's output channels), channels in units
# of ngf. A stage is two residual blocks; the refine chain runs deep to shallow, each block taking its
# stage's features and the deeper block's output (the deepest one only its stage: ``start``).
_STAGES = {
    "NCSNv2": [("res1", 1, 1, False, None, "refine4", 1), ("res2", 1, 2, True, None, "refine3", 1),
               ("res3", 2, 2, True, 2, "refine2", 2), ("res4", 2, 2, True, 4, "refine1", 2)],
    "NCSNv2Deeper": [("res1", 1, 1, False, None, "refine5", 1), ("res2", 1, 2, True, None, "refine4", 1),
                     ("res3", 2, 2, True, None, "refine3", 2), ("res4", 2, 4, True, 2, "refine2", 2),
                     ("res5", 4, 4, True, 4, "refine1", 4)],
    "NCSNv2Deepest": [("res1", 1, 1, False, None, "refine5", 1), ("res2", 1, 2, True, None, "refine4", 1),
                      ("res3", 2, 2, True, None, "refine3", 2), ("res31", 2, 2, True, None, "refine31", 2),
                      ("res4", 2, 4, True, 2, "refine2", 2), ("res5", 4, 4, True, 4, "refine1", 4)],
}


# ---------------------------------------------------------------------------------------------- layers

def _activation(name: str):
    if name == "elu":
        return nn.ELU()
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.2)
    return nn.SiLU()  # "swish": x sigmoid(x)


def _conv3(c_in: int, c_out: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class InstanceNorm2dPlus(nn.Module):
    """Instance normalisation that keeps the channel means' relative sizes (NCSNv2, "InstanceNorm++").

    With ``mu_c`` the spatial mean of channel c, ``m, v`` the mean and (unbiased) variance of the ``mu_c``
    over channels, and ``IN`` plain instance norm (eps 1e-5):
    ``out_c = gamma_c (IN(x)_c + alpha_c (mu_c - m) / sqrt(v + 1e-5)) + beta_c``.
    """

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(channels).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(channels).normal_(1, 0.02))
        self.beta = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=(2, 3))
        rel = (mu - mu.mean(-1, keepdim=True)) / torch.sqrt(mu.var(-1, keepdim=True) + _EPS)
        h = F.instance_norm(x, eps=_EPS) + (rel * self.alpha)[..., None, None]
        h = self.gamma[:, None, None] * h
        return h if self.beta is None else h + self.beta[:, None, None]


class ConvMeanPool(nn.Module):
    """A convolution followed by 2x2 mean pooling (the reference's down-sampling; even sizes only)."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """``shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))``.

    ``down`` without dilation halves the size (the second convolution and the shortcut mean-pool); with
    a dilation the reference keeps the size (dilated convolutions throughout, a dilated 3x3 shortcut).
    The shortcut is the identity when neither the channels nor the size change, else a convolution.
    """

    def __init__(self, c_in: int, c_out: int, act, down: bool = False, dilation: int | None = None):
        super().__init__()
        self.act = act
        self.normalize1 = InstanceNorm2dPlus(c_in)
        mid = c_in if down else c_out
        if dilation is not None:
            self.conv1 = _conv3(c_in, mid, dilation=dilation)
            self.conv2 = _conv3(mid, c_out, dilation=dilation)
            shortcut = _conv3(c_in, c_out, dilation=dilation)
        elif down:
            self.conv1 = _conv3(c_in, mid)
            self.conv2 = ConvMeanPool(mid, c_out, 3)
            shortcut = ConvMeanPool(c_in, c_out, 1)
        else:
            self.conv1 = _conv3(c_in, mid)
            self.conv2 = _conv3(mid, c_out)
            shortcut = nn.Conv2d(c_in, c_out, 1)
        self.normalize2 = InstanceNorm2dPlus(mid)
        if down or c_in != c_out:
            self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.normalize1(x)))
        h = self.conv2(self.act(self.normalize2(h)))
        return (self.shortcut(x) if hasattr(self, "shortcut") else x) + h


class RCUBlock(nn.Module):
    """Residual conv units: ``blocks`` times ``x <- x + conv_s(act(... conv_1(act(x))))`` with ``stages``
    bias-free 3x3 convolutions (named ``{block}_{stage}_conv``, 1-based, as the reference)."""

    def __init__(self, channels: int, blocks: int, stages: int, act):
        super().__init__()
        self.act, self.blocks, self.stages = act, blocks, stages
        for i in range(1, blocks + 1):
            for j in range(1, stages + 1):
                self.add_module(f"{i}_{j}_conv", _conv3(channels, channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.blocks + 1):
            h = x
            for j in range(1, self.stages + 1):
                h = getattr(self, f"{i}_{j}_conv")(self.act(h))
            x = x + h
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: ``x <- act(x)``, then ``p <- conv_k(maxpool5(p))``, ``x <- x + p`` per stage."""

    def __init__(self, channels: int, stages: int, act):
        super().__init__()
        self.act = act
        self.convs = nn.ModuleList(_conv3(channels, channels, bias=False) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = path = self.act(x)
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = x + path
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: each input through a 3x3 convolution, resized bilinearly (corners aligned)
    to the output size, summed."""

    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv3(c, channels) for c in in_channels)

    def forward(self, xs: list[torch.Tensor], size) -> torch.Tensor:
        out = 0
        for conv, x in zip(self.convs, xs):
            out = out + F.interpolate(conv(x), size=size, mode="bilinear", align_corners=True)
        return out


class RefineBlock(nn.Module):
    """RefineNet block: RCU(2x2) per input, fusion (MSF, unless ``start``: one input), CRP(2), RCU output
    units (3 blocks at the ``end`` of the chain, else 1)."""

    def __init__(self, in_channels: list[int], channels: int, act, start: bool = False, end: bool = False):
        super().__init__()
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2, act) for c in in_channels)
        self.output_convs = RCUBlock(channels, 3 if end else 1, 2, act)
        if not start:
            self.msf = MSFBlock(in_channels, channels)
        self.crp = CRPBlock(channels, 2, act)

    def forward(self, xs: list[torch.Tensor], size) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, size) if len(hs) > 1 else hs[0]
        return self.output_convs(self.crp(h))


# ---------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class NCSNv2Config:
    """What the network and its noise levels need from an NCSNv2 YAML config (``model.*``, ``data.*``)."""

    arch: str
    ngf: int
    num_classes: int
    sigma_begin: float
    sigma_end: float
    sigma_dist: str
    nonlinearity: str
    normalization: str
    channels: int
    image_size: int
    rescaled: bool
    ema: bool
    dataset: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def data_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.rescaled else (0.0, 1.0)

    def sigmas(self) -> torch.Tensor:
        """The L training levels, descending, float64, computed as the reference ``get_sigmas`` does
        (numpy in float64; the network's buffer is this cast to float32)."""
        begin, end, n = self.sigma_begin, self.sigma_end, self.num_classes
        if self.sigma_dist == "geometric":
            grid = np.exp(np.linspace(np.log(begin), np.log(end), n))
        else:
            grid = np.linspace(begin, end, n)
        return torch.from_numpy(np.asarray(grid, dtype=np.float64))


def _field(config: dict, section: str, key: str, kind, source: str, default=None):
    part = config.get(section)
    value = part.get(key, default) if isinstance(part, dict) else default
    if value is None:
        raise InputError(f"NCSNv2 config {source} has no {section}.{key}; {CONFIG_FIX}")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    elif kind is float:
        if isinstance(value, str):  # PyYAML reads 1e-2 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = {bool: "true or false", int: "an integer >= 1", float: "a finite number > 0", str: "a text"}[kind]
        raise InputError(f"NCSNv2 config {source}: {section}.{key} must be {expected}, got {value!r}")
    return value


def parse_ncsnv2_config(config: dict | str | Path) -> tuple[NCSNv2Config, dict]:
    """An NCSNv2 YAML config (a path, or its parsed dict) as an :class:`NCSNv2Config`, and the parsed dict.

    Missing or mistyped fields, an unknown architecture / nonlinearity / normalisation and
    ``data.logit_transform: true`` are :class:`InputError` naming the field."""
    if isinstance(config, (str, Path)):
        source = repr(str(config))
        path = Path(config)
        if not path.is_file():
            raise InputError(f"NCSNv2 config {source} does not exist; {CONFIG_FIX}")
        import yaml

        try:
            config = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"NCSNv2 config {source} is not valid YAML ({first}); {CONFIG_FIX}") from None
    else:
        source = "(given as a dict)"
    if not isinstance(config, dict):
        raise InputError(f"NCSNv2 config {source} is not a YAML mapping with model: and data: sections; {CONFIG_FIX}")
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if _field(config, "data", "logit_transform", bool, source):
        raise InputError(f"NCSNv2 config {source} has data.logit_transform: true, which is not supported "
                         "(only [0, 1] data, or [-1, 1] with data.rescaled: true)")
    arch = model.get("arch")
    if arch is None:
        dataset = data.get("dataset")
        if dataset not in DATASET_ARCHITECTURES:
            raise InputError(f"NCSNv2 config {source}: data.dataset {dataset!r} does not name an architecture "
                             f"(the reference code knows {', '.join(DATASET_ARCHITECTURES)}); add model.arch: one "
                             f"of {', '.join(ARCHITECTURES)}")
        arch = DATASET_ARCHITECTURES[dataset]
    elif arch not in ARCHITECTURES:
        raise unknown_name("NCSNv2 architecture (model.arch)", str(arch), ARCHITECTURES)
    nonlinearity = _field(config, "model", "nonlinearity", str, source).lower()
    if nonlinearity not in NONLINEARITIES:
        raise unknown_name("model.nonlinearity", nonlinearity, NONLINEARITIES)
    normalization = _field(config, "model", "normalization", str, source)
    if normalization not in NORMALIZATIONS:
        raise InputError(f"NCSNv2 config {source}: model.normalization {normalization!r} is not supported; "
                         f"supported: {', '.join(NORMALIZATIONS)}")
    sigma_dist = _field(config, "model", "sigma_dist", str, source, default="geometric")
    if sigma_dist not in ("geometric", "uniform"):
        raise unknown_name("model.sigma_dist", sigma_dist, ("geometric", "uniform"))
    parsed = NCSNv2Config(
        arch=arch, ngf=_field(config, "model", "ngf", int, source),
        num_classes=_field(config, "model", "num_classes", int, source),
        sigma_begin=_field(config, "model", "sigma_begin", float, source),
        sigma_end=_field(config, "model", "sigma_end", float, source), sigma_dist=sigma_dist,
        nonlinearity=nonlinearity, normalization=normalization,
        channels=_field(config, "data", "channels", int, source),
        image_size=_field(config, "data", "image_size", int, source),
        rescaled=_field(config, "data", "rescaled", bool, source),
        ema=_field(config, "model", "ema", bool, source), dataset=data.get("dataset"))
    if parsed.sigma_begin <= parsed.sigma_end and parsed.num_classes > 1:
        raise InputError(f"NCSNv2 config {source}: model.sigma_begin ({parsed.sigma_begin}) must exceed "
                         f"model.sigma_end ({parsed.sigma_end}): the levels run from large to small")
    downs = sum(1 for stage in _STAGES[arch] if stage[3] and stage[4] is None)
    if parsed.image_size % 2 ** downs:
        raise InputError(f"NCSNv2 config {source}: {arch} halves the image {downs} time(s); data.image_size "
                         f"{parsed.image_size} must be a multiple of {2 ** downs}")
    return parsed, config


# --------------------------------------------------------------------------------------------- network

class NCSNv2Net(nn.Module):
    """NCSNv2 / NCSNv2Deeper / NCSNv2Deepest (``config.arch``) with the reference modules' state-dict keys.

    ``forward(x, y)`` is the reference's discrete call: ``F(x) / sigmas[y]`` for integer levels y (the
    score at level y); :meth:`unscaled` is ``F(x)`` and :meth:`score` the continuous ``F(x) / sigma``.
    ``x``: images (B, C, H, W) on the data scale of ``config`` ([0, 1], or [-1, 1] when rescaled).
    """

    def __init__(self, config: NCSNv2Config):
        super().__init__()
        self.config = config
        ngf, act = config.ngf, _activation(config.nonlinearity)
        self.act = act
        self.register_buffer("sigmas", config.sigmas().float())
        self.begin_conv = _conv3(config.channels, ngf)
        self.normalizer = InstanceNorm2dPlus(ngf)
        self.end_conv = _conv3(ngf, config.channels)
        stages = _STAGES[config.arch]
        self.stage_names = [stage[0] for stage in stages]
        self.refine_names = [stage[5] for stage in stages]
        for name, c_in, c_out, down, dilation, _, _ in stages:
            self.add_module(name, nn.ModuleList([
                ResidualBlock(c_in * ngf, c_out * ngf, act, down=down, dilation=dilation),
                ResidualBlock(c_out * ngf, c_out * ngf, act, dilation=dilation)]))
        deeper = None  # output channels of the next deeper refine block
        for k in range(len(stages) - 1, -1, -1):
            _, _, c_out, _, _, refine, features = stages[k]
            inputs = [c_out * ngf] + ([] if deeper is None else [deeper])
            self.add_module(refine, RefineBlock(inputs, features * ngf, act, start=deeper is None, end=k == 0))
            deeper = features * ngf

    def unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x)``: the network before the division by the level."""
        h = 2 * x - 1 if not self.config.rescaled else x
        h = self.begin_conv(h)
        features = []
        for name in self.stage_names:
            for block in getattr(self, name):
                h = block(h)
            features.append(h)
        out = None
        for k in range(len(features) - 1, -1, -1):
            inputs = [features[k]] + ([] if out is None else [out])
            out = getattr(self, self.refine_names[k])(inputs, features[k].shape[2:])
        return self.end_conv(self.act(self.normalizer(out)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unscaled(x) / self.sigmas[y].view(-1, 1, 1, 1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``s(x, sigma) = F(x) / sigma`` for one level per image (shape (B,)) or one for all."""
        return self.unscaled(x) / torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


class NCSNv2Denoiser:
    """``D(x, sigma) = x + sigma^2 s(x, sigma) = x + sigma F(x)`` of an :class:`NCSNv2Net` (see the module
    docstring): ``x`` flat rows (B, C*H*W) or images (B, C, H, W), any float dtype (the network runs in its
    own); sigma a number, a 0-d tensor or one level per row; the result has x's shape and dtype."""

    def __init__(self, net: NCSNv2Net):
        self.net = net
        self.shape = net.config.shape

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        from ..denoisers import append_dims, sigma_batch

        if x.shape[1:] not in (self.shape, (math.prod(self.shape),)):
            raise InputError(f"the NCSNv2 model takes rows of {math.prod(self.shape)} values or images of shape "
                             f"{self.shape}, got a batch of shape {tuple(x.shape)}")
        sigma = sigma_batch(sigma, x)
        dtype = self.net.sigmas.dtype
        f = self.net.unscaled(x.reshape(x.shape[0], *self.shape).to(dtype)).reshape(x.shape).to(x.dtype)
        return x + append_dims(sigma, x.ndim) * f


# ---------------------------------------------------------------------------------------------- loading

def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _check_weights(weights, expected: dict, what: str, path: str) -> dict:
    """``weights`` (a state dict, ``module.`` prefixes stripped) checked against ``expected`` (name ->
    tensor): the same keys, tensors of the same shapes. The first offending key is named."""
    if not isinstance(weights, dict):
        raise CorruptFileError(f"{path!r}: the {what} is a {type(weights).__name__}, not a state dict; the file is "
                               "not an NCSNv2 checkpoint")
    stripped = {}
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CorruptFileError(f"{path!r}: the {what} holds {key!r}, which is not a named tensor; the file is "
                                   "damaged")
        stripped[_strip(key)] = value
    for key, value in expected.items():
        if key not in stripped:
            raise CorruptFileError(f"{path!r}: the {what} has no {key!r} (missing key); the checkpoint does not fit "
                                   f"the config's architecture, or it is damaged")
        if tuple(stripped[key].shape) != tuple(value.shape):
            raise CorruptFileError(f"{path!r}: {key!r} in the {what} has shape {tuple(stripped[key].shape)}, the "
                                   f"config's architecture needs {tuple(value.shape)}; pass the config the checkpoint "
                                   "was trained with")
    for key in stripped:
        if key not in expected:
            raise CorruptFileError(f"{path!r}: the {what} has an unexpected key {key!r}; the checkpoint does not fit "
                                   "the config's architecture, or it is damaged")
    return stripped


def is_ncsnv2_states(obj) -> bool:
    """Whether a loaded object has the shape of the reference runner's checkpoint list."""
    return isinstance(obj, (list, tuple)) and len(obj) in (4, 5) and isinstance(obj[0], dict)


def load_ncsnv2(path: str | Path, config: dict | str | Path | None, device: str | torch.device = "cpu",
                states=None) -> tuple[NCSNv2Net, dict]:
    """The network of an NCSNv2 checkpoint file, in eval mode without gradients, on ``device``.

    ``config``: the YAML the checkpoint was trained with (path or parsed dict); required. ``states``: the
    already loaded file (to read it once). Returns ``(net, info)`` with ``info``: ``config`` (the parsed
    YAML), ``arch``, ``ema`` (whether EMA weights were used), ``epoch``, ``step``. The stored ``sigmas``
    buffer must agree with the config's levels (a mismatched config is refused)."""
    path = str(path)
    if states is None:
        states = load_tensors(path, "NCSNv2 checkpoint", "pass the checkpoint.pth written by the NCSNv2 code")
    if not is_ncsnv2_states(states):
        if isinstance(states, dict) and states.get("format") == "dpmot-bench/denoiser-checkpoint":
            raise InputError(f"{path!r} is a dpmot-bench checkpoint, not an NCSNv2 one; load it without a model config")
        raise CorruptFileError(f"{path!r} is not an NCSNv2 checkpoint (the NCSNv2 code saves a list [state_dict, "
                               f"optimizer, epoch, step(, ema)]; this holds a {type(states).__name__})")
    if config is None:
        raise InputError(f"{path!r} is an NCSNv2 checkpoint and needs its config: {CONFIG_FIX}")
    parsed, raw = parse_ncsnv2_config(config)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        net = NCSNv2Net(parsed)
    weights = _check_weights(states[0], net.state_dict(), "model state dict", path)
    grid = parsed.sigmas().float()
    stored = weights["sigmas"]
    if not torch.allclose(stored.float(), grid, rtol=1e-5, atol=0):
        bad = int((stored.float() - grid).abs().argmax())
        raise InputError(f"{path!r} was trained with other noise levels than the config gives (level {bad}: "
                         f"{float(stored[bad]):.6g} stored, {float(grid[bad]):.6g} from sigma_begin, sigma_end, "
                         f"num_classes); {CONFIG_FIX}")
    net.load_state_dict(weights, strict=True)
    if parsed.ema:
        if len(states) < 5:
            raise InputError(f"{path!r} holds no EMA state (4 entries) but its config has model.ema: true; set "
                             "model.ema: false in the config to use the raw weights")
        params = dict(net.named_parameters())
        shadow = _check_weights(states[4], params, "EMA state", path)
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(shadow[name])
    net.to(device).eval().requires_grad_(False)
    epoch, step = states[2], states[3]
    info = {"config": raw, "arch": parsed.arch, "ema": parsed.ema, "parsed": asdict(parsed),
            "epoch": epoch if isinstance(epoch, int) else None, "step": step if isinstance(step, int) else None}
    return net, info
