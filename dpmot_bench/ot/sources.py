"""Source measures of the semi-discrete OT problem: a Gaussian and a uniform cube, each with a scale.

A source gives three kinds of draws:

- ``sample(m, generator)``: Monte-Carlo draws for the solvers, on the generator's device;
- ``from_unit_cube(u)``: the image of points of [0, 1)^dim under the inverse CDF, for quasi-Monte Carlo
  (scrambled Sobol points, see ``sampling.py``);
- ``draw(noise)``: draws from a :class:`~dpmot_bench.noise.SampleNoise`, i.e. row ``i`` depends only on the
  sampling seed and ``i`` (what samplers use).

Every coordinate is independent with the same law, so ``to_meta()`` stores scalars (DESIGN.md contract).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..noise import SampleNoise

NDTRI_LOW = -8.222082216130435  # ndtri(1e-16): where a Gaussian source maps a quasi-random coordinate of exactly 0


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InputError(f"source dim must be a positive integer, got {dim!r}")
    return dim


def _check_number(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"source {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"source {name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class GaussianSource:
    """``N(mean, std^2)`` independently in each of ``dim`` coordinates."""

    dim: int
    mean: float = 0.0
    std: float = 1.0
    kind = "gaussian"

    def __post_init__(self):
        _check_dim(self.dim)
        object.__setattr__(self, "mean", _check_number(self.mean, "mean"))
        object.__setattr__(self, "std", _check_number(self.std, "std"))
        if self.std <= 0:
            raise InputError(f"gaussian source std must be > 0, got {self.std}")

    @property
    def coordinate_std(self) -> float:
        return self.std

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        x = torch.randn(m, self.dim, generator=generator, device=generator.device)
        return x.mul_(self.std).add_(self.mean)

    def from_unit_cube(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF of float64 points u in [0, 1) (overwritten), as float32, with 0 mapped to
        ``ndtri(1e-16)``: ``sqrt(2) erfinv(2 u - 1)``, which is exact in its argument for Sobol points
        (multiples of 2^-30) and about twice as fast as ``ndtri`` on CPUs."""
        x = torch.special.erfinv(u.mul_(2).sub_(1)).mul_(math.sqrt(2) * self.std).add_(self.mean).float()
        return x.nan_to_num_(neginf=NDTRI_LOW * self.std + self.mean)

    def draw(self, noise: SampleNoise) -> torch.Tensor:
        return noise.randn(self.dim).mul_(self.std).add_(self.mean)

    def to_meta(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class UniformSource:
    """Uniform on the cube ``[low, high]^dim``."""

    dim: int
    low: float = 0.0
    high: float = 1.0
    kind = "uniform"

    def __post_init__(self):
        _check_dim(self.dim)
        object.__setattr__(self, "low", _check_number(self.low, "low"))
        object.__setattr__(self, "high", _check_number(self.high, "high"))
        if not self.low < self.high:
            raise InputError(f"uniform source needs low < high, got [{self.low}, {self.high}]")

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def coordinate_std(self) -> float:
        return (self.high - self.low) / math.sqrt(12)

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(m, self.dim, generator=generator, device=generator.device)
        return u.mul_(self.high - self.low).add_(self.low)

    def from_unit_cube(self, u: torch.Tensor) -> torch.Tensor:
        return (u * (self.high - self.low)).add_(self.low).float()

    def draw(self, noise: SampleNoise) -> torch.Tensor:
        return noise.rand(self.dim).mul_(self.high - self.low).add_(self.low)

    def to_meta(self) -> dict:
        return {"kind": self.kind, "low": self.low, "high": self.high}


Source = GaussianSource | UniformSource
SOURCE_KINDS = ("gaussian", "uniform")


def source_from_meta(meta: dict, dim: int) -> Source:
    """The source described by ``to_meta()`` output (as stored in an OT file) in ``dim`` dimensions."""
    if not isinstance(meta, dict) or meta.get("kind") not in SOURCE_KINDS:
        kind = meta.get("kind") if isinstance(meta, dict) else meta
        raise InputError(f"unknown source {kind!r}; a source is a dict with kind one of: {', '.join(SOURCE_KINDS)}")
    keys = ("mean", "std") if meta["kind"] == "gaussian" else ("low", "high")
    missing = [key for key in keys if key not in meta]
    if missing:
        raise InputError(f"{meta['kind']} source description lacks {', '.join(missing)}")
    cls = GaussianSource if meta["kind"] == "gaussian" else UniformSource
    return cls(dim, *(meta[key] for key in keys))
