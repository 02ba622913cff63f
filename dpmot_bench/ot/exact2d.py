"""Exact power-cell masses in two dimensions: an oracle for tests and for benchmark accuracy at d = 2.

The power cell ``W_i = {x : <x, y_i> + h_i >= <x, y_j> + h_j for all j}`` is a convex polygon: the
bounding square clipped by the half-planes ``<x, y_j - y_i> <= h_i - h_j`` of its neighbours. Neighbours
are the edges of the lower convex hull of the lifted points ``(y_j, -h_j)`` (the regular triangulation,
dual of the power diagram; scipy's Qhull); a target that is not a vertex of that hull has an empty cell.

Masses: the uniform square's is the shoelace area; a Gaussian's is exact too, summing over the polygon's
edges the signed mass of the triangle (0, a, b), which for the standard normal is
``(atan(u_b) - atan(u_a)) / (2 pi) - T(c, u_b) + T(c, u_a)`` with ``c`` the distance from 0 to the edge's
line, ``u = <p, n_perp> / c`` the tangent of the angle of p seen from the line's normal, and T Owen's T
function (``T(c, tan t) = (1 / 2 pi) int_0^t exp(-c^2 / (2 cos^2 s)) ds``). Numpy/scipy, float64: an oracle,
not a hot path.
"""
from __future__ import annotations

import numpy as np
from scipy import spatial, special

from .sources import GaussianSource, Source, UniformSource

GAUSSIAN_BOX_STDS = 12.0  # the Gaussian mass outside mean +- 12 std is below 1e-32


def _neighbours(targets: np.ndarray, h: np.ndarray) -> list[set[int]]:
    """Candidate neighbours of each cell: from the lower hull, or every other target when Qhull cannot
    build it (fewer than 4 points, or all lifted points in one plane); clipping by a non-neighbour is a
    no-op, so the fallback is exact, only slower."""
    try:
        hull = spatial.ConvexHull(np.column_stack([targets, -h]), qhull_options="Qt")
    except spatial.QhullError:
        return [set(range(len(targets))) - {i} for i in range(len(targets))]
    neighbours: list[set[int]] = [set() for _ in range(len(targets))]
    for simplex, equation in zip(hull.simplices, hull.equations):
        if equation[2] < 0:  # a face of the lower hull
            for a in simplex:
                neighbours[a].update(int(b) for b in simplex if b != a)
    return neighbours


def _clip(polygon: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """The part of a convex polygon (vertices in order) where ``<x, normal> <= offset``."""
    if len(polygon) == 0:
        return polygon
    side = polygon @ normal - offset
    out = []
    for k in range(len(polygon)):
        p, q, sp, sq = polygon[k], polygon[(k + 1) % len(polygon)], side[k], side[(k + 1) % len(polygon)]
        if sp <= 0:
            out.append(p)
        if (sp < 0 < sq) or (sq < 0 < sp):
            out.append(p + (q - p) * (sp / (sp - sq)))
    return np.array(out).reshape(-1, 2)


def power_cells(targets, h, box: tuple[float, float]) -> list[np.ndarray]:
    """The power cells clipped to the square ``box = (low, high)``: one (k, 2) counter-clockwise vertex
    array per target (empty for an empty cell)."""
    targets, h = np.asarray(targets, dtype=np.float64), np.asarray(h, dtype=np.float64)
    low, high = box
    square = np.array([[low, low], [high, low], [high, high], [low, high]], dtype=np.float64)
    cells = []
    for i, neighbours in enumerate(_neighbours(targets, h)):
        polygon = square if neighbours or len(targets) == 1 else np.empty((0, 2))  # off the hull: empty
        for j in sorted(neighbours):
            polygon = _clip(polygon, targets[j] - targets[i], h[i] - h[j])
        cells.append(polygon if len(polygon) >= 3 else np.empty((0, 2)))
    return cells


def _standard_gaussian_mass(polygon: np.ndarray) -> float:
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a
    normal = np.column_stack([edge[:, 1], -edge[:, 0]])
    length = np.linalg.norm(normal, axis=1)
    keep = length > 0
    a, b, normal = a[keep], b[keep], normal[keep] / length[keep, None]
    c = np.einsum("ij,ij->i", a, normal)
    normal, c = np.where(c[:, None] < 0, -normal, normal), np.abs(c)
    keep = c > 0  # an edge on a line through 0 spans a triangle of zero area
    a, b, normal, c = a[keep], b[keep], normal[keep], c[keep]
    perpendicular = np.column_stack([-normal[:, 1], normal[:, 0]])
    u_a, u_b = np.einsum("ij,ij->i", a, perpendicular) / c, np.einsum("ij,ij->i", b, perpendicular) / c
    return float(np.sum((np.arctan(u_b) - np.arctan(u_a)) / (2 * np.pi) - special.owens_t(c, u_b)
                        + special.owens_t(c, u_a)))


def exact_masses(source: Source, targets, h) -> np.ndarray:
    """The source mass of every power cell (float64, (N,)), for a 2-D Gaussian or uniform-square source."""
    if source.dim != 2:
        raise ValueError("exact power-cell masses are only available in two dimensions")
    if isinstance(source, UniformSource):
        cells = power_cells(targets, h, (source.low, source.high))
        area = [0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
                if len(p) else 0.0 for p in cells]
        return np.array(area) / (source.high - source.low) ** 2
    assert isinstance(source, GaussianSource)
    # Standardise: x = mean + std z, so <x, y> + h = <z, std y> + (h + mean <1, y>).
    targets, h = np.asarray(targets, dtype=np.float64), np.asarray(h, dtype=np.float64)
    z_targets, z_h = source.std * targets, h + source.mean * targets.sum(1)
    cells = power_cells(z_targets, z_h, (-GAUSSIAN_BOX_STDS, GAUSSIAN_BOX_STDS))
    return np.array([_standard_gaussian_mass(p) if len(p) else 0.0 for p in cells])
