"""``newton-qmc``: multiscale damped Newton on the cell masses, on quasi-Monte-Carlo samples (this
toolkit's fast solver), after an entropic warm-up.

It solves ``mu(W_i(h)) = nu_i`` for all i, the minimum of the semi-dual
``E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i``, in named parts: the sample-size and
temperature schedule (:func:`newton_levels`), the starting state (:func:`initial_state`), one pass of the
line search (:func:`newton_iteration`: trial point, acceptance, then a new Newton direction), and the
stopping rule of a stage (:func:`stage_over`, :func:`finished`). :func:`newton_qmc` strings them together.

Accuracy: a hard stage fits the masses of its own sample, so h is off by that sample's integration error,
about ``sqrt(2 N / (pi n))`` in l1 for n points in high dimension (quasi-Monte Carlo does far better only
in low dimension): the default schedule's end, n = 256 N, gives l1 ~ 0.05 whatever N is. With ``tol``
(the l1 cell-mass error asked for), every stage from the schedule's end on is followed by the independent
check (``check.py``: fresh Monte-Carlo points, floor <= tol / 2); while it disagrees (and could agree within
its budget) one more stage, ``growth`` times larger (at most ``max_samples``), is added, until it agrees or
``max_iter`` ends the fit.

Memory: every pass streams its points in blocks of ``sampling.BLOCK_ROWS`` rows (masses, entropic
Hessian, facet Jacobian, refill of empty cells, median gap), so besides the targets (and their centred
copy, ``problem.Scoring``) it holds: the Hessian or Jacobian (dense N x N float64 when N <= ``dense_limit``,
else sparse: its distinct entries plus ``curvature.SPARSE_FLUSH`` buffered ones), one block of points and
one score buffer where the fused kernel does not apply (``kernel.CHUNK_BYTES``), ``curvature.FACET_BYTES``
of float64 target differences, the ``topk`` best scores of one block, a few N-vectors,
``curvature.QUANTILE_POINTS`` per-point scalars for the median gap and the facet band, in a warm-up pass
whose held sample is the Hessian's (at most ``hessian_samples`` points) their softmax weights and columns
(``topk`` of each per point, 16 bytes apiece), and the stage's and the Jacobian's samples when they fit
in ``cache_bytes`` together (else they are redrawn at each pass): flat in the number of points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..options import check_fields, option
from .check import FLOOR_FRACTION, check_budget, noise_floor, sampled_check
from .curvature import entropic_hessian, facet_jacobian, median_gap, newton_direction, refill_empty
from . import sampling
from .problem import (INITS, NEWTON_KEY, Head, HeldSample, Problem, Winners, hard_masses, initial_h, mass_errors,
                      sample_masses)


@dataclass(frozen=True)
class NewtonQMCOptions:
    """The options of :func:`newton_qmc`, checked when built (an :class:`~dpmot_bench.errors.InputError`
    names a mistyped or out-of-range field). Sample sizes default to multiples of N, the number of targets.

    ``floor`` and ``shift`` are > 0: the Hessian and the Jacobian are graph Laplacians (h + c is the same
    solution), with a zero row for every cell that no sample point borders; they make the systems
    definite (``damping`` alone does not reach those rows, so it may be 0)."""

    max_iter: int = option(200, int, low=1, help="passes over a stage's sample, in all")
    n_samples: int | None = option(None, int, low=1, optional=True, help="the last stage's sample (default 256 N)")
    first_samples: int | None = option(None, int, low=1, optional=True, help="the first stage's sample (default 16 N)")
    growth: int = option(4, int, low=2, help="sample-size factor from one hard stage to the next")
    quasi: bool = option(True, bool, help="scrambled Sobol points (else Monte Carlo)")
    smoothing: float = option(0.5, float, above=0, help="the last warm-up temperature, in median score gaps")
    first_smoothing: float | None = option(2.0, float, above=0, optional=True,
                                           help="the first warm-up temperature (null: no warm-up)")
    topk: int = option(8, int, low=2, help="best targets per point in the warm-up's entropic masses and Hessian")
    damping: float = option(1e-3, float, low=0, help="Levenberg-Marquardt damping of the entropic Hessian")
    floor: float = option(1e-2, float, above=0, help="least Hessian diagonal, in medians of its diagonal")
    trust: float = option(4.0, float, above=0, help="largest entropic step per target, in temperatures")
    armijo: float = option(1e-4, float, low=0, high=1, help="Armijo's sufficient-decrease constant, < 1")
    stage_tol: float = option(0.5, float, above=0, help="a stage's |g|_1 goal, in Monte-Carlo l1 errors")
    final_tol: float = option(0.1, float, above=0, help="the last stage's |g|_1 goal, in Monte-Carlo l1 errors")
    max_halvings: int = option(6, int, low=0, help="failed step halvings that end a stage")
    warmup_iter: int = option(3, int, low=0, help="passes per warm-up temperature")
    band_quantile: float = option(0.2, float, above=0, high=1,
                                  help="facet band width, a quantile of the distances to the nearest facet, < 1")
    shift: float = option(1e-2, float, above=0, help="uniform shift of the Jacobian, in medians of its diagonal")
    init: str = option("moment-matched", str, choices=INITS, help="the starting h")
    dense_limit: int = option(4096, int, low=0, help="largest N with dense Hessians and Jacobians")
    hessian_samples: int | None = option(None, int, low=1, optional=True,
                                         help="points of the entropic Hessian (default 16 N)")
    jacobian_samples: int | None = option(None, int, low=1, optional=True,
                                          help="points of the hard Jacobian (default 64 N)")
    cache_bytes: int = option(2**30, int, low=0, help="bytes of sample points held in memory (stage and Jacobian)")
    tol: float | None = option(None, float, above=0, optional=True,
                               help="the l1 cell-mass error to reach, confirmed by the independent check "
                                    "(null: the fixed schedule; the check then tests 0.01)")
    max_samples: int = option(2**30, int, low=1, help="largest stage sample when growing towards tol")
    check_samples: int | None = option(None, int, low=1, optional=True,
                                       help="most points of the independent check (null: 2^26 with tol, 2^20 without)")

    def __post_init__(self):
        check_fields(self)
        for name in ("armijo", "band_quantile"):
            if getattr(self, name) >= 1:
                raise InputError(f"option {name} must be a number < 1, got {getattr(self, name)!r}")
        if self.first_smoothing is not None and self.first_smoothing < self.smoothing:
            raise InputError(f"option first_smoothing ({self.first_smoothing!r}) must be >= smoothing "
                             f"({self.smoothing!r}), the warm-up's last temperature (null: no warm-up)")


@dataclass(frozen=True)
class NewtonLog:
    """One pass of :func:`newton_qmc` over its stage's sample, at the trial point of that pass."""

    iteration: int  # 0-based
    stage: int  # index into newton_levels
    samples: int  # the stage's sample size
    l1_mass_error: float  # sum_i |m_i - nu_i| (hard or smoothed masses, as the stage measures them)
    max_rel_mass_error: float  # max_i |m_i - nu_i| / nu_i
    empty_cells: int
    step: float  # the step length a of the trial point h - a d (0: the stage's first pass)
    tau: float  # the temperature (0: a hard stage)


def newton_levels(n_targets: int, options: NewtonQMCOptions, extra: int = 0) -> list[tuple[int, float]]:
    """The (sample size, relative temperature) of each stage: an entropic warm-up whose temperature halves
    from ``first_smoothing`` down to ``smoothing`` on the first sample (none when ``first_smoothing`` is
    None), then hard stages (temperature 0) on that sample and on samples ``growth`` times larger, up to
    ``n_samples``; then ``extra`` stages, each ``growth`` times larger again (at most ``max_samples``),
    added while the check disagrees with tol (:func:`grow_towards_tol`)."""
    n_final = int(options.n_samples or 256 * n_targets)
    n = min(int(options.first_samples or 16 * n_targets), n_final)
    levels, relative = [], options.first_smoothing
    while relative is not None and relative >= options.smoothing:
        levels.append((n, relative))
        relative /= 2
    levels.append((n, 0.0))
    while n < n_final:
        n = min(n * options.growth, n_final)
        levels.append((n, 0.0))
    for _ in range(extra):
        n = min(n * options.growth, max(options.max_samples, n))
        levels.append((n, 0.0))
    return levels


def initial_state(problem: Problem, options: NewtonQMCOptions) -> dict:
    """The solver state before the first pass (tensors and JSON-able scalars, resumable as is): stage 0
    at the starting h, no direction yet."""
    h = initial_h(problem, options.init)
    return {"iteration": 0, "stage": 0, "stage_start": 0, "h": h, "solution": h, "tau": None, "g": None,
            "step": None, "halving": 0, "scale": 1.0, "refilled": -1, "done": False, "samples_used": 0,
            "extra_stages": 0, "checks": 0, "check": None, "reference": None}


class StageSamples:
    """The points the passes integrate over, drawn on first use and never part of the state (a resumed
    run redraws them from seed and key): the stages' samples, the first rows of one stream (key
    ``(NEWTON_KEY, 1)``: a stage's sample repeats the previous one's and adds to it), and one fixed set for
    every hard Jacobian and refill (key ``(NEWTON_KEY, 0)``, ``jacobian_samples`` points), each held in
    memory when it fits in what ``cache_bytes`` leaves (float32 points and, for a stage, the kept winners
    of ``problem.Winners``; first come, first held), else streamed: redrawn block by block at each pass.
    A held stage keeps the previous stage's full blocks (points and winners) instead of redrawing and
    rescoring them."""

    STAGE_KEY = (NEWTON_KEY, 1)

    def __init__(self, problem: Problem, options: NewtonQMCOptions):
        self.problem, self.options = problem, options
        self.dense = problem.targets.shape[0] <= options.dense_limit
        self.held: HeldSample | None = None
        self.winners: Winners | None = None
        self.jacobian_points: Head | None = None

    def _bytes(self, n: int, stage: bool) -> int:
        return n * (self.problem.source.dim * 4 + (Winners.BYTES_PER_POINT if stage else 0))

    def _fits(self, n: int, stage: bool, other) -> bool:
        if other is None or (other.cached if isinstance(other, HeldSample) else other.whole) is None:
            held = 0
        else:
            held = self._bytes(other.n, True) if isinstance(other, HeldSample) else self._bytes(other.sample.n, False)
        return self._bytes(n, stage) + held <= self.options.cache_bytes

    def stage(self, n: int) -> HeldSample:
        if self.held is None or self.held.n != n:
            previous, self.held = self.held, None
            sample = self.problem.sample(n, self.STAGE_KEY, self.options.quasi)
            cached = None
            if self._fits(n, True, self.jacobian_points):
                kept = {}
                if previous is not None and previous.cached is not None:
                    kept = {index: block for index, block in zip(previous.sample.own_blocks(), previous.cached)
                            if block.shape[0] == sampling.BLOCK_ROWS}
                own = sample.own_blocks()
                missing = [index for index in own if index not in kept]  # the blocks after the kept ones
                drawn = dict(zip(missing, sample.blocks(range(missing[0], sample.n_blocks, own.step)))) if missing else {}
                cached = [kept[index] if index in kept else drawn[index] for index in own]
            else:
                self.winners = None
            self.held = HeldSample(sample, cached)
        return self.held

    def jacobian(self) -> Head:
        if self.jacobian_points is None:
            m = int(self.options.jacobian_samples or 64 * self.problem.targets.shape[0])
            sample = self.problem.sample(m, (NEWTON_KEY, 0), self.options.quasi)
            whole = list(sample.blocks(range(sample.n_blocks))) if self._fits(m, False, self.held) else None
            self.jacobian_points = Head(sample, m, whole)
        return self.jacobian_points

    def hard_masses(self, h: torch.Tensor, state: dict) -> torch.Tensor:
        """The hard masses at h on the stage's sample: from the kept winners (``problem.Winners``, at
        ``state["reference"]``, which this updates) when the sample is held, else a full streamed pass."""
        if self.held.cached is None:
            self.winners, state["reference"] = None, None
            return sample_masses(self.problem, self.held, h)
        masses, self.winners = hard_masses(self.problem, self.held, h, self.winners, state.get("reference"))
        state["reference"] = self.winners.reference
        return masses


def stage_over(state: dict, level: tuple[int, float], last: bool, n_targets: int, options: NewtonQMCOptions) -> bool:
    """The stopping rule of a stage: once it has measured a gradient, it ends when :func:`finished` or
    after ``max_halvings`` failed halvings. The fit ends with the last stage."""
    if state["g"] is None:
        return False
    return finished(state, state["g"], level, last, n_targets, options) or state["halving"] > options.max_halvings


def finished(state: dict, g: torch.Tensor, level: tuple[int, float], last: bool, n_targets: int,
             options: NewtonQMCOptions) -> bool:
    """Whether a stage is done at the gradient g of its latest pass: ``|g|_1`` meets its goal
    (:func:`reached`), or a warm-up level has made ``warmup_iter`` passes (its steps are clipped to a few
    tau, so where tau is tiny, as inside tight clusters, it would crawl: the hard steps take over from
    there)."""
    warmed_up = level[1] != 0 and state["iteration"] - state["stage_start"] >= options.warmup_iter
    return reached(g, level, last, n_targets, options) or warmed_up


def reached(g: torch.Tensor, level: tuple[int, float], last: bool, n_targets: int, options: NewtonQMCOptions) -> bool:
    """Whether ``|g|_1`` meets the goal of a stage on ``level``'s n points: ``stage_tol`` (``final_tol`` in
    the last stage) times ``sqrt(2 N / (pi n))``, the l1 error of n Monte-Carlo points."""
    tol = (options.final_tol if last else options.stage_tol) * math.sqrt(2 * n_targets / (math.pi * level[0]))
    return float(g.abs().sum()) <= tol


def trial_point(state: dict) -> tuple[torch.Tensor, float]:
    """The line search's trial point ``h - a d`` (centred) and its step length
    ``a = scale / 2^halvings``; h itself (a = 0) before the stage's first direction."""
    if state["g"] is None:
        h_try, a = state["h"], 0.0
    else:
        a = state["scale"] * 0.5 ** state["halving"]
        h_try = state["h"] - a * state["step"]
    return h_try - h_try.mean(), a


def accepted(state: dict, masses: torch.Tensor, g: torch.Tensor, energy: float | None, a: float,
             nu: torch.Tensor, armijo: float) -> bool:
    """Whether the trial point is taken. Hard stages: ``|g|_1`` decreases and no cell loses more than half
    of ``min(its mass, nu_i)`` (Kitagawa, Merigot and Thibert's damping, under which Newton's method
    converges globally from cells of positive mass); on a fixed sample the hard energy is piecewise
    linear, so ``|g|_1``, the error we report, is the measure to decrease. Entropic stages: Armijo's
    condition on the sample's energy."""
    if state["g"] is None:
        return True
    if energy is None:
        kept = bool((masses >= 0.5 * torch.minimum(state["g"] + nu, nu)).all())
        return kept and float(g.abs().sum()) < float(state["g"].abs().sum())
    return energy <= state["energy"] - armijo * a * float(state["g"] @ state["step"])


def hessian_points(problem: Problem, options: NewtonQMCOptions) -> int:
    """The number of points of the entropic Hessian: ``hessian_samples``, by default 16 N."""
    return int(options.hessian_samples or 16 * problem.targets.shape[0])


def entropic_direction(problem: Problem, held: HeldSample, h: torch.Tensor, g: torch.Tensor, tau: float,
                       options: NewtonQMCOptions, dense: bool, soft: list | None = None) -> torch.Tensor:
    """``clip((H + R)^{-1} g, +-trust tau)``, H the entropic Hessian on the first ``hessian_samples``
    points of the stage's sample over each point's ``topk`` best targets, streamed; ``soft``: the softmax
    weights of the whole stage sample at h (when it is the Hessian's), from the pass that measured g."""
    head = held.head(hessian_points(problem, options))
    hessian = entropic_hessian(problem, head, h, tau, options.topk, dense, soft)
    return newton_direction(hessian, g, options.damping, options.floor).clamp_(-options.trust * tau,
                                                                               options.trust * tau)


def hard_direction(problem: Problem, points: Head, h: torch.Tensor, g: torch.Tensor,
                   options: NewtonQMCOptions, dense: bool) -> torch.Tensor | None:
    """``(J + shift m I)^{-1} g``, J the facet Jacobian of the hard masses on ``points``; None when no point
    lies near a facet (nothing to go on: the stage ends)."""
    jacobian = facet_jacobian(problem, points, h, options.band_quantile, dense)
    return None if jacobian is None else newton_direction(jacobian, g, 0.0, 0.0, options.shift)


def newton_iteration(problem: Problem, options: NewtonQMCOptions, state: dict, level: tuple[int, float],
                     samples: StageSamples, last: bool = False) -> NewtonLog:
    """One pass over the stage's sample: measure the masses at the trial point; if the line search
    refuses it, halve the step; else move there and compute the next direction (after refilling empty
    cells once per hard stage, :func:`~dpmot_bench.ot.curvature.refill_empty`), unless the stage (the
    ``last`` one or not) is then :func:`finished` (it ends, and a direction would be thrown away). Updates
    ``state``."""
    stage, (n, relative) = state["stage"], level
    hard, nu = relative == 0, problem.weights
    held = samples.stage(n)
    if state["tau"] is None and not hard:
        state["tau"] = relative * median_gap(problem, held.head(16 * problem.targets.shape[0]), state["h"])
    tau = 0.0 if hard else state["tau"]
    h_try, a = trial_point(state)
    if hard:
        masses, energy = samples.hard_masses(h_try, state), None
    else:
        # When the Hessian's points are the whole held sample, in this process (the warm-up's default), keep
        # the pass's softmax weights for it.
        head = held.head(hessian_points(problem, options))
        soft = [] if head.whole is not None and head.n == held.n else None
        masses, potential = sample_masses(problem, held, h_try, tau, options.topk, with_potential=True, soft=soft)
        energy = potential - float(nu @ h_try)
    g = masses - nu
    state["samples_used"] += n
    state["iteration"] += 1
    log = NewtonLog(state["iteration"] - 1, stage, n, **mass_errors(masses, nu), step=a, tau=tau)
    if not accepted(state, masses, g, energy, a, nu, options.armijo):
        state["halving"] += 1
        return log
    # The next step starts at twice this one's length (at most 1): halvings cost a pass each.
    scale = min(1.0, 2 * a) if a > 0 else state["scale"]
    if hard:
        empty = masses == 0
        if bool(empty.any()) and state["refilled"] != stage:
            state.update(h=refill_empty(problem, samples.jacobian(), h_try, empty), g=None, refilled=stage)
            return log
    if finished(state, g, level, last, problem.targets.shape[0], options):  # the stage ends here
        state.update(h=h_try, solution=h_try, g=g, energy=energy, step=None, halving=0, scale=scale)
        return log
    if hard:
        step = hard_direction(problem, samples.jacobian(), h_try, g, options, samples.dense)
    else:
        step = entropic_direction(problem, held, h_try, g, tau, options, samples.dense, soft)
    state.update(h=h_try, solution=h_try, g=g, energy=energy, step=step,
                 halving=0 if step is not None else options.max_halvings + 1, scale=scale)
    return log


def grow_towards_tol(problem: Problem, options: NewtonQMCOptions, state: dict, n: int) -> bool:
    """At the end of the last stage (on ``n`` points): with ``tol``, the independent check of the solution
    (round ``state["checks"]``, recorded in ``state["check"]``); True when one more stage should follow,
    i.e. the check disagrees, its budget could confirm tol (floor <= tol / 2 at the budget) and a larger
    stage is allowed (``n < max_samples``). Without tol, False: the fixed schedule ends."""
    if options.tol is None:
        return False
    state["checks"] += 1
    budget = check_budget(options.tol, options.check_samples)
    check = sampled_check(problem, state["solution"], options.tol, budget, round_=state["checks"])
    state["check"] = {**check.to_dict(), "iteration": state["iteration"]}
    reachable = noise_floor(problem.weights, budget) <= FLOOR_FRACTION * options.tol
    if not check.agrees and reachable and n < options.max_samples:
        state["extra_stages"] += 1
        return True
    return False


def newton_qmc(problem: Problem, options: NewtonQMCOptions, state: dict | None = None, on_iteration=None) -> dict:
    """Solve ``mu(W_i(h)) = nu_i`` by multiscale damped Newton steps; return the final solver state.

    Every stage fixes a source sample (scrambled Sobol points through the inverse CDF when ``quasi``); the
    stages (:func:`newton_levels`) use samples growing ``growth``-fold from ``first_samples`` (16 N) to
    ``n_samples`` (256 N), each stage warm-starting the next.

    Hard stages: ``g = counts / n - nu`` on the stage's sample, ``J`` the Jacobian of the hard masses on
    ``jacobian_samples`` (64 N) fixed points (:func:`~dpmot_bench.ot.curvature.facet_jacobian`), and
    ``h <- h - a (J + R)^{-1} g`` with ``a = 1, 1/2, ...`` until the step is accepted (:func:`accepted`).
    With ``tol``, the last stage is followed by the independent check, and by a stage ``growth`` times
    larger while the check disagrees (:func:`grow_towards_tol`).

    Entropic warm-up (unless ``first_smoothing`` is None): on the first sample, the entropic semi-dual at
    ``tau = c * (median gap between the two best scores)``, c halving from ``first_smoothing`` to
    ``smoothing``: ``g = mean_x softmax(s(x) / tau) - nu``, the softmax over each point's ``topk`` best
    targets (the fused kernel finds them; no score matrix), H its Hessian, ``h <- h - a clip((H + R)^{-1}
    g, +-trust tau)`` with Armijo backtracking. The smoothed masses are smooth in h, so it brings h from
    far off to where the hard steps converge: clustered data latents, where the moment-matched start
    leaves whole clusters of cells empty and the hard steps stall, and high dimensions, where the hard
    masses change so fast with h that the first hard steps are cut to a small fraction (16-D Gaussian
    targets, N = 1000: 19 passes and 10 facet Jacobians to a 16 N sample's accuracy without it, 0.25 s
    with it: ``benchmarks/README.md``). ``first_smoothing=None`` skips it.

    A stage ends by :func:`stage_over`. Early stages are cheap and move h most of the way; quasi-Monte-Carlo
    points integrate the cells far more accurately than Monte-Carlo ones in low dimension; near the
    solution Newton converges in a few passes over the final sample.

    ``state`` (from :func:`initial_state` or a previous run, e.g. a checkpoint) resumes exactly;
    ``on_iteration(state, log)`` is called after every pass and stops the run by returning True.
    """
    n_targets = problem.targets.shape[0]
    state = initial_state(problem, options) if state is None else state
    samples = StageSamples(problem, options)
    while not state["done"] and state["iteration"] < options.max_iter:
        stage = state["stage"]
        levels = newton_levels(n_targets, options, state["extra_stages"])
        last = stage == len(levels) - 1
        if stage_over(state, levels[stage], last, n_targets, options):
            done = last and not grow_towards_tol(problem, options, state, levels[stage][0])
            state.update(stage=stage + 1, stage_start=state["iteration"], tau=None, g=None, step=None, halving=0,
                         done=done)
            continue
        log = newton_iteration(problem, options, state, levels[stage], samples, last)
        if on_iteration is not None and on_iteration(state, log):
            break
    return state
