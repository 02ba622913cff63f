"""Exceptions for bad input, and the small validators that raise them.

Every error a user can cause by passing something wrong is an :class:`InputError` (a ``ValueError``)
whose message says what is wrong and how to fix it. The CLI turns these into one line on stderr and exit
status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class InputError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


class UnknownNameError(InputError):
    """A name (dataset, sampler, solver, suite, ...) that is not one of the known ones."""


class ShapeError(InputError):
    """An array of the wrong shape."""


class NonFiniteError(InputError):
    """An array that holds NaN or infinity."""


class CorruptFileError(InputError):
    """A file that is missing, unreadable, or not in the expected format."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    return UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{name} contains NaN or infinity; pass finite values")
    return x


def check_points(x: torch.Tensor, name: str, dim: int | None = None, min_rows: int = 1) -> torch.Tensor:
    """Check that ``x`` is a finite (n, d) floating-point array with n >= min_rows (and d == dim)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ShapeError(f"{name} must have shape (n, d), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ShapeError(f"{name} must have {dim} columns (the data dimension), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ShapeError(f"{name} needs at least {min_rows} row(s), got {x.shape[0]}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point, got {x.dtype}")
    return check_finite(x, name)


def check_sigma(sigma: float | torch.Tensor, name: str = "sigma", allow_zero: bool = False) -> None:
    """Noise levels must be finite and positive (or >= 0 with ``allow_zero``)."""
    values = sigma.detach().flatten().tolist() if isinstance(sigma, torch.Tensor) else [float(sigma)]
    for value in values:
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise InputError(f"{name} must be finite and {bound}, got {value}")


def check_weights(weights: torch.Tensor, n: int, name: str = "weights", rtol: float = 1e-6) -> torch.Tensor:
    """Probability weights: shape (n,), finite, non-negative, summing to 1 within ``rtol``."""
    if weights.ndim != 1 or weights.shape[0] != n:
        raise ShapeError(f"{name} must have shape ({n},), got {tuple(weights.shape)}")
    check_finite(weights, name)
    if bool((weights < 0).any()):
        raise InputError(f"{name} must be non-negative")
    total = float(weights.double().sum())
    if abs(total - 1.0) > rtol * max(1, n) ** 0.5 + 1e-12:
        raise InputError(f"{name} must sum to 1, got {total:.9g}; normalise them first")
    return weights
