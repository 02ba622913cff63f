"""Named datasets. Each name is stable once released.

A :class:`Dataset` gives flat float32 rows, shape (n, dim), with integer labels (mode or class), through
``data(split, n)`` for the splits ``"train"`` and ``"heldout"``. GMM datasets are infinite: a split is a
fixed seeded stream in its own namespace (independent of any user seed), so ``data("train", n)`` is the first n rows of
that stream; ``mixture`` gives their exact structure (denoiser, score, modes). ``digits`` is finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    _finite: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def is_finite(self) -> bool:
        return self._finite is not None

    def size(self, split: str) -> int:
        """Number of rows in a finite split, or the default draw size of a GMM split."""
        _check_split(split)
        return len(self._finite(split)[1]) if self.is_finite else self.default_sizes[split]

    def data(self, split: str = "train", n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` rows of a split (all of a finite split, or the default size, when n is None)."""
        _check_split(split)
        n = self.size(split) if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be an integer >= 1, got {n!r}")
        if self.is_finite:
            x, y = self._finite(split)
            if n > len(y):
                raise InputError(f"{self.name} has {len(y)} {split} rows; asked for {n}")
            return torch.from_numpy(x[:n].copy()), torch.from_numpy(y[:n].copy())
        return self.mixture.sample(n, seed=_SPLIT_SEEDS[split], stream=_SPLIT_NAMESPACE)

    def sample(self, n: int, seed: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh rows of the true distribution (GMMs only; finite data sets have just their splits)."""
        if self.mixture is None:
            raise InputError(f"{self.name} is a finite data set; use data(split) instead of sample()")
        return self.mixture.sample(n, seed, start)


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
                   _finite=lambda s: split[s])


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
