"""Mode mixture: the classifier rule of the DPM-OT reference code, and mode statistics on Gaussian
mixtures (the PacGAN / VEEGAN convention for toy mode collapse).

Classifier rule: a sample is mode-mixed when at least two classes have softmax >= lambda, i.e. when its
second-largest probability is >= lambda (lambda = 0.2 in the follow-up paper; the reference code tallies
0.1 ... 0.4).

GMM rule. Each sample belongs to its nearest mode (Euclidean distance to the means). It is **high
quality** when it lies within "3 std" of that mode. In 2-D the convention is ``|x - m| <= 3 s``, which
an exact sample of the mode satisfies with probability ``P = P(chi2_2 <= 9) = 1 - exp(-4.5) = 0.9889``.
A literal ``3 s`` radius means nothing in d dims (in 32-D an exact sample is ~5.7 s from its mean), so
the radius is the one with the same coverage in the mode's own dimension: ``|x - m_k| <= s_k sqrt(q_d)``
with ``q_d`` the P-quantile of chi2_d (``q_2 = 9`` exactly: the 2-D convention is unchanged). Exact
samples are therefore high quality with probability P in every dimension. A low-quality sample is
**between modes** when it lies in the corridor joining the high-quality balls of its two nearest modes a
and b (a blend of two modes): within ``R_a`` of the line through their means, with its projection on the
segment beyond both balls (``R_a < t |m_b - m_a| < |m_b - m_a| - R_b``). Otherwise it is an **outlier**.
An exact sample of mode a enters a corridor only when its offset towards some other mode b exceeds
``R_a``: probability ``P(z_1 > 3) = 0.13%`` per neighbouring mode in 2-D (up to 4 x 0.13% on the grid),
essentially never in high dimension, where the radius is many stds. A mode is **covered** when at least ``min_count`` of
its samples are high quality. The **histogram divergence** compares the share of samples assigned to each
mode, p, with the true weights w: ``KL(p || w) = sum_k p_k log(p_k / w_k)`` (finite even when modes are
missed) and total variation ``(1/2) sum_k |p_k - w_k|``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from ..data import GaussianMixture
from ..errors import InputError
from ._points import as_points, row_chunks

DEFAULT_LAMBDAS = tuple(np.round(np.linspace(0.1, 0.4, 13), 4).tolist())  # 0.1, 0.125, ..., 0.4


def _probabilities(probs) -> torch.Tensor:
    p = as_points(probs, "probs")
    if p.shape[1] < 2:
        raise InputError(f"probs must have at least 2 classes (columns), got {p.shape[1]}")
    if bool((p < 0).any()):
        raise InputError("probs must be non-negative (pass softmax probabilities, not logits)")
    worst = float((p.sum(1) - 1).abs().max())
    if worst > 1e-4:  # float32 softmax rows sum to 1 within ~1e-6
        raise InputError(f"each row of probs must sum to 1 (worst row is off by {worst:.3g}); "
                         "pass softmax probabilities, not logits")
    return p


def _check_lambda(lam: float) -> float:
    lam = float(lam)
    if not 0 < lam <= 1:
        raise InputError(f"lambda must be in (0, 1], got {lam}")
    return lam


def mode_mixture_ratio(probs, lam: float = 0.2) -> float:
    """Share of samples with at least two classes at softmax probability >= lam."""
    return next(iter(mode_mixture_curve(probs, [lam]).values()))


def mode_mixture_curve(probs, lams=DEFAULT_LAMBDAS) -> dict[float, float]:
    """``{lambda: mode_mixture_ratio(probs, lambda)}`` over a grid of thresholds."""
    second = _probabilities(probs).topk(2, dim=1).values[:, 1]
    return {float(lam): float((second >= _check_lambda(lam)).double().mean()) for lam in lams}


def high_quality_radius(n_std: float, dim: int) -> float:
    """Radius of the high-quality ball in units of the mode's std: sqrt of the chi2_dim quantile at the
    probability that a 2-D Gaussian sample lies within ``n_std`` std (3.0 in 2-D for n_std = 3)."""
    if not (isinstance(n_std, (int, float)) and math.isfinite(n_std) and n_std > 0):
        raise InputError(f"n_std must be a finite number > 0, got {n_std!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InputError(f"dim must be an integer >= 1, got {dim!r}")
    return math.sqrt(stats.chi2.isf(stats.chi2.sf(n_std ** 2, 2), dim))


def gmm_mode_metrics(x, mixture: GaussianMixture, n_std: float = 3.0, min_count: int = 1,
                     masks: bool = False) -> dict:
    """Mode statistics of samples x (n, d) against a Gaussian mixture (see the module docstring).

    Returns ``high_quality``, ``between_modes``, ``outliers`` (shares summing to 1), ``modes_covered``,
    ``n_modes``, ``kl``, ``tv``, ``mode_counts``, ``high_quality_counts`` and ``radius_in_std``; with
    ``masks`` also the per-sample indicators ``high_quality_mask`` and ``between_mask`` (numpy bool),
    whose means are the shares (for paired per-sample comparisons)."""
    if not isinstance(mixture, GaussianMixture):
        raise InputError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if bool((mixture.stds == 0).any()):
        raise InputError("gmm_mode_metrics needs modes with std > 0 (a point mass has no 3-std ball)")
    if min_count < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    x = as_points(x, "x", dim=mixture.dim)
    means, weights = mixture.means.to(x.device), mixture.weights.to(x.device)
    k = means.shape[0]
    scale = high_quality_radius(n_std, mixture.dim)
    radius = mixture.stds.to(x.device) * scale
    nearest = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    high, between = (torch.zeros(x.shape[0], dtype=torch.bool, device=x.device) for _ in range(2))
    for rows in row_chunks(x.shape[0], k):
        dist, idx = torch.cdist(x[rows], means).topk(min(2, k), dim=1, largest=False)
        a = idx[:, 0]
        nearest[rows], high[rows] = a, dist[:, 0] <= radius[a]
        if k > 1:
            b = idx[:, 1]
            offset, edge = x[rows] - means[a], means[b] - means[a]
            length = edge.norm(dim=1)
            along = (offset * edge).sum(1) / length
            across = (offset - (along / length)[:, None] * edge).norm(dim=1)
            corridor = (along > radius[a]) & (along < length - radius[b]) & (across <= radius[a])
            between[rows] = ~high[rows] & corridor
    n = x.shape[0]
    counts = torch.bincount(nearest, minlength=k).double()
    high_counts = torch.bincount(nearest[high], minlength=k)
    share = counts / n
    seen = share > 0
    return {
        "high_quality": float(high.sum()) / n,
        "between_modes": float(between.sum()) / n,
        "outliers": float((~high & ~between).sum()) / n,
        "modes_covered": int((high_counts >= min_count).sum()),
        "n_modes": k,
        "kl": float((share[seen] * torch.log(share[seen] / weights[seen])).sum()),
        "tv": float(0.5 * (share - weights).abs().sum()),
        "mode_counts": counts.long().tolist(),
        "high_quality_counts": high_counts.tolist(),
        "radius_in_std": scale,
        **({"high_quality_mask": high.cpu().numpy(), "between_mask": between.cpu().numpy()} if masks else {}),
    }


def per_mode_statistics(x, mixture: GaussianMixture, assign: str = "nearest") -> dict:
    """Per-mode counts, weight errors and within-mode spread of samples x (n, d) against a mixture.

    Assignment: ``"nearest"`` (default) gives each sample to the closest mean in Euclidean distance, the
    rule of :func:`gmm_mode_metrics` (so the counts agree with its ``mode_counts``); ``"posterior"`` to the
    most probable component at sigma = 0, ``argmax_k w_k N(x; m_k, s_k^2 I)`` (the Bayes rule; it differs
    from "nearest" only where modes overlap or their weights or stds differ).

    Per mode k (lists of length K): ``counts``, ``shares`` p_k = n_k / n, ``weights`` w_k, ``weight_errors``
    p_k - w_k and their binomial std under the truth ``weight_error_stds = sqrt(w_k (1 - w_k) / n)``;
    ``spread_ratios`` = RMS distance of the mode's samples to m_k divided by ``s_k sqrt(d)``, which is 1 for
    exact samples (``|x - m_k|^2 / s_k^2 ~ chi2_d``, so ``ratio^2 ~ chi2_{n_k d} / (n_k d)`` and the ratio's
    std is ~ ``1 / sqrt(2 n_k d)``: ``spread_ratio_stds``), NaN for an empty mode or a point mass.
    Summary: ``max_abs_weight_error``, ``tv`` = (1/2) sum_k |p_k - w_k|, ``mean_spread_ratio`` (the
    unweighted mean over modes with a ratio), ``empty_modes`` and ``n``. Assigning to the nearest mode
    truncates each mode at the boundaries between modes: for well-separated modes (the toy mixtures: >= 20
    stds apart) this changes nothing measurable."""
    if not isinstance(mixture, GaussianMixture):
        raise InputError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if assign not in ("nearest", "posterior"):
        raise InputError(f"assign must be 'nearest' or 'posterior', got {assign!r}")
    x = as_points(x, "x", dim=mixture.dim)
    means, weights = mixture.means.to(x.device), mixture.weights.to(x.device)
    stds = mixture.stds.to(x.device)
    k, n, d = means.shape[0], x.shape[0], mixture.dim
    label = torch.empty(n, dtype=torch.long, device=x.device)
    on_device = mixture.to(x.device) if assign == "posterior" else None
    for rows in row_chunks(n, k):
        if assign == "nearest":
            label[rows] = torch.cdist(x[rows], means).argmin(1)
        else:
            label[rows] = on_device.posterior(x[rows], 0.0).argmax(1)
    counts = torch.bincount(label, minlength=k).double()
    sq = torch.zeros(k, dtype=torch.float64, device=x.device)
    for rows in row_chunks(n, 1):
        sq.index_add_(0, label[rows], ((x[rows] - means[label[rows]]) ** 2).sum(1))
    share = counts / n
    error = share - weights
    valid = (counts > 0) & (stds > 0)
    ratio = torch.full((k,), float("nan"), dtype=torch.float64, device=x.device)
    ratio[valid] = torch.sqrt(sq[valid] / counts[valid]) / (stds[valid] * math.sqrt(d))
    ratio_std = torch.full((k,), float("nan"), dtype=torch.float64, device=x.device)
    ratio_std[valid] = 1 / torch.sqrt(2 * counts[valid] * d)
    return {
        "counts": counts.long().tolist(),
        "shares": share.tolist(),
        "weights": weights.tolist(),
        "weight_errors": error.tolist(),
        "weight_error_stds": torch.sqrt(weights * (1 - weights) / n).tolist(),
        "spread_ratios": ratio.tolist(),
        "spread_ratio_stds": ratio_std.tolist(),
        "max_abs_weight_error": float(error.abs().max()),
        "tv": float(0.5 * error.abs().sum()),
        "mean_spread_ratio": float(ratio[valid].mean()) if bool(valid.any()) else float("nan"),
        "empty_modes": int((counts == 0).sum()),
        "n": n,
    }
