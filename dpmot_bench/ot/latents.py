"""DPM-OT's targets: data latents ``y_i = x_i + sigma_star * eps_i``, and fitting the map to them.

``eps_i`` is row i of ``SampleNoise(seed, n, stream=LATENT_STREAM)``: the latents of a split depend only
on (dataset, split, sigma_star, seed) and row i only on i (not on how many latents are drawn).
"""
from __future__ import annotations

import torch

from ..errors import check_sigma, unknown_name
from ..noise import SampleNoise
from .estimator import SemiDiscreteOT
from .sources import SOURCE_KINDS, GaussianSource, Source, UniformSource

LATENT_STREAM = (0xD9307, 1)  # SampleNoise stream of the latent noise eps_i: row i is target i's noise


def dataset_latents(dataset, sigma_star: float, split: str = "heldout", n: int | None = None,
                    seed: int = 0) -> torch.Tensor:
    """``x_i + sigma_star * eps_i`` for the first n rows of a dataset split (held-out by default, as the
    reference code), float32 (n, dim)."""
    check_sigma(sigma_star, "sigma_star", allow_zero=True)
    x, _ = dataset.data(split, n)
    return x + float(sigma_star) * SampleNoise(seed, x.shape[0], stream=LATENT_STREAM).randn(x.shape[1])


def data_range(dataset, split: str = "heldout") -> tuple[float, float]:
    """``(min, max)`` over all coordinates of a split: the box of the uniform source (and the paper preset's
    data scale)."""
    x, _ = dataset.data(split)
    return float(x.min()), float(x.max())


def default_source(kind: str, dataset, split: str = "heldout") -> Source:
    """White noise ``N(0, 1)`` per coordinate, or the uniform cube spanning the data's range (for the
    digits images, [-1, 1]; the reference code's source is uniform on the pixel range)."""
    if kind == "gaussian":
        return GaussianSource(dataset.dim)
    if kind == "uniform":
        return UniformSource(dataset.dim, *data_range(dataset, split))
    raise unknown_name("source", kind, SOURCE_KINDS)


def fit_dataset_map(dataset, sigma_star: float, source: Source, solver: str, split: str = "heldout",
                    n_targets: int | None = None, seed: int = 0, eval_samples: int = 2**20, **ot_params
                    ) -> tuple[SemiDiscreteOT, dict]:
    """Fit the semi-discrete map from ``source`` to the dataset's latents; return it and the summary of
    DESIGN.md (accuracy measured on ``eval_samples`` independent source points)."""
    targets = dataset_latents(dataset, sigma_star, split, n_targets, seed)
    ot = SemiDiscreteOT(source, solver=solver, seed=seed, **ot_params).fit(targets)
    accuracy = ot.mass_errors(eval_samples, seed=seed)
    summary = {"dataset": dataset.name, "split": split, "sigma_star": float(sigma_star), "solver": solver,
               "source": source.to_meta(), "seed": seed, "n_targets": targets.shape[0], "dim": targets.shape[1],
               "iterations": ot.n_iter_, "seconds": round(ot.fit_seconds_, 3),
               "l1_mass_error": accuracy["l1_mass_error"], "max_rel_mass_error": accuracy["max_rel_mass_error"],
               "empty_cells": accuracy["empty_cells"], "n_source_samples": ot.n_source_samples_,
               "eval_samples": eval_samples, "l1_noise_floor": accuracy["l1_noise_floor"],
               "converged": ot.converged_}
    return ot, summary
