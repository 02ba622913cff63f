"""DPM-OT's targets: data latents ``y_i = x_i + sigma_star * eps_i``, and the one function fitting a map to them.

``eps_i`` is row i of ``SampleNoise(seed, n, stream=LATENT_STREAM)``: the latents of a split depend only
on (dataset, split, sigma_star, seed) and row i only on i (not on how many latents are drawn).

A fitted latent map is a :class:`~dpmot_bench.ot.SemiDiscreteOT` whose ``meta_`` holds the latents'
provenance in one schema (:data:`LATENT_KEYS`, ``schema`` = :data:`LATENT_SCHEMA`); :func:`fit_latent_map`
writes it (``dpmot fit-ot``, the presets and the benchmarks all call it), :func:`check_latent_map` reads it
(``dpmot sample --ot``, the samplers and the report).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, ShapeError, check_sigma, unknown_name
from ..noise import SampleNoise
from .estimator import DEFAULT_SOLVER, SemiDiscreteOT
from .sources import SOURCE_KINDS, GaussianSource, Source, UniformSource

LATENT_STREAM = (0xD9307, 1)  # SampleNoise stream of the latent noise eps_i: row i is target i's noise
LATENT_SCHEMA = "dpmot-latents/2"
# What a latent map's meta_ holds besides the OT file's own keys: enough to redraw every latent.
LATENT_KEYS = ("schema", "dataset", "split", "sigma_star", "n_latents", "latent_seed", "latent_stream", "data_range",
               "classes")


def dataset_latents(dataset, sigma_star: float, split: str = "heldout", n: int | None = None,
                    seed: int = 0, classes=None) -> torch.Tensor:
    """``x_i + sigma_star * eps_i`` for the first n rows of a dataset split (held-out by default, as the
    reference code), float32 (n, dim). ``classes`` (a set of labels) keeps only the split's rows of those
    classes, in split order, before the first n are taken (a class-conditional map: DPM-OT for a prompt);
    ``eps_i`` is then row i of the kept rows."""
    check_sigma(sigma_star, "sigma_star", allow_zero=True)
    if classes is None:
        x, _ = dataset.data(split, n)
    else:
        x, labels = dataset.data(split)
        x = x[torch.isin(labels.long(), torch.tensor(check_classes(classes, dataset), dtype=torch.long))][:n]
        if x.shape[0] < 2:
            raise InputError(f"the {split} split of {dataset.name} has {x.shape[0]} row(s) of classes "
                             f"{check_classes(classes, dataset)}; a map needs at least 2 latents")
    latents = x + float(sigma_star) * SampleNoise(seed, x.shape[0], stream=LATENT_STREAM).randn(x.shape[1])
    if not bool(torch.isfinite(latents).all()):
        raise InputError(f"sigma_star={sigma_star:g} overflows the float32 latents; use a noise level below 1e30")
    return latents


def check_classes(classes, dataset) -> list[int]:
    """``classes`` as a sorted list of distinct labels of ``dataset``; a one-line InputError otherwise."""
    n_classes = getattr(dataset, "n_classes", None)
    if not n_classes:
        raise InputError(f"{dataset.name} has no class labels, so it has no class-conditional maps")
    items = list(classes) if isinstance(classes, (list, tuple, set, frozenset)) else None
    if not items or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in items):
        raise InputError(f"classes must be a non-empty set of integer labels, got {classes!r}")
    values = sorted({int(c) for c in items})
    unknown = [c for c in values if not 0 <= c < n_classes]
    if unknown:
        raise InputError(f"unknown class {unknown[0]} for {dataset.name}; classes are 0..{n_classes - 1}")
    return values


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


def fit_latent_map(dataset, sigma_star: float, *, source: str | Source = "gaussian", split: str = "heldout",
                   n_latents: int | None = None, seed: int = 0, solver: str = DEFAULT_SOLVER,
                   solver_options: dict | None = None, device: str | torch.device = "cpu", progress: bool = False,
                   checkpoint: str | Path | None = None, classes=None, **meta) -> SemiDiscreteOT:
    """Fit the semi-discrete map from ``source`` (a kind of :func:`default_source`, or a Source) to the
    latents of the first ``n_latents`` rows of ``split`` (all by default) at ``sigma_star``, latent noise
    drawn with ``seed``. Returns the fitted map; its ``meta_`` holds :data:`LATENT_KEYS` and ``meta``
    (e.g. the preset and NFE that asked for it), and is what :meth:`SemiDiscreteOT.save` writes. ``classes``:
    only the rows of those labels (:func:`dataset_latents`); the source's box (uniform) and ``data_range``
    stay those of the whole split."""
    if isinstance(source, str):
        source = default_source(source, dataset, split)
    latents = dataset_latents(dataset, sigma_star, split, n_latents, seed, classes)
    ot_map = SemiDiscreteOT(source, solver=solver, seed=seed, device=device, progress=progress,
                            checkpoint=checkpoint, **(solver_options or {})).fit(latents)
    ot_map.meta_ = {"schema": LATENT_SCHEMA, "dataset": dataset.name, "split": split, "sigma_star": float(sigma_star),
                    "n_latents": latents.shape[0], "latent_seed": seed, "latent_stream": list(LATENT_STREAM),
                    "data_range": list(data_range(dataset, split)),
                    "classes": None if classes is None else check_classes(classes, dataset), **meta}
    return ot_map


def check_latent_map(ot_map, dataset) -> dict:
    """The latent provenance of ``ot_map`` (its ``meta_``), after checking that it is a fitted latent map
    for ``dataset`` in the current schema; an InputError saying how to get one otherwise."""
    meta = getattr(ot_map, "meta_", None)
    if not hasattr(ot_map, "h_") or not isinstance(meta, dict):
        raise InputError("the OT map must be fitted by fit_latent_map() (dpmot fit-ot, a preset's fit) or "
                         "loaded with SemiDiscreteOT.load()")
    if meta.get("schema") != LATENT_SCHEMA:
        raise InputError(f"the OT map has no latent provenance of schema {LATENT_SCHEMA!r} (an older file, or a "
                         "map fitted to other targets); refit it with dpmot fit-ot")
    if meta.get("dataset") != dataset.name:
        raise InputError(f"the OT map was fitted for dataset {meta.get('dataset')!r}, not {dataset.name!r}; "
                         "fit one for this dataset (or omit --ot)")
    if ot_map.targets_.shape[1] != dataset.dim:
        raise ShapeError(f"the OT map's targets have {ot_map.targets_.shape[1]} dimensions but {dataset.name} "
                         f"has {dataset.dim}")
    sigma_star, low_high = meta.get("sigma_star"), meta.get("data_range")
    if isinstance(sigma_star, bool) or not isinstance(sigma_star, (int, float)) or not math.isfinite(sigma_star) \
            or sigma_star < 0:
        raise InputError(f"the OT map's meta has no valid sigma_star (got {sigma_star!r}); refit it")
    if not (isinstance(low_high, list) and len(low_high) == 2 and all(isinstance(v, (int, float)) and
                                                                      math.isfinite(v) for v in low_high)
            and low_high[0] < low_high[1]):
        raise InputError(f"the OT map's meta has no valid data_range [low, high] (got {low_high!r}); refit it")
    return meta
