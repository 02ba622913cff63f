"""Curvature of the semi-dual for Newton's method: the entropic Hessian, the hard cell-mass Jacobian
(facets of the power diagram), the regularised linear solve, and the refill of empty cells.

The semi-dual energy ``E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i`` has gradient
``mu(W_i(h)) - nu_i``; its second derivative is what these functions estimate on source points.
"""
from __future__ import annotations

import itertools

import torch

from .kernel import chunk_rows
from .problem import Problem, point_blocks


SPARSE_FLUSH = 2**21  # COO entries buffered before they are summed into the running sparse matrix
QUANTILE_POINTS = 2**16  # points whose per-point statistics give a quantile (median gap, facet band)


class PairSum:
    """A sum of values at entries (i, j) of an N x N matrix, accumulated block by block in float64: a dense
    N x N array, or (sparse) COO entries buffered and summed into a running coalesced sparse matrix every
    ``SPARSE_FLUSH`` entries. Its memory is N^2 doubles, or the distinct entries plus the buffer: bounded
    by the matrix's pattern, not by the number of points that add to it."""

    def __init__(self, n: int, device: torch.device, dense: bool):
        self.n, self.dense, self.device = n, dense, device
        self.flat = torch.zeros(n * n if dense else 0, dtype=torch.float64, device=device)
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.pending_entries = 0
        self.running: torch.Tensor | None = None

    def add(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
        if self.dense:
            self.flat.index_add_(0, rows * self.n + cols, values.double())
            return
        self.pending.append((rows, cols, values.double()))
        self.pending_entries += rows.numel()
        if self.pending_entries >= SPARSE_FLUSH:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        rows, cols, values = (torch.cat(column) for column in zip(*self.pending))
        part = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (self.n, self.n), check_invariants=False)
        self.running = (part if self.running is None else self.running + part).coalesce()
        self.pending, self.pending_entries = [], 0

    def total(self) -> torch.Tensor:
        """The sum: an (N, N) dense tensor, or a coalesced sparse COO one."""
        if self.dense:
            return self.flat.view(self.n, self.n)
        self._flush()
        if self.running is None:
            empty = torch.zeros(2, 0, dtype=torch.int64, device=self.device)
            return torch.sparse_coo_tensor(empty, torch.zeros(0, dtype=torch.float64, device=self.device),
                                           (self.n, self.n)).coalesce()
        return self.running


def entropic_hessian(problem: Problem, x, h: torch.Tensor, tau: float, k: int, dense: bool,
                     soft: list | None = None) -> torch.Tensor:
    """The Hessian of the entropic semi-dual on the points x (a tensor, or a
    :class:`~dpmot_bench.ot.problem.Head`, streamed; held by every process), ``H = (1 / (tau n)) sum_x
    (diag(p) - p p^T)``, ``p(x) = softmax(s(x) / tau)`` over each point's k best targets
    (``Scoring.soft_top``), summed block by block in a :class:`PairSum`: dense, or sparse COO. As tau -> 0
    it tends to the hard Hessian (mu-weighted facet areas over target distances, Kitagawa-Merigot-Thibert
    2019). ``soft``: the ``(p, index)`` of x's blocks at h, tau and k (``sample_masses(..., soft=[])``),
    when at hand; x is then not scored again."""
    n_targets = problem.targets.shape[0]
    total = PairSum(n_targets, problem.device, dense)
    n, blocks = point_blocks(x)
    if soft is None:
        soft = (problem.scoring.soft_top(block, h, tau, k)[:2] for block in blocks)
    for p, index in soft:
        width = index.shape[1]
        rows = index[:, :, None].expand(-1, -1, width).flatten()
        cols = index[:, None, :].expand(-1, width, -1).flatten()
        total.add(rows, cols, (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).flatten())
    hessian = total.total() * (1 / (tau * n))
    return hessian if dense else hessian.coalesce()


def median_gap(problem: Problem, x, h: torch.Tensor) -> float:
    """The median, over the first ``QUANTILE_POINTS`` points of x (a tensor or a Head), of the gap between
    the best and second-best scores (the scale of tau). Memory: one gap per point of that bounded subsample."""
    gaps, left = [], QUANTILE_POINTS
    for block in point_blocks(x)[1]:
        block = block[:left]
        values = problem.scoring.top(block, h, 2, columns=0)[0]
        gaps.append(values[:, 0] - values[:, 1])
        left -= block.shape[0]
        if left <= 0:
            break
    return float(torch.cat(gaps).median().clamp_min(torch.finfo(torch.float32).eps))


def newton_direction(hessian: torch.Tensor, g: torch.Tensor, damping: float, floor: float,
                     shift: float = 0.0) -> torch.Tensor:
    """``(H + R)^{-1} g``, centred, with ``R = diag(damping * d + max(floor * m - d, 0)) + shift * m * I``
    (d = diag H, m its median over positive entries): Levenberg-Marquardt damping, a floor for cells that
    too few sample points border to estimate their row, and a uniform shift, which bounds the step of a
    group of cells whose links to the others the sample missed (a nearly disconnected block of H would
    otherwise move by its total mass error over its tiny coupling). Cholesky for a dense H, conjugate
    gradients with Jacobi preconditioning for a sparse one."""
    diagonal = hessian.diagonal() if not hessian.is_sparse else torch.zeros_like(g).index_add_(
        0, hessian.indices()[0], torch.where(hessian.indices()[0] == hessian.indices()[1], hessian.values(), 0))
    positive = diagonal[diagonal > 0]
    level = float(positive.median()) if positive.numel() else 1.0
    regulariser = damping * diagonal + (floor * level - diagonal).clamp_min(0) + shift * level
    if not hessian.is_sparse:
        regularised = hessian.clone()
        regularised.diagonal().add_(regulariser)
        step = _cholesky_solve(regularised, g, level)
    else:
        step = _conjugate_gradients(lambda v: hessian @ v + regulariser * v, g, diagonal + regulariser)
    return step - step.mean()


def _cholesky_solve(matrix: torch.Tensor, b: torch.Tensor, level: float) -> torch.Tensor:
    """Solve ``A x = b`` by Cholesky. H is a graph Laplacian, singular, and a regulariser below its rounding
    error (float32 softmax rows) can leave ``A`` indefinite: then ``10^k level I`` is added, k = -8, -7, ...,
    until A factors (Nocedal and Wright, Algorithm 3.3); a matrix that factors is solved as it is."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    added = 1e-8 * level
    for _ in range(32):
        if int(info) == 0:
            return torch.cholesky_solve(b[:, None], factor)[:, 0]
        factor, info = torch.linalg.cholesky_ex(matrix + added * torch.eye(len(b), dtype=matrix.dtype,
                                                                         device=matrix.device))
        added *= 10
    raise FloatingPointError("Newton's linear system does not factor even regularised (NaN in the Hessian?)")


def _conjugate_gradients(matvec, b: torch.Tensor, diagonal: torch.Tensor, rtol: float = 1e-4,
                         max_iter: int = 1000) -> torch.Tensor:
    """Solve ``A x = b`` (A symmetric positive definite, applied by ``matvec``), Jacobi-preconditioned."""
    x, r = torch.zeros_like(b), b.clone()
    z = r / diagonal
    d, rz = z.clone(), float(r @ z)
    for _ in range(max_iter):
        ad = matvec(d)
        curvature = float(d @ ad)
        if not curvature > 0:  # rounding made A indefinite along d: stop with the progress so far
            break
        alpha = rz / curvature
        x.add_(d, alpha=alpha)
        r.sub_(ad, alpha=alpha)
        if float(r.norm()) <= rtol * float(b.norm()):
            break
        z = r / diagonal
        rz, rz_old = float(r @ z), rz
        d.mul_(rz / rz_old).add_(z)
    return x


# ------------------------------------------------------------------------------------------ hard Newton
FACET_BYTES = 32 * 2**20  # float64 target differences per chunk in facet_chunks
REFILL_BYTES = 64 * 2**20  # float64 rows of empty cells' targets per pass in refill_empty


def facet_chunks(problem: Problem, x, h: torch.Tensor, k: int = 4, skip: int = 0, limit: int | None = None):
    """For the points of x (a tensor or a Head, streamed; the ``limit`` points after the first ``skip``),
    chunk by chunk: each point's power cell and its distances to the facets it shares with its ``k - 1``
    next-best cells.

    Yields ``best`` (m,), ``others`` (m, k - 1), ``t = (s_best - s_j) / distance``, the distance in source
    space from the point to the bisector of cells best and j, and ``distance`` = |y_best - y_j|. The
    candidates are the top k (centred) float32 scores; the gaps are recomputed in float64 from the target
    differences (rounded once to float32), which tight clusters need (their targets differ below float32's
    resolution of <x, y>). A point that float32 put in the wrong one of two nearly tied cells gets t = 0:
    it lies on their facet.
    """
    n_targets, dim = problem.targets.shape
    k = min(k, n_targets)
    h64 = h.double()
    rows = FACET_BYTES // (8 * k * dim)
    if problem.scoring.packed is None:  # the torch kernel writes a chunk of scores: bound it as well
        rows = min(rows, chunk_rows(n_targets))
    rows = max(64, rows)
    for block in point_blocks(x)[1]:
        if skip >= block.shape[0]:
            skip -= block.shape[0]
            continue
        block, skip = block[skip:], 0
        if limit is not None:
            if limit <= 0:
                return
            block = block[:limit]
            limit -= block.shape[0]
        for start in range(0, block.shape[0], rows):
            index = problem.scoring.top(block[start:start + rows], h, k)[1]  # k <= N: no padded target
            best, others = index[:, 0], index[:, 1:]
            points = block[start:start + index.shape[0]].to(device=problem.device, dtype=torch.float64)
            # The float32 difference is the exact one rounded once (relative error 2^-24 per coordinate), so t
            # is off by at most about 2^-24 |x| however close the targets are (t from the float32 scores would
            # be off by 2^-24 |x| |y| / |y_best - y_j|); half the bytes of a float64 difference, twice as fast.
            difference = (problem.targets[best, None, :] - problem.targets[others]).double()
            gap = torch.bmm(difference, points[:, :, None])[:, :, 0] + h64[best, None] - h64[others]
            distance = torch.linalg.vector_norm(difference, dim=2)
            yield best, others, gap.clamp_min_(0).div_(distance), distance


def facet_distances(problem: Problem, x, h: torch.Tensor, k: int = 4):
    """:func:`facet_chunks` concatenated: ``best, others, t, distance`` for every point of x (memory grows
    with the points: for small sets and tests)."""
    return tuple(torch.cat(column) for column in zip(*facet_chunks(problem, x, h, k)))


def facet_band(problem: Problem, x, h: torch.Tensor, band_quantile: float, head: list | None = None) -> float:
    """The ``band_quantile`` quantile of the distance to the nearest facet, over the first
    ``QUANTILE_POINTS`` points of x (a bounded subsample: one distance per point); ``head``: their
    :func:`facet_chunks`, when already at hand."""
    head = facet_chunks(problem, x, h, limit=QUANTILE_POINTS) if head is None else head
    nearest = torch.cat([t.amin(dim=1) for _, _, t, _ in head])
    return float(nearest.kthvalue(max(1, int(band_quantile * nearest.numel()))).values)


def facet_jacobian(problem: Problem, x, h: torch.Tensor, band_quantile: float,
                   dense: bool) -> torch.Tensor | None:
    """The Jacobian of the hard cell masses, ``J = d m / d h``, estimated on the points x (a tensor or a
    Head, streamed; held by every process); None when no point lies near a facet (the sample shows no
    curvature).

    ``J_ij = -mu(F_ij) / |y_i - y_j|`` for neighbours i != j (F_ij their common facet, mu its surface
    measure) and ``J_ii = -sum_{j != i} J_ij`` (Kitagawa, Merigot and Thibert 2019): a graph Laplacian,
    positive semi-definite. The mu-mass of the points within ``band`` of a facet, on either side, is
    ``2 band mu(F_ij)`` up to O(band^2), so every point at distance ``t < band`` from the bisector of its
    cell i and a cell j adds ``1 / (2 n band |y_i - y_j|)`` to ``-J_ij``. ``band`` is the ``band_quantile``
    of the points' distances to their nearest facet (:func:`facet_band`, on a bounded subsample): one
    width in source space for every facet, whereas a temperature on the scores (the entropic Hessian) is a
    width ``tau / |y_i - y_j|``, far too thin between distant targets where others are close (tight
    clusters). Two streaming passes (the band, then the sum, a :class:`PairSum`; the band's
    ``QUANTILE_POINTS`` points are scored once, for both): dense when ``dense``, else sparse COO.
    """
    n_targets = problem.targets.shape[0]
    n = point_blocks(x)[0]
    head = list(facet_chunks(problem, x, h, limit=QUANTILE_POINTS))  # kept for the sum: scored once
    band = facet_band(problem, x, h, band_quantile, head)
    if band <= 0:
        return None
    total, any_near = PairSum(n_targets, problem.device, dense), False
    for best, others, t, distance in itertools.chain(head, facet_chunks(problem, x, h, skip=QUANTILE_POINTS)):
        near = t < band
        if not bool(near.any()):
            continue
        any_near = True
        i, j = best[:, None].expand_as(others)[near], others[near]
        w = 1 / (2 * n * band * distance[near])
        total.add(torch.cat([i, j, i, j]), torch.cat([j, i, i, j]), torch.cat([-w, -w, w, w]))
    return total.total() if any_near else None


def refill_empty(problem: Problem, x, h: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """h with every empty cell i raised until it wins the one point of x nearest to joining it.

    A cell that holds no sample point has a zero row in the Jacobian: Newton's method cannot see it
    (Kitagawa, Merigot and Thibert start from cells of positive mass and keep them so). Cell i wins x once
    ``h_i > u(x) - <x, y_i>`` with ``u(x) = max_j s_j(x)``; h_i halfway between the smallest and the
    second smallest of these levels over x hands it exactly one point (unless two refilled cells want the
    same one), and Newton's steps grow it from there. (Handing it more at once, say half its target mass,
    breaks up tight clusters of targets: the cells of a cluster then jump past each other.) Streams over
    x (a tensor or a Head), keeping the two smallest levels of every empty cell; the levels are float64,
    ``u(x) - <x, y_i> = u_c(x) - <x - a, y_i - c> - a <1, y_i - c>`` from the centred maximum u_c, scored
    once per point, then the empty cells' float64 targets ``REFILL_BYTES`` at a time.
    """
    h, cells = h.clone(), empty.nonzero()[:, 0]
    scoring = problem.scoring
    group = max(1, REFILL_BYTES // (8 * problem.targets.shape[1]))
    parts = [cells[first:first + group] for first in range(0, cells.numel(), group)]
    smallest: list[torch.Tensor | None] = [None] * len(parts)
    for block in point_blocks(x)[1]:
        maxima = scoring.top(block, h, 1, columns=0)[0].double()  # (m, 1)
        rows = chunk_rows(scoring.targets.shape[0])
        for index, part in enumerate(parts):
            y_empty = scoring.targets[part].double()
            for start in range(0, block.shape[0], rows):
                best = maxima[start:start + rows]
                points = scoring.points(block[start:start + rows]).double()
                levels = best - points @ y_empty.T - scoring.offset[part]
                kept = levels if smallest[index] is None else torch.cat([smallest[index], levels])
                smallest[index] = kept.topk(min(2, kept.shape[0]), dim=0, largest=False, sorted=True).values
    for part, lowest in zip(parts, smallest):
        h[part] = lowest.mean(0)
    return h - h.mean()
