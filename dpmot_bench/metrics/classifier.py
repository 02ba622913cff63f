"""A small CNN trained on the digits TRAIN split only: softmax probabilities for the mode-mixture rule
and penultimate-layer features for a Frechet distance on digits (the role InceptionV3 plays for
CIFAR-10 in the reference code).

Training is deterministic given the config (CPU, seeded initialisation, shuffling and augmentation from
one seeded generator; the caller's global RNG state is left untouched) and cached on disk under
``$DPMOT_CACHE/classifiers/digits-<config_key>.pt``, written atomically and loaded with
``torch.load(weights_only=True)``. The held-out accuracy is recomputed on every load.
"""
from __future__ import annotations

import time
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from ..cache import cache_dir, config_key
from ..data import get_dataset
from ..errors import InputError, ShapeError
from ..io import atomic_path
from ..threads import one_cpu_thread
from ._points import as_points

DEFAULT_CONFIG = {"seed": 0, "epochs": 30, "batch_size": 64, "lr": 2e-3, "width": 32, "features": 128,
                  "max_shift": 1}
_REVISION = "digits-cnn/2"  # part of the cache key: change it whenever the network or its training changes
_EVAL_ROWS = 4096


class DigitsClassifier(nn.Module):
    """conv(1->w) pool conv(w->2w) pool -> linear(8w->features) = features -> relu linear(features->10).

    The features are the penultimate layer before its ReLU: dense, so their covariance has full rank
    (after the ReLU, units that never fire would make it singular). Inputs are digits rows (n, 64) or
    images (n, 1, 8, 8) scaled to [-1, 1]."""

    def __init__(self, width: int = 32, features: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * width, features))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(features, 10))
        self.heldout_accuracy: float | None = None
        self.training_seconds: float | None = None  # None when loaded from the cache

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    def _images(self, x) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            if tuple(x.shape[1:]) != (1, 8, 8):
                raise ShapeError(f"digit images must have shape (n, 1, 8, 8), got {tuple(x.shape)}")
            x = x.reshape(x.shape[0], 64)
        device = next(self.parameters()).device
        return as_points(x, "digits", dim=64, device=device, dtype=torch.float32).reshape(-1, 1, 8, 8)

    @torch.no_grad()
    def _evaluate(self, fn, x) -> torch.Tensor:
        out_device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
        images = self._images(x)
        was_training = self.training
        self.eval()
        out = torch.cat([fn(images[i:i + _EVAL_ROWS]) for i in range(0, images.shape[0], _EVAL_ROWS)])
        self.train(was_training)
        return out.to(out_device)

    def probs(self, x) -> torch.Tensor:
        """Softmax class probabilities, (n, 10) float32."""
        return self._evaluate(lambda im: torch.softmax(self(im), 1), x)

    def features(self, x) -> torch.Tensor:
        """Penultimate-layer pre-activations for Frechet distances, (n, features) float32."""
        return self._evaluate(self.body, x)

    def predict(self, x) -> torch.Tensor:
        """Most probable class, (n,) int64."""
        return self._evaluate(lambda im: self(im).argmax(1), x)

    def accuracy(self, x, labels) -> float:
        labels = torch.as_tensor(labels)
        return float((self.predict(x).cpu() == labels.cpu()).double().mean())


def _shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y (zero = background -1 padding)."""
    if max_shift == 0:
        return images
    windows = nn.functional.pad(images, (max_shift,) * 4, value=-1.0).unfold(2, 8, 1).unfold(3, 8, 1)
    i, j = torch.randint(0, 2 * max_shift + 1, (2, images.shape[0]), generator=generator)
    return windows[torch.arange(images.shape[0]), :, i, j]  # (n, 1, 8, 8)


def train_digits_classifier(config: dict | None = None, progress: bool = False) -> DigitsClassifier:
    """Train on the digits train split only (CPU, one thread, deterministic given ``config``): Adam with a
    cosine learning-rate decay, cross-entropy, random shifts of up to ``max_shift`` pixels."""
    config = _full_config(config)
    digits = get_dataset("digits")
    x, y = digits.data("train")
    images = x.reshape(-1, 1, 8, 8)
    generator = torch.Generator().manual_seed(config["seed"])
    start = time.perf_counter()
    # enable_grad: training may be asked for lazily from inside a caller's no_grad block.
    with torch.random.fork_rng(devices=[]), one_cpu_thread(), torch.enable_grad():
        torch.manual_seed(config["seed"])
        model = DigitsClassifier(config["width"], config["features"])
        optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config["epochs"])
        model.train()
        for _ in tqdm(range(config["epochs"]), desc="digits classifier", disable=not progress, leave=False):
            for batch in torch.randperm(len(y), generator=generator).split(config["batch_size"]):
                shifted = _shift(images[batch], config["max_shift"], generator)
                loss = nn.functional.cross_entropy(model(shifted), y[batch])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            schedule.step()
    model.eval()
    model.training_seconds = time.perf_counter() - start
    return model




def _full_config(config: dict | None) -> dict:
    unknown = set(config or {}) - set(DEFAULT_CONFIG)
    if unknown:
        raise InputError(f"unknown classifier config keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    return {**DEFAULT_CONFIG, **(config or {})}


def classifier_cache_path(config: dict | None = None):
    """Where the classifier of ``config`` (defaults filled in) is cached."""
    return cache_dir("classifiers") / f"digits-{config_key({'model': _REVISION, **_full_config(config)})}.pt"


def get_digits_classifier(device: str | torch.device = "cpu", progress: bool = False,
                          config: dict | None = None) -> DigitsClassifier:
    """The cached digits classifier (trained on first use, ~6 s on one CPU core), on ``device``, with
    ``heldout_accuracy`` measured on the held-out split."""
    config = _full_config(config)
    path = classifier_cache_path(config)
    model = None
    if path.exists():
        try:
            model = DigitsClassifier(config["width"], config["features"])
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as err:  # a damaged cache entry is retrained, never trusted
            warnings.warn(f"retraining the digits classifier: cache entry {path} is unreadable ({err})",
                          RuntimeWarning, stacklevel=2)
            model = None
    if model is None:
        model = train_digits_classifier(config, progress=progress)
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    model = model.to(device).eval()
    x, y = get_dataset("digits").data("heldout")
    model.heldout_accuracy = model.accuracy(x.to(device), y)
    return model


class TorchScriptClassifier:
    """A user's image classifier from a TorchScript file, for the mode-mixture rule on any data.

    ``TorchScriptClassifier(path, device, batch_size)`` loads ``path`` with ``torch.jit.load(path,
    map_location=device)``. TorchScript is a restricted program format (TorchScript code and tensors, run
    by torch's interpreter), not a pickle of Python objects: loading it imports no Python module and builds
    no Python object. It is still a program that runs when called: use files you trust. Make one with
    ``torch.jit.script(model).save(path)`` (or ``torch.jit.trace``). A file that is not TorchScript (a
    ``torch.save`` state dict, a pickle, garbage) is a one-line CorruptFileError.

    The module must map a batch of images, exactly as passed to :meth:`probs` (float32, on ``device``,
    at most ``batch_size`` rows), to **logits** of shape (n, classes), classes >= 2; :meth:`probs` applies
    the softmax, ``p_ik = exp(z_ik) / sum_j exp(z_ij)``. Then ``mode_mixture_ratio(probs, lam)`` (the
    reference code's rule: mode-mixed when at least two classes have softmax >= lam) and
    ``mode_mixture_curve`` apply unchanged."""

    def __init__(self, path, device: str | torch.device = "cpu", batch_size: int = 256):
        from pathlib import Path

        from ..devices import as_device
        from ..errors import CorruptFileError

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.path, self.device, self.batch_size = Path(path), as_device(device), batch_size
        fix = "pass a TorchScript file (torch.jit.script(model).save(path)) whose module returns logits (n, classes)"
        if not self.path.is_file():
            what = "is a directory, not a file" if self.path.is_dir() else "does not exist"
            raise CorruptFileError(f"classifier file {str(self.path)!r} {what}; {fix}")
        try:
            with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript in favour of torch.export
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location=self.device)
        except Exception as err:  # RuntimeError ("not a TorchScript archive", ...), ValueError, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CorruptFileError(f"classifier file {str(self.path)!r} is not a TorchScript archive "
                                   f"({type(err).__name__}: {first[:120]}); {fix}") from None
        self.module.eval()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The module's outputs (n, classes) float32, in batches of ``batch_size``; checked: a tensor of
        shape (n, classes >= 2) per batch, finite."""
        from ..errors import NonFiniteError

        if not isinstance(images, torch.Tensor) or images.ndim < 2 or images.shape[0] == 0:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ShapeError(f"images must be a tensor (n, ...) with n >= 1, got {shape}")
        out, classes = [], None
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device, torch.float32)
            try:
                z = self.module(batch)
            except Exception as err:  # the module's own checks (wrong image size, ...)
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"classifier {self.path.name!r} failed on images of shape "
                                 f"{tuple(batch.shape)}: {first[:200]}") from None
            if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != batch.shape[0] or z.shape[1] < 2 \
                    or (classes is not None and z.shape[1] != classes):
                got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise ShapeError(f"classifier {self.path.name!r} must return logits of shape ({batch.shape[0]}, "
                                 f"classes >= 2) for a batch of {batch.shape[0]}, got {got}")
            classes = z.shape[1]
            z = z.float()
            if not bool(torch.isfinite(z).all()):
                raise NonFiniteError(f"classifier {self.path.name!r} returned NaN or infinite logits")
            out.append(z)
        return torch.cat(out)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (n, classes) float32 of the module's logits (rows sum to 1)."""
        return torch.softmax(self.logits(images), dim=1)
