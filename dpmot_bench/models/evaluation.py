"""How good is a denoiser? Its EDM-weighted denoising loss per noise level, with standard errors.

For the GMMs the exact denoiser's loss is the floor (the Bayes risk): a trained network's loss minus
the exact one's is its excess risk, ``E lambda |D_theta - D_exact|^2 / dim`` (the cross term vanishes
because ``D_exact = E[x_0 | x_sigma]``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..data import Dataset
from ..denoisers import Denoiser
from ..errors import InputError, check_sigma
from ..noise import SampleNoise
from .training import as_dataset

_EVAL_STREAM = (0xE7A1,)
_CHUNK_ROWS = 4096


class DenoisingLoss(NamedTuple):
    """Per-sigma mean of ``lambda(sigma) |D(x_0 + sigma eps, sigma) - x_0|^2 / dim`` and its standard error
    (float64, shape (S,)); ``lambda = (sigma^2 + sd^2) / (sigma sd)^2``."""

    sigmas: torch.Tensor
    loss: torch.Tensor
    stderr: torch.Tensor


def data_std(dataset: Dataset) -> float:
    """The data standard deviation ``sd`` (all coordinates pooled) of the default train split."""
    return float(dataset.data("train")[0].double().std())


def denoising_loss(denoiser: Denoiser, dataset: Dataset | str, sigmas, *, n: int = 4096, seed: int = 0,
                   split: str = "heldout", device: str | torch.device = "cpu",
                   sigma_data: float | None = None) -> DenoisingLoss:
    """The weighted denoising loss ``E lambda |D(x_0 + sigma eps, sigma) - x_0|^2 / dim`` of ``denoiser`` on
    ``n`` rows of ``split`` (capped at a finite split's size) at each noise level in ``sigmas``.

    The same rows and the same noise ``eps`` (row i from ``(seed, i)``) are used at every sigma and for
    every denoiser, so differences between two denoisers are paired comparisons. ``sigma_data`` (the
    weighting's sd) defaults to :func:`data_std`. The weighting keeps the loss O(1) across sigma: for the
    exact denoiser of data with a density it tends to 1 as sigma -> 0 and to about 1 as sigma -> infinity.
    """
    return _weighted_mse(lambda x0, x, sigma: x0, denoiser, dataset, sigmas, n, seed, split, device, sigma_data)


def denoiser_distance(denoiser: Denoiser, reference: Denoiser, dataset: Dataset | str, sigmas, *, n: int = 4096,
                      seed: int = 0, split: str = "heldout", device: str | torch.device = "cpu",
                      sigma_data: float | None = None) -> DenoisingLoss:
    """``E lambda |D(x, sigma) - D_ref(x, sigma)|^2 / dim`` over the same noisy rows as :func:`denoising_loss`.

    With ``reference`` the exact denoiser this is the excess risk ``loss(D) - loss(D_ref)``, estimated
    without the noise of ``x_0`` (so with a much smaller standard error than the difference of losses).
    """
    return _weighted_mse(lambda x0, x, sigma: reference(x, sigma), denoiser, dataset, sigmas, n, seed, split,
                         device, sigma_data)


@torch.no_grad()
def _weighted_mse(target, denoiser, dataset, sigmas, n, seed, split, device, sigma_data) -> DenoisingLoss:
    """Per-sigma mean and standard error of ``lambda |denoiser(x) - target(x_0, x, sigma)|^2 / dim``."""
    dataset = as_dataset(dataset)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if sigmas.numel() == 0:
        raise InputError("sigmas is empty; pass at least one noise level")
    check_sigma(sigmas, "sigmas")
    if n < 2:
        raise InputError(f"n must be >= 2 (for a standard error), got {n}")
    if dataset.is_finite:
        n = min(n, dataset.size(split))
    sd = data_std(dataset) if sigma_data is None else float(sigma_data)
    x0 = dataset.data(split, n)[0].to(device)
    eps = SampleNoise(seed, n, device=device, stream=_EVAL_STREAM).randn(dataset.dim)
    means, errors = [], []
    for sigma in sigmas.tolist():
        per_row = []
        for rows in (slice(i, i + _CHUNK_ROWS) for i in range(0, n, _CHUNK_ROWS)):
            x = x0[rows] + sigma * eps[rows]
            per_row.append(((denoiser(x, sigma) - target(x0[rows], x, sigma)).double() ** 2).mean(1))
        per_row = torch.cat(per_row) * (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        means.append(per_row.mean())
        errors.append(per_row.std() / n ** 0.5)
    return DenoisingLoss(sigmas, torch.stack(means).cpu(), torch.stack(errors).cpu())
