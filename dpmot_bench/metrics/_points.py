"""Input checks and chunked nearest-neighbour distances shared by the metrics."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError, ShapeError, check_points

# A chunk of a distance matrix holds at most this many entries (float64: 128 MiB).
_CHUNK_ENTRIES = 1 << 24


def as_points(x, name: str, dim: int | None = None, min_rows: int = 1, device=None,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``x`` (a torch tensor or numpy array of shape (n, d)) as a checked finite tensor of ``dtype``.

    It stays on its device unless ``device`` is given (numpy arrays land on the CPU)."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"{name} must hold numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor or numpy array of shape (n, d), got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{name} must be real-valued, got {x.dtype}")
    x = x.detach().to(device=device if device is not None else x.device, dtype=dtype)
    return check_points(x, name, dim=dim, min_rows=min_rows)


def same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{name_a} and {name_b} must have the same number of columns, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def row_chunks(n_rows: int, n_cols: int):
    """Row slices whose (rows x n_cols) distance blocks stay under the chunk budget."""
    step = max(1, _CHUNK_ENTRIES // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (..., n, m) between the rows of ``a`` (..., n, d) and ``b`` (..., m, d), each one
    computed directly as ``sqrt(sum (a - b)^2)``, not by the matrix-product form ``|a|^2 + |b|^2 - 2<a, b>``
    (which loses small distances to cancellation). A pair's value does not depend on which other rows are
    in the block (or batch), so distances computed here in different chunks compare exactly."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def kth_nearest_distances(points: torch.Tensor, kth: int) -> torch.Tensor:
    """The ``kth`` smallest distance from each row of ``points`` to the rows of ``points`` (itself included,
    at distance 0), from :func:`pairwise_distances`, blockwise."""
    if kth > points.shape[0]:
        raise InputError(f"need at least {kth} rows for the {kth}-th nearest neighbour, got {points.shape[0]}")
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    for rows in row_chunks(points.shape[0], points.shape[0]):
        out[rows] = pairwise_distances(points[rows], points).kthvalue(kth, dim=1).values
    return out


def knn_distances(query: torch.Tensor, reference: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (ascending) and indices of the ``k`` nearest reference rows of each query row, (n, k).

    Neighbours are found blockwise with ``torch.cdist`` on the inputs' device (10^4 x 10^4 sets never
    build the whole matrix); their distances are then recomputed as ``|q - r|`` directly, because the
    matrix-product form loses the small ones to cancellation: an exact copy is at distance exactly 0. The
    recomputed values are those of :func:`pairwise_distances`, bit for bit."""
    if k > reference.shape[0]:
        raise InputError(f"need at least {k} reference rows for {k} nearest neighbours, got {reference.shape[0]}")
    reference = reference.to(query.device)
    dist = torch.empty(query.shape[0], k, dtype=query.dtype, device=query.device)
    index = torch.empty(query.shape[0], k, dtype=torch.long, device=query.device)
    for rows in row_chunks(query.shape[0], reference.shape[0]):
        found = torch.cdist(query[rows], reference).topk(k, dim=1, largest=False).indices
        exact = pairwise_distances(query[rows, None, :], reference[found])[:, 0, :]
        dist[rows], order = exact.sort(dim=1)
        index[rows] = found.gather(1, order)
    return dist, index
