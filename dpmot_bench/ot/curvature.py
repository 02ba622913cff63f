"""Curvature of the semi-dual for Newton's method: the entropic Hessian, the hard cell-mass Jacobian
(facets of the power diagram), the regularised linear solve, and the refill of empty cells.

The semi-dual energy ``E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i`` has gradient
``mu(W_i(h)) - nu_i``; its second derivative is what these functions estimate on source points.
"""
from __future__ import annotations

import torch

from .distributed import all_reduce_sum_
from .kernel import chunk_rows, score_chunks, softmax_, topk_softmax
from .problem import Problem


class HessianSum:
    """The Hessian of the entropic semi-dual on a sample, ``H = (1 / (tau n)) sum_x (diag(p) - p p^T)``,
    ``p(x) = softmax(s(x) / tau)`` over each point's best targets, accumulated chunk by chunk: densely
    (and summed over processes) when N <= ``dense_limit``, else as a sparse COO tensor. As tau -> 0 it
    tends to the hard Hessian (mu-weighted facet areas over target distances, Kitagawa-Merigot-Thibert
    2019)."""

    def __init__(self, n_targets: int, device: torch.device, dense_limit: int = 4096):
        self.n, self.dense = n_targets, n_targets <= dense_limit
        self.sum = torch.zeros(n_targets * n_targets if self.dense else 0, dtype=torch.float64, device=device)
        self.parts: list[torch.Tensor] = []
        self.matrix: torch.Tensor | None = None

    def add(self, p: torch.Tensor, index: torch.Tensor | None) -> None:
        """Add softmax rows: p (m, N) over all targets (``index`` None; dense only), or p (m, k) over the
        targets ``index`` (m, k)."""
        if index is None:
            matrix = self.sum.view(self.n, self.n)
            matrix.sub_((p.T @ p).double()).diagonal().add_(p.sum(0, dtype=torch.float64))
            return
        p = p.double()
        k = index.shape[1]
        entries = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).flatten()
        rows, cols = index[:, :, None].expand(-1, -1, k).flatten(), index[:, None, :].expand(-1, k, -1).flatten()
        if self.dense:
            self.sum.index_add_(0, rows * self.n + cols, entries)
        else:
            self.parts.append(torch.sparse_coo_tensor(torch.stack([rows, cols]), entries, (self.n, self.n),
                                                      check_invariants=False).coalesce())

    def finish(self, scale: float, reduce: bool) -> torch.Tensor:
        """The Hessian: the sum times ``scale`` (summed over processes first when ``reduce``)."""
        if self.dense:
            self.matrix = (all_reduce_sum_(self.sum) if reduce else self.sum).view(self.n, self.n) * scale
        else:  # sparse sums stay per process: computed on points every process holds
            self.matrix = (torch.stack(self.parts).sum(0) * scale).coalesce()
        return self.matrix

    @classmethod
    def on_points(cls, problem: Problem, x: torch.Tensor, h: torch.Tensor, tau: float, k: int | None) -> torch.Tensor:
        """The Hessian of the points x (held by every process), over each point's k best targets or all."""
        hessian = cls(problem.targets.shape[0], problem.device)
        for _, scores in score_chunks(x, problem.targets, h.to(problem.targets.dtype)):
            hessian.add(*(topk_softmax(scores, tau, k) if k else (softmax_(scores, tau), None)))
        return hessian.finish(1 / (tau * x.shape[0]), reduce=False)


def median_gap(problem: Problem, x: torch.Tensor, h: torch.Tensor) -> float:
    """The median over x of the gap between the best and second-best scores (the scale of tau)."""
    gaps = [scores.topk(2, dim=1).values.diff(dim=1).neg() for _, scores in
            score_chunks(x, problem.targets, h.to(problem.targets.dtype))]
    return float(torch.cat(gaps).median().clamp_min(torch.finfo(problem.targets.dtype).eps))


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
        step = _cholesky_solve(hessian + torch.diag(regulariser), g, level)
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
FACET_BYTES = 32 * 2**20  # float64 target differences per chunk in facet_distances


def facet_distances(problem: Problem, x: torch.Tensor, h: torch.Tensor, k: int = 4):
    """Each point's power cell and its distances to the facets it shares with its ``k - 1`` next-best cells.

    Returns ``best`` (m,), ``others`` (m, k - 1), ``distance`` = |y_best - y_j| and ``t = (s_best - s_j) /
    distance``, the distance in source space from the point to the bisector of cells best and j. The
    candidates are the top k float32 scores; the gaps are recomputed in float64 from target differences,
    which tight clusters need (their targets differ below float32's resolution of <x, y>). A point that
    float32 put in the wrong one of two nearly tied cells gets t = 0: it lies on their facet.
    """
    n_targets, dim = problem.targets.shape
    k = min(k, n_targets)
    y, h64 = problem.targets.double(), h.double()
    rows = max(64, min(chunk_rows(n_targets), FACET_BYTES // (8 * k * dim)))
    parts = []
    for start, scores in score_chunks(x, problem.targets, h.to(problem.targets.dtype), rows=rows):
        index = scores.topk(k, dim=1).indices
        best, others = index[:, 0], index[:, 1:]
        points = x[start:start + index.shape[0]].to(device=y.device, dtype=torch.float64)
        difference = y[best, None, :] - y[others]
        gap = torch.einsum("md,mkd->mk", points, difference) + h64[best, None] - h64[others]
        distance = difference.norm(dim=2)
        parts.append((best, others, gap.clamp_min_(0).div_(distance), distance))
    return tuple(torch.cat(column) for column in zip(*parts))


def facet_jacobian(problem: Problem, x: torch.Tensor, h: torch.Tensor, band_quantile: float,
                   dense: bool) -> torch.Tensor | None:
    """The Jacobian of the hard cell masses, ``J = d m / d h``, estimated on the points x (held by every
    process); None when no point lies near a facet (the sample shows no curvature).

    ``J_ij = -mu(F_ij) / |y_i - y_j|`` for neighbours i != j (F_ij their common facet, mu its surface
    measure) and ``J_ii = -sum_{j != i} J_ij`` (Kitagawa, Merigot and Thibert 2019): a graph Laplacian,
    positive semi-definite. The mu-mass of the points within ``band`` of a facet, on either side, is
    ``2 band mu(F_ij)`` up to O(band^2), so every point at distance ``t < band`` from the bisector of its
    cell i and a cell j adds ``1 / (2 n band |y_i - y_j|)`` to ``-J_ij``. ``band`` is the ``band_quantile``
    of the points' distances to their nearest facet: one width in source space for every facet, whereas a
    temperature on the scores (the entropic Hessian) is a width ``tau / |y_i - y_j|``, far too thin
    between distant targets where others are close (tight clusters). Dense when ``dense``, else sparse COO.
    """
    n_targets = problem.targets.shape[0]
    best, others, t, distance = facet_distances(problem, x, h)
    nearest = t.amin(dim=1)
    band = float(nearest.kthvalue(max(1, int(band_quantile * nearest.numel()))).values)
    near = t < band
    if band <= 0 or not bool(near.any()):
        return None
    i, j = best[:, None].expand_as(others)[near], others[near]
    w = 1 / (2 * x.shape[0] * band * distance[near])
    index = torch.cat([torch.stack([i, j]), torch.stack([j, i]), torch.stack([i, i]), torch.stack([j, j])], 1)
    values = torch.cat([-w, -w, w, w])
    if dense:
        flat = torch.zeros(n_targets * n_targets, dtype=torch.float64, device=problem.device)
        return flat.index_add_(0, index[0] * n_targets + index[1], values).view(n_targets, n_targets)
    return torch.sparse_coo_tensor(index, values, (n_targets, n_targets)).coalesce()


def refill_empty(problem: Problem, x: torch.Tensor, h: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """h with every empty cell i raised until it wins the one point of x nearest to joining it.

    A cell that holds no sample point has a zero row in the Jacobian: Newton's method cannot see it
    (Kitagawa, Merigot and Thibert start from cells of positive mass and keep them so). Cell i wins x once
    ``h_i > u(x) - <x, y_i>`` with ``u(x) = max_j s_j(x)``; h_i halfway between the smallest and the
    second smallest of these levels over x hands it exactly one point (unless two refilled cells want the
    same one), and Newton's steps grow it from there. (Handing it more at once, say half its target mass,
    breaks up tight clusters of targets: the cells of a cluster then jump past each other.) Streams over
    x, keeping the two smallest levels of every empty cell.
    """
    h, cells = h.clone(), empty.nonzero()[:, 0]
    y_empty = problem.targets[cells].double()
    smallest = None
    for start, scores in score_chunks(x, problem.targets, h.to(problem.targets.dtype)):
        points = x[start:start + scores.shape[0]].to(device=h.device, dtype=torch.float64)
        levels = scores.amax(dim=1).double()[:, None] - points @ y_empty.T
        smallest = levels if smallest is None else torch.cat([smallest, levels])
        smallest = smallest.topk(min(2, smallest.shape[0]), dim=0, largest=False, sorted=True).values
    h[cells] = smallest.mean(0)
    return h - h.mean()
