"""The assignment kernel: scores ``s_ij = <x_i, y_j> + h_j`` of M source points against N targets.

Everything semi-discrete OT needs is a reduction of one row of scores: the power cell ``argmax_j s_ij``
(hard map, cell counts), the maximum (the Brenier potential ``u_h(x) = max_j s_ij``), and the softmax with
temperature tau (smoothed map, entropic potential and masses, their derivatives). The score matrix is never
materialised: rows are processed in chunks written by ``torch.addmm`` into one preallocated buffer, so the
extra memory is ``chunk x N`` whatever M is, and a chunk that fits in cache is reduced while it is still
there (that, not the multiply, is what bounds the naive one-liner ``(x @ Y.T + h).argmax(1)`` at small d).
torch has no fused GEMM + argmax on CPU: the hard reductions (:func:`top_scores`: the argmax and the next
best scores) use the fused kernel of ``native.py`` where it is built, which never writes the scores.

Ties go to the lowest index (``torch.argmax`` returns the first maximal value, on CPU and CUDA). The
kernel runs in the dtype and on the device of ``targets`` (float32 by default everywhere in ``ot``).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from . import native

CHUNK_BYTES = 4 * 2**20  # score buffer size: measured best on CPU (benchmarks/ot_kernel.py), within L3 cache
# At least MIN_CHUNK_ROWS rows per product: MKL multiplies one or two rows by another path (a GEMV) whose float32
# rounding differs from a chunk's, and the kept winners of ``problem.Winners`` must see a full pass's scores.
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 64, 8192
ARGMAX_BLOCK = 64  # measured best of 16 to 256 (rows of 1000 to 4000 scores)
SOFTMAX_TAIL = 43.0  # exp(-43) = 2e-19: softmax entries below it are 0 (products of two stay above 1.2e-38)


def chunk_rows(n_targets: int, element_size: int = 4, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that the ``rows x n_targets`` score buffer takes about ``chunk_bytes``."""
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, chunk_bytes // max(1, n_targets * element_size)))


def score_chunks(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, rows: int | None = None,
                 buffer: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, s)`` with ``s = x[start:start + len(s)] @ targets.T + h``.

    ``s`` is a view of one reused buffer (``buffer``, at least ``rows x N``, when given, e.g. by a caller
    that loops over many x): consume it before asking for the next chunk. A last chunk of fewer than
    ``MIN_CHUNK_ROWS`` rows is multiplied together with the rows before it (see MIN_CHUNK_ROWS), so that
    it is rounded like the other chunks.
    """
    x = x.to(device=targets.device, dtype=targets.dtype)
    h = h.to(device=targets.device, dtype=targets.dtype)
    rows = rows or chunk_rows(targets.shape[0], targets.element_size())
    if buffer is None:
        buffer = torch.empty(min(rows, x.shape[0]), targets.shape[0], dtype=targets.dtype, device=targets.device)
    for start in range(0, x.shape[0], rows):
        stop = min(start + rows, x.shape[0])
        first = max(0, min(start, stop - min(rows, MIN_CHUNK_ROWS)))
        scores = buffer[:stop - first]
        torch.addmm(h, x[first:stop], targets.T, out=scores)
        yield start, scores[start - first:]


def padded(targets: torch.Tensor, h: torch.Tensor, block: int = ARGMAX_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """``targets`` and ``h`` padded to a multiple of ``block`` rows with zero targets of weight -inf: their
    scores are -inf, so they never win an argmax (h is finite) and :func:`argmax_rows` can use blocks."""
    extra = -targets.shape[0] % block
    if extra == 0 or targets.device.type != "cpu":
        return targets, h
    return (torch.cat([targets, targets.new_zeros(extra, targets.shape[1])]),
            torch.cat([h.to(targets.dtype), h.new_full((extra,), -math.inf, dtype=targets.dtype)]))


def _blockable(scores: torch.Tensor) -> bool:
    """Whether the blocked scheme of :func:`argmax_rows` applies (CPU, contiguous, N a multiple of
    ``ARGMAX_BLOCK`` and at least two blocks)."""
    n = scores.shape[1]
    return scores.device.type == "cpu" and n % ARGMAX_BLOCK == 0 and n >= 2 * ARGMAX_BLOCK and scores.is_contiguous()


def _winning_block(scores: torch.Tensor):
    """The blocked scheme's parts: the block maxima (rows, N / ARGMAX_BLOCK), the first block holding the row
    maximum, that block's scores (a copy, rows x ARGMAX_BLOCK) and the first maximum's position in it."""
    rows, n = scores.shape
    per_row = n // ARGMAX_BLOCK
    blocks = scores.view(rows * per_row, ARGMAX_BLOCK)
    maxima = blocks.amax(dim=1).view(rows, per_row)
    first = maxima.argmax(dim=1)
    chosen = torch.arange(0, rows * per_row, per_row, device=scores.device).add_(first)
    inside = blocks.index_select(0, chosen)
    return maxima, first, inside, inside.argmax(dim=1)


def argmax_rows(scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``scores.argmax(dim=1)``, the lowest index on ties, for a contiguous (rows, N) matrix.

    Written by hand because torch's CPU argmax is not vectorised along a row: it costs about ten times an
    ``amax`` and, at small d, several times the GEMM that produced the scores. When N is a multiple of
    ``ARGMAX_BLOCK`` the row is cut into blocks: the (vectorised) block maxima, the first block holding the
    row maximum, then the first maximum inside that block (the blocks gathered with ``index_select``,
    several times faster than advanced indexing); the first block, then the first position in it, is the
    lowest index among ties. Elsewhere (CUDA, other N) it is ``torch.argmax``.
    """
    if not _blockable(scores):
        return torch.argmax(scores, dim=1, out=out)
    _, first, _, within = _winning_block(scores)
    index = first.mul_(ARGMAX_BLOCK).add_(within)
    return index if out is None else out.copy_(index)


def best_and_second(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(argmax_rows(scores), values)`` per row: the winner (lowest index on ties) and the two largest
    scores (rows, 2; the second -inf for a single finite score).

    By the blocked scheme of :func:`argmax_rows` at nearly its cost: the second largest score is either the
    second largest in the winning block or the largest of another block, and both come from the block
    maxima and the winning block already at hand (``torch.topk(scores, 2)`` costs about 3x more on CPU).
    Elsewhere (CUDA, other N) it is ``argmax`` and ``topk``. ``scores`` is left unchanged."""
    n = scores.shape[1]
    if not _blockable(scores):
        top = scores.topk(min(2, n), dim=1).values
        second = top[:, 1] if n > 1 else torch.full_like(top[:, 0], -math.inf)
        return torch.argmax(scores, dim=1), torch.stack([top[:, 0], second], dim=1)
    maxima, first, inside, within = _winning_block(scores)
    best = inside.gather(1, within.unsqueeze(1)).squeeze(1)
    inside.scatter_(1, within.unsqueeze(1), -math.inf)
    maxima.scatter_(1, first.unsqueeze(1), -math.inf)
    second = torch.maximum(inside.amax(dim=1), maxima.amax(dim=1))
    return first.mul_(ARGMAX_BLOCK).add_(within), torch.stack([best, second], dim=1)


def best_runner_and_third(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(best, runner, values)`` per row: the winner (lowest index on ties, as :func:`argmax_rows`), a
    runner-up (a column of the second largest score, another than best), and (rows, 3) the scores of the
    two and the largest of every other column (-inf where there is none).

    By the blocked scheme of :func:`best_and_second`, plus the runner-up's block: the runner-up is the
    largest score of the winning block without the winner or the largest of the block with the second
    largest maximum, and the third largest is the largest of what remains of those two blocks and of the
    other blocks' maxima. Elsewhere (CUDA, other N) ``argmax`` and ``topk(3)``. ``scores`` is left unchanged."""
    rows, n = scores.shape
    if not _blockable(scores):
        best = torch.argmax(scores, dim=1)
        if n == 1:
            none = torch.full_like(scores[:, 0], -math.inf)
            return best, best.clone(), torch.stack([scores[:, 0], none, none], dim=1)
        top = scores.topk(min(3, n), dim=1)
        first, second = top.indices[:, 0], top.indices[:, 1]
        runner = torch.where(first == best, second, first)
        v = top.values
        third = v[:, 2] if n > 2 else torch.full_like(v[:, 0], -math.inf)
        # best outside the top two indices: three or more tie at the top, and so does the "third".
        third = torch.where((first == best) | (second == best), third, v[:, 1])
        return best, runner, torch.stack([v[:, 0], v[:, 1], third], dim=1)
    per_row = n // ARGMAX_BLOCK
    maxima, first, inside, within = _winning_block(scores)
    best_value = inside.gather(1, within.unsqueeze(1)).squeeze(1)
    inside.scatter_(1, within.unsqueeze(1), -math.inf)
    rest_first = inside.amax(dim=1)  # the winning block without the winner
    maxima.scatter_(1, first.unsqueeze(1), -math.inf)
    other = maxima.argmax(dim=1)  # the block with the second largest maximum
    other_max = maxima.gather(1, other.unsqueeze(1)).squeeze(1)
    maxima.scatter_(1, other.unsqueeze(1), -math.inf)
    rest_max = maxima.amax(dim=1)  # every other block
    base = torch.arange(0, rows * per_row, per_row, device=scores.device)
    in_first = rest_first >= other_max
    pool = torch.where(in_first.unsqueeze(1), inside,
                       scores.view(rows * per_row, ARGMAX_BLOCK).index_select(0, base.add_(other)))
    at = pool.argmax(dim=1)
    runner = torch.where(in_first, first, other).mul_(ARGMAX_BLOCK).add_(at)
    pool.scatter_(1, at.unsqueeze(1), -math.inf)
    third = torch.maximum(pool.amax(dim=1), torch.where(in_first, other_max, torch.maximum(rest_first, rest_max)))
    best = first.mul_(ARGMAX_BLOCK).add_(within)
    return best, runner, torch.stack([best_value, torch.maximum(rest_first, other_max), third], dim=1)


def topk_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The columns of the ``k`` largest scores of each row, largest first (``scores.topk(k).indices``,
    up to the order among ties).

    By blocks where :func:`argmax_rows` uses them and there are more than k blocks: the k largest scores lie
    in the k blocks with the largest maxima (a block holding one of them has a maximum at least the k-th
    largest score, which no other block exceeds), so ``topk`` runs on k blocks instead of the whole row
    (``torch.topk`` costs about 3x the matrix product that made the scores at d = 16 on CPU)."""
    rows, n = scores.shape
    if not _blockable(scores) or n // ARGMAX_BLOCK <= k:
        return scores.topk(k, dim=1).indices
    per_row = n // ARGMAX_BLOCK
    blocks = scores.view(rows * per_row, ARGMAX_BLOCK)
    top_blocks = blocks.amax(dim=1).view(rows, per_row).topk(k, dim=1).indices
    chosen = torch.arange(0, rows * per_row, per_row, device=scores.device)[:, None] + top_blocks
    local = blocks.index_select(0, chosen.flatten()).view(rows, k * ARGMAX_BLOCK).topk(k, dim=1).indices
    return top_blocks.gather(1, local // ARGMAX_BLOCK).mul_(ARGMAX_BLOCK).add_(local % ARGMAX_BLOCK)


def top_scores(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, k: int, columns: int | None = None,
               rows: int | None = None, packed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, index)``: the k largest scores ``<x_i, y_j> + h_j`` of every row of x (m, k), largest
    first, and the columns of the first ``columns`` of them (m, columns; default k). The first column is
    the argmax with the lowest index on ties (as :func:`argmax_rows`); the others hold the next largest
    values (any of them on ties). With fewer than k targets the missing entries are (-inf, N). Padded
    targets (:func:`padded`) have the score -inf and never come before a real one.

    By the fused kernel (``native.py``: no score matrix is written to memory) where it applies
    (``native.applies``: on the CPU in float32, N a multiple of 16, d <= ``native.MAX_DIM``; ``packed``: the
    targets in its layout, when the caller keeps them). Elsewhere chunk by chunk, by the blocked reductions
    above, which cost less with fewer ``columns`` (k = 2 with one column is :func:`best_and_second`, k <= 3 with two is
    :func:`best_runner_and_third`). The two kernels round the scores differently (fused multiply-adds in
    order, or BLAS): they may disagree where scores tie within float32 rounding, and a solver keeps one.
    """
    columns = k if columns is None else columns
    if native.applies(targets, k):
        values, index = native.top_k(x, native.pack(targets) if packed is None else packed, h, k)
        return values, index[:, :columns]
    m, n = x.shape[0], targets.shape[0]
    if 0 < m < MIN_CHUNK_ROWS:  # see MIN_CHUNK_ROWS: a few rows alone may be rounded otherwise
        filler = x.new_zeros(MIN_CHUNK_ROWS - m, x.shape[1])
        return tuple(part[:m] for part in top_scores(torch.cat([x, filler]), targets, h, k, columns, rows))
    values = torch.full((m, k), -math.inf, dtype=targets.dtype, device=targets.device)
    index = torch.full((m, columns), n, dtype=torch.int64, device=targets.device)
    found = min(k, n)
    for start, scores in score_chunks(x, targets, h, rows):
        end = start + scores.shape[0]
        if found == 1:
            best = argmax_rows(scores)
            values[start:end, 0] = scores.gather(1, best[:, None])[:, 0]
            index[start:end, :min(columns, 1)] = best[:, None]
            continue
        if k == 2 and columns <= 1:
            best, top = best_and_second(scores)
            values[start:end] = top
            index[start:end, :columns] = best[:, None]
            continue
        if k <= 3 and columns <= 2:
            best, runner, top = best_runner_and_third(scores)
            values[start:end, :found] = top[:, :found]
            index[start:end, :columns] = torch.stack([best, runner], dim=1)[:, :columns]
            continue
        best, top = argmax_rows(scores), topk_rows(scores, found)
        keep = top != best[:, None]
        keep[keep.all(dim=1), -1] = False  # the argmax is not among them (a tie): drop the last instead
        top = torch.cat([best[:, None], top[keep].view(-1, found - 1)], dim=1)
        values[start:end, :found] = scores.gather(1, top)
        index[start:end, :min(columns, found)] = top[:, :columns]
    return values, index


def assign(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """``argmax_j <x_i, y_j> + h_j`` for every row of x (int64, lowest index on ties, up to float32
    rounding: see :func:`top_scores`)."""
    x = x.to(device=targets.device, dtype=targets.dtype)
    return top_scores(x, *padded(targets, h.to(targets.dtype)), 1, rows)[1][:, 0]


def cell_counts(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """How many rows of x fall in each power cell: ``bincount(assign(x))`` (int64, length N)."""
    return torch.bincount(assign(x, targets, h, rows), minlength=targets.shape[0])


def potential(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, tau: float = 0.0,
              rows: int | None = None) -> torch.Tensor:
    """The Brenier potential ``u_h(x) = max_j s_j`` (tau = 0) or its entropic smoothing
    ``u_tau(x) = tau log sum_j exp(s_j / tau) - tau log N``, with ``u_h - tau log N <= u_tau <= u_h``."""
    values = torch.empty(x.shape[0], dtype=targets.dtype, device=targets.device)
    for start, scores in score_chunks(x, targets, h, rows):
        out = values[start:start + scores.shape[0]]
        if tau > 0:
            torch.logsumexp(scores.div_(tau), dim=1, out=out)
            out.mul_(tau).sub_(tau * math.log(targets.shape[0]))
        else:
            torch.amax(scores, dim=1, out=out)
    return values


def softmax_(scores: torch.Tensor, tau: float, sums: torch.Tensor | None = None) -> torch.Tensor:
    """Row softmax of ``scores / tau`` in place (the buffer is reused: no allocation of chunk x N). With
    ``sums`` (rows, 1), the normalisers ``sum_j exp((s_j - max s) / tau)`` are written there, so that
    ``tau log sum_j exp(s_j / tau) = max s + tau log sums``.

    Entries below ``exp(-SOFTMAX_TAIL)`` of their row's largest are set to exactly 0: they are below
    float32's resolution of the row sum, and left in they are subnormal numbers (below 1.2e-38, e.g. the
    softmax of widely spread scores at d = 3072), on which the exponential and the products that follow
    (the entropic Hessian's ``p^T p``) run ~10x slower on CPUs; the cut keeps every product of two
    entries a normal number."""
    scores.sub_(scores.amax(dim=1, keepdim=True)).div_(tau)
    scores.masked_fill_(scores < -SOFTMAX_TAIL, -math.inf).exp_()
    total = torch.sum(scores, dim=1, keepdim=True, out=sums)
    return scores.div_(total)


def smooth_transport(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, tau: float,
                     rows: int | None = None) -> torch.Tensor:
    """The smoothed map ``grad u_tau(x) = sum_j softmax_j(s / tau) y_j`` (tends to the hard map as tau -> 0)."""
    out = torch.empty(x.shape[0], targets.shape[1], dtype=targets.dtype, device=targets.device)
    for start, scores in score_chunks(x, targets, h, rows):
        torch.mm(softmax_(scores, tau), targets, out=out[start:start + scores.shape[0]])
    return out


def soft_masses(x: torch.Tensor, targets: torch.Tensor, h: torch.Tensor, tau: float,
                rows: int | None = None) -> torch.Tensor:
    """``sum_i softmax(s_i / tau)`` (float64, length N): M times the gradient in h of the mean entropic
    potential; minus the target weights it is the gradient of the entropic semi-dual."""
    total = torch.zeros(targets.shape[0], dtype=torch.float64, device=targets.device)
    for _, scores in score_chunks(x, targets, h, rows):
        total += softmax_(scores, tau).sum(dim=0, dtype=torch.float64)
    return total
