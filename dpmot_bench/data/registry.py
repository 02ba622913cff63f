"""Named datasets. Each name is stable once released.

A :class:`Dataset` gives flat float32 rows, shape (n, dim), with integer labels (mode or class), through
``data(split, n)`` for the splits ``"train"`` and ``"heldout"``. A user's own data comes through
:func:`~dpmot_bench.data.files.from_array` / :func:`~dpmot_bench.data.files.from_path` as the same class. GMM datasets are infinite: a split is a
fixed seeded stream in its own namespace (independent of any user seed), so ``data("train", n)`` is the first n rows of
that stream; ``mixture`` gives their exact structure (denoiser, score, modes). ``digits`` is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..errors import InputError, unknown_name
from .digits import IMAGE_SHAPE, load_digits_split
from .gmm import GaussianMixture

SPLITS = ("train", "heldout")
_SPLIT_SEEDS = {"train": 0, "heldout": 1}
_SPLIT_NAMESPACE = (0x5EED, 0xDA7A)  # SampleNoise stream of the fixed splits


@dataclass
class Dataset:
    name: str
    description: str
    dim: int
    shape: tuple[int, ...]  # shape of one sample (images: (C, H, W)); rows are flat
    n_classes: int
    mixture: GaussianMixture | None = None  # exact structure, for GMM datasets
    default_sizes: dict = field(default_factory=lambda: {"train": 10_000, "heldout": 2_000})
    # finite data: split -> (rows, labels); rows any array-like whose slices give (k, dim) arrays (a view of
    # a memory-mapped file is fine: data() converts only the rows it returns)
    splits: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None
    value_range: tuple[float, float] | None = None  # the range the rows lie in (None: unbounded, GMMs)
    fingerprint: str | None = None  # content hash of a user's data (cache keys of models trained on it)

    @property
    def is_finite(self) -> bool:
        return self.splits is not None

    def size(self, split: str) -> int:
        """Number of rows in a finite split, or the default draw size of a GMM split."""
        _check_split(split)
        return len(self.splits(split)[1]) if self.is_finite else self.default_sizes[split]

    def data(self, split: str = "train", n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` rows of a split (all of a finite split, or the default size, when n is None)."""
        _check_split(split)
        n = self.size(split) if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be an integer >= 1, got {n!r}")
        if self.is_finite:
            x, y = self.splits(split)
            if n > len(y):
                raise InputError(f"{self.name} has {len(y)} {split} rows; asked for {n}")
            rows = np.array(x[:n], dtype=np.float32).reshape(n, self.dim)  # always a copy
            return torch.from_numpy(rows), torch.from_numpy(np.array(y[:n], dtype=np.int64))
        return self.mixture.sample(n, seed=_SPLIT_SEEDS[split], stream=_SPLIT_NAMESPACE)

    def rescaled(self, low: float, high: float) -> "Dataset":
        """This finite data set with its rows mapped affinely from ``value_range`` onto ``[low, high]`` (a
        model's own data range: diffusers' (-1, 1), NCSNv2's (0, 1)); the same object when they agree."""
        if not self.is_finite or self.value_range is None:
            raise InputError(f"{self.name} has no bounded value range to map onto [{low:g}, {high:g}]")
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InputError(f"a data range needs finite low < high, got [{low}, {high}]")
        if tuple(map(float, self.value_range)) == (float(low), float(high)):
            return self
        (a, b), splits = self.value_range, self.splits
        scale = (high - low) / (b - a)
        mapped = {}

        def rows(split):
            if split not in mapped:
                x, y = splits(split)
                mapped[split] = (_Affine(x, scale, low - a * scale), y)
            return mapped[split]

        return replace(self, description=f"{self.description}; rows mapped from [{a:g}, {b:g}] to [{low:g}, {high:g}]",
                       splits=rows, value_range=(float(low), float(high)))

    def sample(self, n: int, seed: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh rows of the true distribution (GMMs only; finite data sets have just their splits)."""
        if self.mixture is None:
            raise InputError(f"{self.name} is a finite data set; use data(split) instead of sample()")
        return self.mixture.sample(n, seed, start)


class _Affine:
    """Rows ``scale * x + shift`` of an array-like, computed per slice (a memory-mapped file stays mapped)."""

    def __init__(self, rows, scale: float, shift: float):
        self.rows, self.scale, self.shift = rows, scale, shift

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return np.asarray(self.rows[index], dtype=np.float32) * np.float32(self.scale) + np.float32(self.shift)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)


def gmm_grid25() -> Dataset:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    means = torch.cartesian_prod(ticks, ticks)
    return Dataset("gmm-grid25", "2-D mixture of 25 Gaussians on the grid {-4,-2,0,2,4}^2, std 0.05",
                   dim=2, shape=(2,), n_classes=25, mixture=GaussianMixture(means, 0.05))


def gmm_ring8() -> Dataset:
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return Dataset("gmm-ring8", "2-D mixture of 8 Gaussians on the unit circle, std 0.01",
                   dim=2, shape=(2,), n_classes=8, mixture=GaussianMixture(means, 0.01))


HD_DIM, HD_MODES, HD_RADIUS, HD_STD = 32, 10, 3.0, 0.1


def gmm_hd() -> Dataset:
    # Fixed means: random directions (seed 2023) scaled to radius 3; nearest pair > 3.3 apart versus a
    # within-mode radius of 0.1 * sqrt(32) ~ 0.57.
    directions = np.random.default_rng(2023).standard_normal((HD_MODES, HD_DIM))
    means = HD_RADIUS * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return Dataset("gmm-hd", f"{HD_DIM}-D mixture of {HD_MODES} well-separated Gaussians (means on a "
                   f"sphere of radius {HD_RADIUS:g}), std {HD_STD:g}", dim=HD_DIM, shape=(HD_DIM,),
                   n_classes=HD_MODES, mixture=GaussianMixture(torch.from_numpy(means), HD_STD))


def digits() -> Dataset:
    split = load_digits_split()
    return Dataset("digits", "scikit-learn 8x8 digits scaled to [-1, 1] (64-D), 10 classes; stratified "
                   "split 1347 train / 450 held-out", dim=64, shape=IMAGE_SHAPE, n_classes=10,
                   splits=lambda s: split[s], value_range=(-1.0, 1.0))


_FACTORIES: dict[str, Callable[[], Dataset]] = {
    "gmm-grid25": gmm_grid25,
    "gmm-ring8": gmm_ring8,
    "gmm-hd": gmm_hd,
    "digits": digits,
}


def dataset_names() -> list[str]:
    return list(_FACTORIES)


def get_dataset(name: str) -> Dataset:
    """The dataset called ``name`` (see :func:`dataset_names`)."""
    if name not in _FACTORIES:
        raise unknown_name("dataset", name, _FACTORIES)
    return _FACTORIES[name]()
