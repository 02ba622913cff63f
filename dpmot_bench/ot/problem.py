"""The semi-discrete OT problem and what every solver measures on it.

A :class:`Problem` is a source measure mu and weighted targets (y_i, nu_i); the unknown is the vector of
dual weights h (N,), whose power cells ``W_i(h) = {x : <x, y_i> + h_i >= <x, y_j> + h_j for all j}`` should
have the masses ``mu(W_i(h)) = nu_i``. Cell masses are estimated on source samples (``sampling.py``), named
by the problem's seed and a key whose first element says who draws them.

Scores are computed in centred coordinates (:class:`Scoring`): with ``a`` the source's mean (every
coordinate) and ``c = sum_i nu_i y_i``,

    <x, y_i> + h_i = <x - a, y_i - c> + (h_i + a <1, y_i - c>) + <x, c>,

and ``<x, c>`` is common to a row, so the argmax, the softmax and the score gaps are those of the centred
scores, whose float32 rounding error is that of ``|x - a| |y_i - c|`` instead of ``|x| |y_i|``: images in
[0, 1] against a uniform source on [0, 1]^3072 have inner products of about d / 4 = 768, where float32
resolves 6e-5, while the centred ones are about 10 (``benchmarks/ot_scale.py`` measures the argmax
disagreement with float64 both ways). The user's targets stay in ``Problem.targets``; the centred copy
(``Problem.scoring``, one more N x d float32 array) is what the kernel multiplies.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import unknown_name
from .distributed import all_reduce_sum_, exact_total, rank_and_world
from .kernel import ARGMAX_BLOCK, top_scores
from . import native, sampling
from .sampling import SourceSample
from .sources import Source

TARGET_ROWS = 4096  # rows of targets converted to float64 at a time (centring, the moment-matched start)


@dataclass(frozen=True)
class Scoring:
    """The targets in centred coordinates and what turns centred scores into the problem's.

    ``targets`` (N', d) float32 holds ``y_i - c`` in its first N rows and zeros after them (on the CPU N'
    is N rounded up to a multiple of ``kernel.ARGMAX_BLOCK``, so that the blocked argmax applies; the padded
    rows get the score -inf); ``origin`` is a (the source mean, a scalar: sources are isotropic);
    ``offset`` (N,) float64 is ``a <1, y_i - c>``; ``centre`` (d,) float64 is c."""

    targets: torch.Tensor
    n: int
    origin: float
    offset: torch.Tensor
    centre: torch.Tensor

    @classmethod
    def of(cls, source: Source, targets: torch.Tensor, weights: torch.Tensor) -> "Scoring":
        n, dim = targets.shape
        device = targets.device
        centre = torch.zeros(dim, dtype=torch.float64, device=device)
        for start in range(0, n, TARGET_ROWS):
            centre += weights[start:start + TARGET_ROWS].double() @ targets[start:start + TARGET_ROWS].double()
        padded = n + (-n % ARGMAX_BLOCK if device.type == "cpu" else 0)
        centred = torch.zeros(padded, dim, dtype=torch.float32, device=device)
        offset = torch.empty(n, dtype=torch.float64, device=device)
        origin = float(source.mean)
        for start in range(0, n, TARGET_ROWS):
            rows = targets[start:start + TARGET_ROWS].double() - centre
            centred[start:start + rows.shape[0]] = rows
            offset[start:start + rows.shape[0]] = origin * rows.sum(1)
        return cls(centred, n, origin, offset, centre)

    @functools.cached_property
    def y_max(self) -> float:
        """``max_i |y_i - c|`` (of the float32 centred targets)."""
        return float(self.targets[:self.n].norm(dim=1).max())

    @property
    def pads(self) -> bool:
        return self.targets.shape[0] > self.n

    def scores_h(self, h: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """The float32 weights of the centred scores, ``h + offset``; with ``hard``, -inf on the padded
        rows (argmax only: the padded targets must never win)."""
        centred = (h.double() + self.offset).float()
        if hard and self.pads:
            centred = torch.cat([centred, centred.new_full((self.targets.shape[0] - self.n,), -torch.inf)])
        return centred

    def points(self, x: torch.Tensor) -> torch.Tensor:
        """``x - a`` in float32 on the targets' device."""
        x = x.to(device=self.targets.device, dtype=torch.float32)
        return x - self.origin if self.origin != 0 else x

    @functools.cached_property
    def packed(self) -> torch.Tensor | None:
        """The padded targets in the fused kernel's layout (``native.pack``), when it applies."""
        return native.pack(self.targets) if native.applies(self.targets, 1) else None

    def top(self, x: torch.Tensor, h: torch.Tensor, k: int, columns: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``kernel.top_scores`` of the centred scores of the rows of x over the padded targets: the k
        largest and the columns of the first ``columns``; columns >= n are padded targets (fewer than k
        real ones)."""
        return top_scores(self.points(x), self.targets, self.scores_h(h, hard=True), k, columns, packed=self.packed)

    def soft_top(self, x: torch.Tensor, h: torch.Tensor, tau: float, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The entropic weights of the rows of x over their k best targets (by :meth:`top`): ``p =
        softmax(s / tau)`` over the k largest centred scores (m, k; float64), their columns (m, k), and the
        centred potential ``tau log sum exp(s / tau)`` over them (m,; float64). The other targets, left out,
        weigh less than ``exp(-(s_1 - s_k) / tau)`` each."""
        values, index = self.top(x, h, min(k, self.n))
        shifted = (values - values[:, :1]).double().div_(tau)
        return torch.softmax(shifted, dim=1), index, values[:, 0].double() + tau * torch.logsumexp(shifted, dim=1)

    def row_constant(self, x: torch.Tensor) -> torch.Tensor:
        """``<x, c>`` (float64): what the centred scores of x lack."""
        return x.to(device=self.centre.device, dtype=torch.float64) @ self.centre


@dataclass(frozen=True)
class Problem:
    """Semi-discrete OT from ``source`` to ``targets`` (N, d), float32, with ``weights`` (N,) float64,
    both on the compute device; ``seed`` names every source sample a solver draws."""

    source: Source
    targets: torch.Tensor
    weights: torch.Tensor
    seed: int = 0

    @property
    def device(self) -> torch.device:
        return self.targets.device

    @functools.cached_property
    def scoring(self) -> Scoring:
        """The centred targets the kernel scores against (built once, on first use)."""
        return Scoring.of(self.source, self.targets, self.weights)

    def sample(self, n: int, key: tuple[int, ...], quasi: bool = False) -> SourceSample:
        return SourceSample(self.source, n, self.seed, key, quasi, self.device)

    def assign(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``argmax_i <x, y_i> + h_i`` for the rows of x, from the centred float32 scores (int64)."""
        return self.scoring.top(x, h, 1)[1][:, 0]


# First element of every sample key: who draws it (so solver and evaluation samples never coincide).
ADAM_KEY, NEWTON_KEY, EVALUATION_KEY = 1, 2, 3


@dataclass(frozen=True)
class HeldSample:
    """A sample whose blocks are kept in memory (``cached``, this process's blocks; a stage's, when they
    fit), else redrawn at each pass."""

    sample: SourceSample
    cached: list | None

    @property
    def n(self) -> int:
        return self.sample.n

    def blocks(self):
        return iter(self.cached) if self.cached is not None else self.sample.blocks()

    def head(self, m: int) -> "Head":
        """The first ``m`` rows, in every process (from the cache when it holds them all)."""
        whole = self.cached if self.cached is not None and rank_and_world()[1] == 1 else None
        return Head(self.sample, min(m, self.n), whole)


@dataclass(frozen=True)
class Head:
    """The first ``n`` rows of a sample as blocks of at most ``sampling.BLOCK_ROWS`` rows, the same in every
    process (what the curvature passes integrate over: every process computes them whole); ``whole``,
    when given, is the sample's full list of blocks, already drawn. The rows do not depend on the block
    size for quasi-Monte-Carlo samples (rows of one Sobol sequence)."""

    sample: SourceSample
    n: int
    whole: list | None = None

    def blocks(self) -> Iterator[torch.Tensor]:
        blocks = iter(self.whole) if self.whole is not None else self.sample.head_blocks(self.n)
        left = self.n
        for block in blocks:
            if left <= 0:
                return
            yield block[:left]
            left -= block.shape[0]


def point_blocks(points) -> tuple[int, Iterator[torch.Tensor]]:
    """``(n, blocks)`` of a tensor of points (one block) or of a :class:`Head`-like (``.n``, ``.blocks()``)."""
    if isinstance(points, torch.Tensor):
        return points.shape[0], iter((points,))
    return points.n, points.blocks()


def soft_unit(n: int) -> float:
    """The fixed-point unit, a power of two, in which ``sample_masses`` sums n points' softmax weights:
    2^-40 of a point's weight (far below Monte-Carlo noise), coarser only when n x 2^40 would pass 2^61."""
    return 2.0 ** -min(40, 61 - max(0, n).bit_length())


def sample_masses(problem: Problem, sample, h: torch.Tensor, tau: float = 0.0, k: int = 8,
                  with_potential: bool = False, soft: list | None = None):
    """Cell masses on ``sample`` (float64, summed over processes): hard counts / n when ``tau == 0``, else
    the mean of ``softmax(s(x) / tau)`` over each point's ``k`` best targets (``Scoring.soft_top``: the
    others weigh less than ``exp(-(s_1 - s_k) / tau)`` each). With ``with_potential`` also the sample mean
    of the potential, ``max_j s_j`` or ``tau log sum_j exp(s_j / tau)`` over those k (the first term of the
    energy, whose gradient these masses are). Streams the sample's blocks: the extra memory is one block
    and its k best scores (the fused kernel writes no score matrix). ``soft`` (a list, tau > 0): every
    block's weights and columns, ``(p, index)`` of ``Scoring.soft_top``, are appended to it (k float64 and
    k int64 per point, for the Hessian at the same h and tau).

    Every sum is independent of how the blocks are shared out between processes, so W processes get one
    process's masses and potential bit for bit: counts are integers, softmax weights are rounded to
    multiples of :func:`soft_unit` and summed as integers, and the potential's per-block sums are added
    exactly (``distributed.exact_total``)."""
    scoring, n_targets = problem.scoring, problem.targets.shape[0]
    unit = soft_unit(sample.n) if tau != 0 else 1.0
    counts = torch.zeros(n_targets, dtype=torch.int64, device=problem.device)
    potentials = []
    for block in sample.blocks():
        if tau == 0:
            best, columns = scoring.top(block, h, 1)
            counts += torch.bincount(columns[:, 0], minlength=scoring.targets.shape[0])[:n_targets]
            potential = best[:, 0].double()
        else:
            p, index, potential = scoring.soft_top(block, h, tau, k)
            counts.index_add_(0, index.flatten(), p.div(unit).round_().long().flatten())
            if soft is not None:
                soft.append((p, index))
        if with_potential:
            potentials.append(scoring.row_constant(block).sum() + potential.sum())
    masses = all_reduce_sum_(counts).double().mul_(unit).div_(sample.n)  # unit: a power of two, exact
    if not with_potential:
        return masses
    block_sums = torch.stack(potentials).tolist() if potentials else []  # one device sync, not one per block
    return masses, exact_total(block_sums, problem.device) / sample.n


EPS32 = float(torch.finfo(torch.float32).eps)


class Winners:
    """The winner of every point of a held sample at a reference ``h`` and lower bounds on how safely it
    wins, so that a hard pass at a nearby h scores again only the points whose winner can change: the later
    passes of a Newton stage (and their step halvings) then cost a fraction of a pass, and so does the part
    of a larger stage's sample that repeats a smaller one (no library offers this reuse; the tests compare
    it with full passes).

    Let ``e = (d + 2) eps32 (|x| max_j |y_j| + max_j |h_j|)``: it bounds twice the float32 rounding of one
    centred score (a d-term dot product, then one addition), so a score difference whose exact value
    exceeds e has the same sign in float32. Each point keeps its winner b, its runner-up j when known, and
    two slacks: ``slack2 <= (s_b - s_j) - e`` and ``slack3 <= (s_b - s_k) - e`` for every other k (exact
    scores at ``reference``; from the float32 gaps g: ``g - 2e``; without a runner-up, both bound every
    k != b). Moving the weights to h changes ``s_b - s_k`` by ``delta_b - delta_k``, ``delta = h -
    reference``, so (:meth:`move_to`) slack3 falls by ``max(delta) - delta_b`` and slack2 by ``delta_j -
    delta_b`` (plus the rounding of the float32 h). Then, per point:

    - both slacks positive: b still wins, in float32 too;
    - slack3 positive, slack2 not: only j can overtake b; the exact difference ``D = s_j - s_b`` at h
      (float64, from the float32 operands the kernel multiplies) decides when ``|D| > e`` (the winner of
      the two and its new slacks: ``|D| - e``, and ``slack3 + max(D, 0)``);
    - otherwise (or ``|D| <= e``): the point is scored again, and its runner-up is kept from then on (a
      full pass keeps none: finding them costs it about 50% more at d = 16 with the chunked kernel and 6%
      with the fused one, where keeping them measured no faster, while the points near a facet, which come
      back move after move, are a few percent of the sample).

    The counts are therefore a full pass's, except where a point's exact scores at h tie within float32
    rounding: such points are always scored again, so the counts do not depend on the winners' history,
    and a resumed run, which rebuilds them at the saved reference, gets the same. Memory: 24 bytes per
    point."""

    #: Above this fraction of points to score again, a full pass (which also renews the reference) is cheaper.
    REUSE_FRACTION = 0.25
    BYTES_PER_POINT = 24  # int64 winner and runner-up (-1: not known), float32 slacks
    NO_RUNNER = -1

    def __init__(self, problem: Problem, sample: SourceSample, reference: torch.Tensor, sizes: list[int],
                 best: torch.Tensor, runner: torch.Tensor, slack2: torch.Tensor, slack3: torch.Tensor):
        self.problem, self.sample, self.reference = problem, sample, reference
        # this process's blocks (sample.own_blocks(), in order; ``sizes`` rows each), their rows one after another
        self.sizes, self.best, self.runner, self.slack2, self.slack3 = sizes, best, runner, slack2, slack3
        self.settled = self.rescored = 0  # points settled by their two scores, scored again (moves so far)
        width = problem.scoring.targets.shape[0]
        counts = torch.bincount(best, minlength=width).double()
        self.counts = all_reduce_sum_(counts[:problem.scoring.n].clone())

    @staticmethod
    def _margin(problem: Problem, points: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``e`` of each row of the centred float32 points (see above), at h."""
        scoring = problem.scoring
        rounding = (scoring.targets.shape[1] + 2) * EPS32 * (1 + 1e-3)  # 1e-3: room for this bound's rounding
        h_max = float(scoring.scores_h(h).abs().max())
        return points.norm(dim=1).mul_(scoring.y_max).add_(h_max).mul_(rounding)

    @classmethod
    def _score(cls, problem: Problem, points: torch.Tensor, h: torch.Tensor, runners: bool = True) -> tuple:
        """``(winner, runner-up, slack2, slack3)`` of the rows of x at h (slacks: the gaps minus 2e); without
        ``runners``, ``NO_RUNNER`` and slack3 = slack2."""
        scoring = problem.scoring
        values, columns = scoring.top(points, h, 3, 2) if runners else scoring.top(points, h, 2, 1)
        best, gap = columns[:, 0], values[:, 0] - values[:, 1]
        runner = columns[:, 1] if runners else torch.full_like(best, cls.NO_RUNNER)
        gap3 = values[:, 0] - values[:, 2] if runners else gap.clone()
        margin = cls._margin(problem, scoring.points(points), h).mul_(2)
        runner.masked_fill_(runner >= scoring.n, cls.NO_RUNNER)  # a padded target: one real target only
        return best, runner, gap.sub_(margin), gap3.sub_(margin)

    @classmethod
    def build(cls, problem: Problem, held: "HeldSample", h: torch.Tensor, kept: "Winners | None" = None) -> "Winners":
        """A full hard pass at h that keeps every point's winner and slacks; with ``kept`` (winners at h on a
        smaller sample of the same stream), only the blocks it does not hold in full are scored."""
        same_stream = kept is not None and dataclasses.replace(kept.sample, n=held.n) == held.sample
        reuse = same_stream and torch.equal(kept.reference, h)
        sizes = [block.shape[0] for block in held.cached]
        # The kept sample's own blocks are the first ones of this one's; those it holds in full are reused.
        full = 0
        if reuse:
            while full < min(len(sizes), len(kept.sizes)) and kept.sizes[full] == sizes[full] == sampling.BLOCK_ROWS:
                full += 1
        rows = sum(sizes[:full])
        parts = [(kept.best[:rows], kept.runner[:rows], kept.slack2[:rows], kept.slack3[:rows])] if full else []
        parts += [cls._score(problem, block, h, runners=False) for block in held.cached[full:]]  # see above
        if not parts:
            empty = torch.empty(0, dtype=torch.int64, device=problem.device)
            parts = [(empty, empty, empty.float(), empty.float())]
        return cls(problem, held.sample, h.clone(), sizes, *(torch.cat(column) for column in zip(*parts)))

    def _points(self, held: "HeldSample", rows: torch.Tensor) -> torch.Tensor:
        """The points of the given (sorted) rows of this process's blocks."""
        per_block = torch.bincount(rows // sampling.BLOCK_ROWS, minlength=len(self.sizes)).tolist()
        parts = [block.index_select(0, part.to(block.device) % sampling.BLOCK_ROWS)
                 for block, part, count in zip(held.cached, rows.split(per_block), per_block) if count]
        return torch.cat(parts) if parts else held.cached[0][:0]

    def move_to(self, held: "HeldSample", h: torch.Tensor) -> bool:
        """Move the reference to h: lower the slacks by what the move could cost them, settle the points
        whose runner-up alone may overtake by their two exact scores, score again the others whose winner
        may have changed, and update the counts; False (nothing changed) when more than
        ``REUSE_FRACTION`` of the points would have to be scored."""
        problem, scoring = self.problem, self.problem.scoring
        delta = (h.double() - self.reference).float()
        # s_b - s_k moves by delta_b - delta_k >= delta_b - max delta; the float32 h adds its rounding.
        rounding = 2 * EPS32 * float(scoring.scores_h(h).abs().max())
        at_best = delta.index_select(0, self.best)
        third = self.slack3 - (float(delta.max()) + rounding) + at_best
        unsure = third <= 0
        count = torch.tensor([float(unsure.sum())], dtype=torch.float64, device=problem.device)
        if float(all_reduce_sum_(count)) > self.REUSE_FRACTION * held.n:
            return False
        known = self.runner >= 0
        second = self.slack2 - delta.index_select(0, self.runner.clamp(min=0)).sub_(at_best).add_(rounding)
        second = torch.where(known, second, third)
        self.slack2, self.slack3 = second, third
        width = scoring.targets.shape[0]
        best, runner = self.best, self.runner
        change = torch.zeros(width, dtype=torch.float64, device=problem.device)
        pair = ((second <= 0) & ~unsure).nonzero().squeeze(1)
        if pair.numel():
            b, j = best[pair], runner[pair]
            points = scoring.points(self._points(held, pair))
            difference = (points.double() * (scoring.targets[j].double() - scoring.targets[b].double())).sum(1)
            h32 = scoring.scores_h(h).double()
            difference += h32[j] - h32[b]  # D = s_j - s_b, exact up to float64 rounding
            margin = self._margin(problem, points, h).double()
            swap = difference > margin
            settled = swap | (difference < -margin)
            self.settled += int(settled.sum())
            second[pair] = torch.where(settled, difference.abs() - margin, second[pair].double()).float()
            third[pair] = torch.where(swap, third[pair].double() + difference, third[pair].double()).float()
            turned = pair[swap]
            change -= torch.bincount(best[turned], minlength=width)
            best[turned], runner[turned] = runner[turned], best[turned]
            change += torch.bincount(best[turned], minlength=width)
            unsure[pair[~settled]] = True
        rows = unsure.nonzero().squeeze(1)
        if rows.numel():
            self.rescored += rows.numel()
            change -= torch.bincount(best[rows], minlength=width)
            best[rows], runner[rows], second[rows], third[rows] = self._score(problem, self._points(held, rows), h)
            change += torch.bincount(best[rows], minlength=width)
        self.counts += all_reduce_sum_(change[:scoring.n].clone())
        self.reference = h.clone()
        return True


def hard_masses(problem: Problem, held: "HeldSample", h: torch.Tensor, winners: Winners | None,
                reference: torch.Tensor | None) -> tuple[torch.Tensor, Winners]:
    """The hard masses at h on a held sample, from ``winners`` kept at ``reference`` (completed there for
    the blocks they lack, or rebuilt there after a resume), and the winners moved to h (or rebuilt at h
    when too many points had to be scored again). The masses are a full pass's (see :class:`Winners`),
    whatever the winners' history: a resumed run gets the same."""
    if reference is not None and (winners is None or winners.sample != held.sample
                                  or not torch.equal(winners.reference, reference)):
        winners = Winners.build(problem, held, reference, winners)
    if winners is not None and torch.equal(problem.scoring.scores_h(winners.reference), problem.scoring.scores_h(h)):
        winners.reference = h.clone()  # the same float32 weights, the same scores: nothing moves
    elif winners is None or not winners.move_to(held, h):
        winners = Winners.build(problem, held, h)
    return winners.counts / held.n, winners


def mass_errors(masses: torch.Tensor, weights: torch.Tensor) -> dict:
    """The accuracy measures used everywhere: l1 = sum_i |m_i - nu_i|, the largest relative error
    max_i |m_i - nu_i| / nu_i, and the number of empty cells."""
    error = (masses - weights).abs()
    return {"l1_mass_error": float(error.sum()), "max_rel_mass_error": float((error / weights).max()),
            "empty_cells": int((masses == 0).sum())}


def moment_matched_h(problem: Problem) -> torch.Tensor:
    """A starting h whose cells are the Voronoi cells of the targets seen in source coordinates.

    The affine map ``x -> c + a (x - m)`` (c the targets' mean, a = their spread / the source's, m the
    source mean) has potential ``|c/a - m + x|^2 a / 2`` up to constants; its dual weights are
    ``h_i = -|y_i - c|^2 / (2a) - <m, y_i>``, with which ``argmax_i <x, y_i> + h_i`` is the target nearest
    to ``c + a (x - m)``. Every cell then starts non-empty with a mass of the right order, whereas
    ``h = 0`` leaves each target inside the convex hull of the others with an empty cell. Computed on
    ``TARGET_ROWS`` rows at a time in float64.
    """
    centre = problem.scoring.centre
    n = problem.targets.shape[0]
    squares = torch.empty(n, dtype=torch.float64, device=problem.device)
    sums = torch.empty(n, dtype=torch.float64, device=problem.device)
    for start in range(0, n, TARGET_ROWS):
        y = problem.targets[start:start + TARGET_ROWS].double()
        squares[start:start + y.shape[0]] = ((y - centre) ** 2).sum(1)
        sums[start:start + y.shape[0]] = y.sum(1)
    spread = (problem.weights @ squares / problem.targets.shape[1]).sqrt().clamp_min(1e-12)
    a = spread / problem.source.coordinate_std
    h = -squares / (2 * a) - problem.source.mean * sums
    return h - h.mean()


INITS = ("zeros", "moment-matched")


def initial_h(problem: Problem, init: str) -> torch.Tensor:
    if init == "zeros":
        return torch.zeros(problem.targets.shape[0], dtype=torch.float64, device=problem.device)
    if init == "moment-matched":
        return moment_matched_h(problem)
    raise unknown_name("init", init, INITS)
