"""Precision, recall, density and coverage with k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019;
Naeem et al. 2020), the definitions of the ``prdc`` package:

- radius r_j of real point j: distance to its k-th nearest other real point (likewise s_i for fakes);
- precision: share of fakes inside some real ball, ``d(real_j, fake_i) < r_j``;
- recall: share of reals inside some fake ball, ``d(real_j, fake_i) < s_i``;
- density: ``(1 / k) * mean_i #{j : d(real_j, fake_i) < r_j}`` (can exceed 1);
- coverage: share of reals whose ball holds at least one fake.

Written here rather than calling ``prdc.compute_prdc`` because that builds the full n x m distance matrix
on the CPU (and prints); this streams blocks on the inputs' device. Every distance, radii and
comparisons alike, comes from one function (``_points.pairwise_distances``, direct differences), so an exact
copy of a point is at distance 0 and a point at exactly a ball's radius is outside it (prdc's strict ``<``);
mixing forms (radii exact, comparisons by the matrix product) put copies outside their own balls.
Checked against ``prdc`` in the tests.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ._points import as_points, kth_nearest_distances, pairwise_distances, row_chunks, same_dim

DEFAULT_K = 3  # the DPM-OT reference code; prdc's own examples use 5


def precision_recall_density_coverage(real, fake, k: int = DEFAULT_K) -> dict[str, float]:
    """PRDC of ``fake`` (m, d) against ``real`` (n, d) with k-NN balls; both need more than k rows."""
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    real = as_points(real, "real", min_rows=k + 1)
    fake = as_points(fake, "fake", min_rows=k + 1, device=real.device)
    same_dim(real, fake, "real", "fake")
    # The (k+1)-th nearest includes the point itself at distance 0, as in prdc.
    real_radii = kth_nearest_distances(real, k + 1)
    fake_radii = kth_nearest_distances(fake, k + 1)
    in_real_balls = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)
    real_recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    nearest_fake = torch.full((real.shape[0],), float("inf"), dtype=torch.float64, device=real.device)
    for rows in row_chunks(fake.shape[0], real.shape[0]):
        dist = pairwise_distances(fake[rows], real)  # (chunk of fakes, reals)
        in_real_balls[rows] = (dist < real_radii).sum(1).double()
        real_recalled |= (dist < fake_radii[rows, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, dist.min(0).values)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(in_real_balls.mean() / k),
        "coverage": float((nearest_fake < real_radii).double().mean()),
    }
