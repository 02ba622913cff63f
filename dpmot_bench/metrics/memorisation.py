"""Memorisation: how close generated samples sit to the points a sampler could copy.

For each sample: the distance to its nearest OT target (the latents DPM-OT maps onto) and to its nearest
training point. The baseline is the same distance for fresh data: held-out points to the training set.
Two copy rules, both reported:

- **threshold**: a sample is a copy when its nearest-neighbour distance is below ``threshold``. The
  default threshold is the ``quantile`` (1%) quantile of the held-out-to-train distances, so new data
  from the true distribution is "a copy" at rate ~1% by construction, and a rate well above that means
  copying. The same threshold is applied to the distances to the OT targets.
- **ratio test** (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to
  memorize"): a sample is a copy when ``d(x, NN_1) < ratio * d(x, NN_2)`` with ratio 1/3, i.e. it is
  much closer to one reference point than to any other; it needs no baseline and no scale. An exact
  copy (``d(x, NN_1) = 0``) counts even when the reference point is duplicated.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ._points import as_points, knn_distances, same_dim

DEFAULT_QUANTILE = 0.01
DEFAULT_RATIO = 1 / 3


def _copies(nearest: torch.Tensor, threshold: float | None, ratio: float) -> tuple[float | None, float]:
    d1, d2 = nearest[:, 0], nearest[:, 1]
    by_threshold = None if threshold is None else float((d1 < threshold).double().mean())
    return by_threshold, float(((d1 < ratio * d2) | (d1 == 0)).double().mean())


def memorisation(samples, targets=None, train=None, heldout=None, threshold: float | None = None,
                 quantile: float = DEFAULT_QUANTILE, ratio: float = DEFAULT_RATIO) -> dict:
    """Nearest-neighbour distances of ``samples`` to ``targets`` and/or ``train``, copy rates, baseline.

    Returns ``threshold`` and ``threshold_rule``, ``ratio``; for each given reference set R in
    (``targets``, ``train``): ``nn_to_R`` (numpy, one distance per sample), ``nn_index_to_R`` (the row
    of R it is nearest to), ``copy_rate_R`` (threshold rule; None without a threshold) and
    ``ratio_copy_rate_R``; with ``heldout``: ``heldout_nn_to_train``
    and the baseline rates ``baseline_copy_rate`` and ``baseline_ratio_copy_rate`` (fresh data)."""
    if targets is None and train is None:
        raise InputError("memorisation needs targets and/or train to compare the samples with")
    if heldout is not None and train is None:
        raise InputError("the held-out baseline is the held-out-to-train distance: pass train as well")
    if not 0 < quantile < 1 or not 0 < ratio <= 1:
        raise InputError(f"quantile must be in (0, 1) and ratio in (0, 1], got {quantile} and {ratio}")
    if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
        raise InputError(f"threshold must be a finite positive distance, got {threshold}")
    samples = as_points(samples, "samples")
    refs = {name: as_points(value, name, min_rows=2, device=samples.device)
            for name, value in (("targets", targets), ("train", train), ("heldout", heldout)) if value is not None}
    for name, value in refs.items():
        same_dim(samples, value, "samples", name)
    out: dict = {"ratio": ratio}
    baseline = None
    if "heldout" in refs:
        baseline = knn_distances(refs["heldout"], refs["train"], 2)[0]
        out["heldout_nn_to_train"] = baseline[:, 0].cpu().numpy()
    if threshold is not None:
        out["threshold_rule"] = "given"
    elif baseline is not None:
        threshold = float(torch.quantile(baseline[:, 0], quantile))
        out["threshold_rule"] = f"{quantile:g}-quantile of held-out-to-train nearest-neighbour distances"
    else:
        out["threshold_rule"] = "none (pass heldout or threshold for threshold copy rates)"
    out["threshold"] = threshold
    for name in ("targets", "train"):
        if name in refs:
            nearest, index = knn_distances(samples, refs[name], 2)
            out[f"nn_to_{name}"] = nearest[:, 0].cpu().numpy()
            out[f"nn_index_to_{name}"] = index[:, 0].cpu().numpy()
            out[f"copy_rate_{name}"], out[f"ratio_copy_rate_{name}"] = _copies(nearest, threshold, ratio)
    if baseline is not None:
        out["baseline_copy_rate"], out["baseline_ratio_copy_rate"] = _copies(baseline, threshold, ratio)
    return out
