"""Power diagrams in two dimensions, vectorised: every cell's source mass and the exact Jacobian of the
masses in h, from one regular triangulation (the hot path of the ``exact-2d`` solver; ``exact2d.py``
computes the same masses cell by cell in Python and is the oracle it is tested against).

Coordinates are standardised first (:func:`standardise`): the uniform square becomes ``[-1, 1]^2`` with
density 1/4, the Gaussian ``N(0, I)`` cut to ``[-12, 12]^2`` (its mass outside is below 1e-32). With
``x = m + s z`` the scores are ``<x, y_i> + h_i = <z, s y_i> + (h_i + m <1, y_i>)`` (a common term aside),
so the cells, their masses and ``dG / dh`` are the same in both systems.

The diagram (:func:`power_diagram`) is a list of *facets*: the part of the line
``<x, y_j - y_i> = h_i - h_j`` where cells i and j beat every other cell, written ``v + s d`` for s in
``[lo, hi]`` (v the point of the line nearest 0), d the unit normal of ``y_j - y_i`` turned clockwise, so that cell j lies on the left of d.
Facets come from the lower convex hull of the lifted points ``(y_i, -h_i)`` (Qhull via scipy): an edge
(i, j) shared by two lower triangles gives the segment between their power vertices, an edge of one
triangle (on the convex hull of the targets) a ray from its power vertex; collinear targets are a 1-D
problem (the upper envelope of the lines ``t_i s + h_i``, facets are whole lines). Each facet is clipped
to the box; the box's boundary is cut at the clipped ends into pieces, each owned by the cell that wins
at its midpoint (among the cells of the facets at its ends). A cell's mass is then a sum over its boundary (counter-clockwise) of the signed mass of
the triangle ``(0, p, q)`` of each directed piece ``p -> q``: ``cross(p, q) / 2`` times the density for
the square, Owen's T for the Gaussian (``exact2d.py`` states the formula). Work per call: Qhull's
O(N log N) and O(N) numpy; no Python loop over cells.

Jacobian (Kitagawa, Merigot and Thibert 2019): for i != j, ``dG_i / dh_j = -w_ij`` with
``w_ij = (integral of the density over facet ij) / |y_i - y_j|`` (raising h_j moves the facet into cell
i at speed ``1 / |y_i - y_j|``), and ``dG_i / dh_i = sum_j w_ij``: a graph Laplacian, positive
semi-definite, with the constants as its kernel. The facet integral is ``length / 4`` for the square and,
for the standard Gaussian along ``v + s d`` (``b = <v, d>``, ``c^2 = |v|^2 - b^2`` the squared distance
from 0 to the line), ``exp(-c^2 / 2) / sqrt(2 pi) * (Phi(hi + b) - Phi(lo + b))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse, spatial, special

from .sources import GaussianSource, Source, UniformSource

GAUSSIAN_HALF_WIDTH = 12.0  # the Gaussian mass outside [-12, 12]^2 is below 1e-32


def standardise(source: Source, targets: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets and h in the standard coordinates of the source (``[-1, 1]^2`` or ``N(0, I)``)."""
    if isinstance(source, UniformSource):
        centre, scale = (source.low + source.high) / 2, (source.high - source.low) / 2
    elif isinstance(source, GaussianSource):
        centre, scale = source.mean, source.std
    else:
        raise TypeError(f"no exact power diagram for {type(source).__name__}")
    return scale * targets, h + centre * targets.sum(1)


def half_width(source: Source) -> float:
    return 1.0 if isinstance(source, UniformSource) else GAUSSIAN_HALF_WIDTH


@dataclass(frozen=True)
class Facets:
    """Facet k lies between cells ``i[k]`` (right of ``d[k]``) and ``j[k]`` (left): ``v[k] + s d[k]`` for
    s in ``[lo[k], hi[k]]`` (may be infinite before clipping)."""

    i: np.ndarray
    j: np.ndarray
    v: np.ndarray
    d: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def take(self, keep: np.ndarray) -> "Facets":
        return Facets(self.i[keep], self.j[keep], self.v[keep], self.d[keep], self.lo[keep], self.hi[keep])


def _right_normal(e: np.ndarray) -> np.ndarray:
    d = np.column_stack([e[:, 1], -e[:, 0]])
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _collinear(y: np.ndarray) -> np.ndarray | None:
    """The unit direction of the line through every target, or None if they span the plane."""
    centred = y - y.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    if singular[0] == 0 or singular[1] <= 1e-12 * singular[0]:
        return vt[0]
    return None


def _line_facets(y: np.ndarray, h: np.ndarray, e: np.ndarray) -> Facets:
    """Collinear targets ``y_i = p + t_i e``: cell i is where ``t_i <x, e> + h_i`` is largest, an interval
    of ``<x, e>``; the upper envelope of those lines (sorted by slope) gives the facets, whole lines."""
    t = y @ e
    order = np.argsort(t, kind="stable")
    hull: list[int] = []
    for k in order:  # monotone chain on the lines (slope t, intercept h): at most O(N) Python steps
        while hull:
            a = hull[-1]
            if t[k] == t[a]:  # cannot happen for distinct targets on one line
                raise ValueError("two collinear targets at the same point")
            if len(hull) >= 2:
                b = hull[-2]
                # line a is useless if line b and line k meet below it: crossing(b, k) <= crossing(b, a)
                if (h[b] - h[k]) * (t[a] - t[b]) <= (h[b] - h[a]) * (t[k] - t[b]):
                    hull.pop()
                    continue
            break
        hull.append(int(k))
    i, j = np.array(hull[:-1], dtype=np.int64), np.array(hull[1:], dtype=np.int64)
    if len(i) == 0:
        empty = np.empty((0, 2))
        return Facets(i, j, empty, empty, np.empty(0), np.empty(0))
    s = (h[i] - h[j]) / (t[j] - t[i])  # <x, e> on the facet
    d = _right_normal(y[j] - y[i])
    v = s[:, None] * e[None, :]
    inf = np.full(len(i), np.inf)
    return Facets(i, j, v, d, -inf, inf)


def _lower_triangles(y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Counter-clockwise triangles of the regular triangulation (lower hull of ``(y, -h)``)."""
    n = len(y)
    if n == 3:
        triangles = np.array([[0, 1, 2]])
    else:
        lifted = np.column_stack([y, -h])
        try:
            hull = spatial.ConvexHull(lifted, qhull_options="Qt")
        except spatial.QhullError:  # every lifted point in one plane (e.g. h affine in y): joggle
            hull = spatial.ConvexHull(lifted, qhull_options="QJ")
        triangles = hull.simplices[hull.equations[:, 2] < 0]
    a, b, c = y[triangles[:, 0]], y[triangles[:, 1]], y[triangles[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    scale = np.abs(y - y.mean(0)).max() ** 2
    keep = np.abs(cross) > 1e-14 * scale  # a vertical face of the hull projects to a segment
    triangles, cross = triangles[keep], cross[keep]
    flip = cross < 0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    return triangles


_EDGES: dict = {}  # the last triangulations' edges: a pure function of (triangles, n), kept to skip the sort


def _edges(triangles: np.ndarray, n: int):
    """Each edge of the triangulation once: ``start -> end`` with its left triangle ``owner`` and the
    triangle on its right (``twin_owner``, -1 and ``has_twin`` False on the targets' convex hull)."""
    key = (n, triangles.shape, triangles.tobytes())
    if key in _EDGES:
        return _EDGES[key]
    a, b, c = (triangles[:, k] for k in range(3))
    start = np.concatenate([a, b, c])
    end = np.concatenate([b, c, a])
    owner = np.tile(np.arange(len(triangles)), 3)
    code = start * n + end
    order = np.argsort(code)
    twin_code = end * n + start
    where = np.minimum(np.searchsorted(code[order], twin_code), len(code) - 1)
    has_twin = code[order][where] == twin_code
    twin_owner = np.where(has_twin, owner[order][where], -1)
    keep = ~has_twin | (start < end)  # each interior edge once
    edges = (start[keep], end[keep], owner[keep], twin_owner[keep], has_twin[keep])
    if len(_EDGES) >= 2:
        _EDGES.pop(next(iter(_EDGES)))
    _EDGES[key] = edges
    return edges


def _triangle_facets(y: np.ndarray, h: np.ndarray, triangles: np.ndarray) -> tuple[Facets, float]:
    """The facets of a triangulation's edges, and the least oriented length of an interior one (< 0: the
    triangulation is not the regular one of this h: that edge should be flipped)."""
    n = len(y)
    a, b, c = (triangles[:, k] for k in range(3))
    # power vertex: <x, y_b - y_a> = h_a - h_b, <x, y_c - y_a> = h_a - h_c (Cramer)
    p, q = y[b] - y[a], y[c] - y[a]
    r, s = h[a] - h[b], h[a] - h[c]
    det = p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]
    vertex = np.column_stack([(r * q[:, 1] - s * p[:, 1]) / det, (p[:, 0] * s - q[:, 0] * r) / det])
    start, end, owner, twin_owner, has_twin = _edges(triangles, n)
    d = _right_normal(y[end] - y[start])
    v = vertex[owner]
    hi = np.where(has_twin, np.einsum("ij,ij->i", vertex[np.maximum(twin_owner, 0)] - v, d), np.inf)
    least = float(hi.min()) if len(hi) else 0.0
    hi = np.maximum(hi, 0.0)  # a negative length is round-off of a degenerate (co-circular) quadruple
    # Anchor each facet at the foot of its line nearest 0, computed from h directly: a power vertex of a
    # thin triangle lies far away (~1 / its area) and v + s d would lose the digits of the part in the box.
    e = y[end] - y[start]
    foot = ((h[start] - h[end]) / np.einsum("ij,ij->i", e, e))[:, None] * e
    shift = np.einsum("ij,ij->i", foot - v, d)
    return Facets(start, end, foot, d, -shift, hi - shift), least


def facets(y: np.ndarray, h: np.ndarray, hint: np.ndarray | None = None) -> tuple[Facets, np.ndarray | None]:
    """Every facet of the power diagram of targets y (N, 2) with weights h (N,), unclipped, and the
    triangulation it came from (None for collinear targets). ``hint``, a triangulation with every target
    as a vertex (the last h's, in a Newton iteration), is used when it is still regular for this h: every
    interior edge's facet has a non-negative length (then it is a locally convex lifted surface over the
    targets' hull, i.e. the lower hull); else Qhull builds the triangulation afresh."""
    direction = _collinear(y)
    if direction is not None:
        return _line_facets(y, h, direction), None
    if hint is not None:
        f, least = _triangle_facets(y, h, hint)
        if least >= -64 * np.finfo(np.float64).eps * (1.0 + np.abs(y).max()):
            return f, hint
    triangles = _lower_triangles(y, h)
    return _triangle_facets(y, h, triangles)[0], triangles


def clip(f: Facets, r: float) -> Facets:
    """The facets' parts inside ``[-r, r]^2`` (Liang-Barsky on the parameter s); empty ones dropped."""
    lo, hi = f.lo.copy(), f.hi.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(2):
            dk, vk = f.d[:, k], f.v[:, k]
            moving = dk != 0
            a, b = (-r - vk) / dk, (r - vk) / dk
            lo = np.where(moving, np.maximum(lo, np.minimum(a, b)), lo)
            hi = np.where(moving, np.minimum(hi, np.maximum(a, b)), hi)
            outside = ~moving & (np.abs(vk) > r)
            hi = np.where(outside, -np.inf, hi)
    keep = hi > lo
    clipped = Facets(f.i, f.j, f.v, f.d, lo, hi).take(keep)
    return clipped


def gaussian_triangle_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed standard-Gaussian mass of the triangles (0, a_k, b_k) (positive when counter-clockwise)."""
    edge = b - a
    normal = np.column_stack([edge[:, 1], -edge[:, 0]])
    length = np.linalg.norm(normal, axis=1)
    out = np.zeros(len(a))
    ok = length > 0
    normal = normal[ok] / length[ok, None]
    aa, bb = a[ok], b[ok]
    c = np.einsum("ij,ij->i", aa, normal)
    normal = np.where(c[:, None] < 0, -normal, normal)
    c = np.abs(c)
    nonzero = c > 0  # an edge on a line through 0 spans a triangle of zero area
    perpendicular = np.column_stack([-normal[:, 1], normal[:, 0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        u_a = np.einsum("ij,ij->i", aa, perpendicular) / c
        u_b = np.einsum("ij,ij->i", bb, perpendicular) / c
    value = np.zeros(len(aa))
    cn, ua, ub = c[nonzero], u_a[nonzero], u_b[nonzero]
    value[nonzero] = ((np.arctan(ub) - np.arctan(ua)) / (2 * np.pi) - special.owens_t(cn, ub) + special.owens_t(cn, ua))
    out[ok] = value
    return out


def _triangle_mass(gaussian: bool, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if gaussian:
        return gaussian_triangle_mass(a, b)
    return (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 8.0  # cross / 2 times the density 1/4


def gaussian_line_integral(v: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``int_lo^hi phi_2(v + s d) ds`` for unit d: ``exp(-c^2 / 2) / sqrt(2 pi) (Phi(hi + b) - Phi(lo + b))``,
    ``b = <v, d>``, ``c^2 = |v|^2 - b^2``; the Phi difference is taken on the side of the smaller tail."""
    b = np.einsum("ij,ij->i", v, d)
    c2 = np.maximum(np.einsum("ij,ij->i", v, v) - b * b, 0.0)
    upper, lower = hi + b, lo + b
    right = lower > 0  # both ends right of the foot: Phi(u) - Phi(l) = Phi(-l) - Phi(-u)
    difference = np.where(right, special.ndtr(-lower) - special.ndtr(-upper), special.ndtr(upper) - special.ndtr(lower))
    return np.exp(-c2 / 2) / math.sqrt(2 * math.pi) * difference


@dataclass(frozen=True)
class Diagram:
    """Masses (N,), the Jacobian's facet weights ``w`` on the pairs ``(i, j)`` (one entry per facet), and
    ``roundoff``: a first-order estimate of the float64 error of the masses' l1 sum (see the code)."""

    masses: np.ndarray
    i: np.ndarray
    j: np.ndarray
    w: np.ndarray
    roundoff: float
    triangles: np.ndarray | None = None  # the regular triangulation (None for collinear targets)

    def hint(self) -> np.ndarray | None:
        """The triangulation, if every target is one of its vertices (a valid ``hint`` for the next h)."""
        if self.triangles is None or len(np.unique(self.triangles)) < len(self.masses):
            return None
        return self.triangles

    def jacobian(self) -> sparse.csr_matrix:
        """``dG / dh`` (N, N): ``-w_ij`` off the diagonal, the row sums of w on it."""
        n = len(self.masses)
        diagonal = np.zeros(n) + np.bincount(self.i, self.w, n) + np.bincount(self.j, self.w, n)
        rows = np.concatenate([self.i, self.j, np.arange(n)])
        cols = np.concatenate([self.j, self.i, np.arange(n)])
        return sparse.csr_matrix((np.concatenate([-self.w, -self.w, diagonal]), (rows, cols)), shape=(n, n))


def _boundary_pieces(y: np.ndarray, h: np.ndarray, ends: np.ndarray, cells: np.ndarray, r: float):
    """The box's boundary cut at ``ends`` (points on it, each the end of a facet between the two cells in
    its row of ``cells``) and at its corners, counter-clockwise: the pieces ``p -> q`` and the cell owning
    each. A piece lies in one cell, one of the two of the nearest cut before it and one of the two of the
    nearest cut after it: the best of those four at its midpoint (no cut at all: the best of all cells)."""
    x, z = ends[:, 0], ends[:, 1]
    side = np.argmax(np.column_stack([-z, x, z, -x]), axis=1)  # bottom, right, top, left: the one at +-r
    position = np.choose(side, [x + r, 2 * r + (z + r), 4 * r + (r - x), 6 * r + (r - z)])
    position = np.concatenate([position, [0.0, 2 * r, 4 * r, 6 * r]])
    cells = np.concatenate([cells, np.full((4, 2), -1)])
    order = np.argsort(position, kind="stable")
    position, cells = position[order], cells[order]
    start, stop = position, np.concatenate([position[1:], [8 * r]])

    def point(t):
        s = np.minimum((t // (2 * r)).astype(int), 3)
        u = t - 2 * r * s
        px = np.choose(s, [-r + u, np.full_like(u, r), r - u, np.full_like(u, -r)])
        pz = np.choose(s, [np.full_like(u, -r), -r + u, np.full_like(u, r), r - u])
        return np.column_stack([px, pz])

    p, q, middle = point(start), point(stop % (8 * r)), point((start + stop) / 2)
    m = len(position)
    labelled = np.flatnonzero(cells[:, 0] >= 0)
    if len(labelled) == 0:
        owner = int(np.argmax(middle[0] @ y.T + h))
        return p, q, np.full(m, owner)
    index = np.arange(m)
    # nearest labelled point at or before k (cyclic), and at or after k + 1 (cyclic)
    before = np.where(cells[:, 0] >= 0, index, -1)
    before = np.maximum.accumulate(before)
    before = np.where(before < 0, labelled[-1], before)
    after = np.where(cells[:, 0] >= 0, index, m + labelled[0])
    after = np.minimum.accumulate(after[::-1])[::-1]
    after = np.concatenate([after[1:], [m + labelled[0]]]) % m
    candidates = np.concatenate([cells[before], cells[after]], axis=1)  # (m, 4)
    scores = np.einsum("kd,kcd->kc", middle, y[candidates]) + h[candidates]
    return p, q, candidates[index, np.argmax(scores, axis=1)]


def power_diagram(source: Source, targets, h, with_jacobian: bool = True, hint: np.ndarray | None = None) -> Diagram:
    """Masses of the power cells of ``targets`` (N, 2) and ``h`` (N,) under a 2-D uniform-square or
    Gaussian source, and the Jacobian's facet weights (see the module docstring); float64 throughout.
    ``hint``: a previous diagram's ``hint()``, tried before Qhull (:func:`facets`)."""
    if source.dim != 2:
        raise ValueError("power diagrams are computed in two dimensions only")
    y, hz = standardise(source, np.asarray(targets, dtype=np.float64), np.asarray(h, dtype=np.float64))
    hz = hz - hz.mean()
    gaussian, r = isinstance(source, GaussianSource), half_width(source)
    n = len(y)
    unclipped, triangles = facets(y, hz, hint)
    f = clip(unclipped, r)
    p, q = f.v + f.lo[:, None] * f.d, f.v + f.hi[:, None] * f.d
    tau = _triangle_mass(gaussian, p, q)
    masses = np.zeros(n)  # (np.bincount of no facets is an int array)
    masses += np.bincount(f.j, tau, n) - np.bincount(f.i, tau, n)
    # the clipped ends on the box's boundary
    p_out, q_out = np.abs(p).max(1) >= r * (1 - 1e-12), np.abs(q).max(1) >= r * (1 - 1e-12)
    pairs = np.column_stack([f.i, f.j])
    a, b, owners = _boundary_pieces(y, hz, np.concatenate([p[p_out], q[q_out]]),
                                    np.concatenate([pairs[p_out], pairs[q_out]]), r)
    tau_box = _triangle_mass(gaussian, a, b)
    masses += np.bincount(owners, tau_box, n)
    norm = np.linalg.norm(y[f.j] - y[f.i], axis=1)
    integral = gaussian_line_integral(f.v, f.d, f.lo, f.hi) if gaussian else (f.hi - f.lo) / 4.0
    w = integral / norm
    # Round-off: each term added into the masses is off by ~eps times its size, and each facet's offset
    # (h_i - h_j) / |y_i - y_j| by ~eps S / |y_i - y_j|, S the size of the scores, which moves mass
    # w_ij eps S across it (counted in both cells).
    scores = np.abs(hz).max() + (r if not gaussian else 4.0) * np.abs(y).sum(1).max()
    roundoff = np.finfo(np.float64).eps * (2 * np.abs(tau).sum() + np.abs(tau_box).sum() + 2 * scores * w.sum() + 1.0)
    if not with_jacobian:
        return Diagram(masses, f.i[:0], f.j[:0], np.empty(0), roundoff, triangles)
    return Diagram(masses, f.i, f.j, w, roundoff, triangles)
