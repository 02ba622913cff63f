"""Solvers for semi-discrete OT: minimise the convex energy over the dual weights h,

    E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i,    dE/dh_i = mu(W_i(h)) - nu_i,

where ``W_i(h)`` is the power cell of target i. At the minimum every cell has mass nu_i; ``h + c`` is the
same solution (h is kept centred). Cell masses are estimated from source samples (``sampling.py``).

A solver is a generator ``solver(problem, state=None, **options)``: it yields its complete state after
every iteration (a dict of tensors and JSON-able scalars, enough to resume exactly: pass it back as
``state``), with ``state["solution"]`` the h to use if stopped there and ``state["log"]`` one history
record. ``state["done"]`` marks convergence. The estimator (``estimator.py``) drives it, logs, and
checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats

from ..errors import InputError, unknown_name
from .distributed import all_reduce_sum_
from .kernel import argmax_rows, chunk_rows, padded, score_chunks, softmax_, topk_softmax
from .sampling import SourceSample
from .sources import Source


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

    def sample(self, n: int, key: tuple[int, ...], quasi: bool = False) -> SourceSample:
        return SourceSample(self.source, n, self.seed, key, quasi, self.device)


# First element of every sample key: who draws it (so solver and evaluation samples never coincide).
ADAM_KEY, NEWTON_KEY, EVALUATION_KEY = 1, 2, 3


def sample_masses(problem: Problem, sample, h: torch.Tensor, tau: float = 0.0, k: int | None = None,
                  with_potential: bool = False):
    """Cell masses on ``sample`` (float64, summed over processes): hard counts / n when ``tau == 0``, else
    the mean of ``softmax(s(x) / tau)``: over all targets (``k`` None), or over each point's ``k`` best (the
    others weigh less than ``exp(-(s_1 - s_k) / tau)`` each). With ``with_potential`` also the sample mean
    of the potential, ``max_j s_j`` or ``tau log sum_j exp(s_j / tau)`` (the first term of the energy)."""
    n_targets = problem.targets.shape[0]
    h = h.to(problem.targets.dtype)
    targets, h = padded(problem.targets, h) if tau == 0 else (problem.targets, h)
    total = torch.zeros(n_targets + 1, dtype=torch.float64, device=targets.device)  # masses, then potential
    buffer = torch.empty(chunk_rows(targets.shape[0]), targets.shape[0], dtype=targets.dtype, device=targets.device)
    for block in sample.blocks():
        for _, scores in score_chunks(block, targets, h, rows=buffer.shape[0], buffer=buffer):
            if tau == 0:
                total[:-1] += torch.bincount(argmax_rows(scores), minlength=n_targets)
                potential = scores.amax(dim=1) if with_potential else None
            elif k is None:
                best = scores.amax(dim=1, keepdim=True)
                sums = torch.empty_like(best)
                total[:-1] += softmax_(scores, tau, sums).sum(0, dtype=torch.float64)
                potential = best.double() + tau * sums.double().log()
            else:
                top = scores.topk(min(k, n_targets), dim=1)
                p = torch.softmax((top.values - top.values[:, :1]).double() / tau, dim=1)
                total.index_add_(0, top.indices.flatten(), p.flatten())
                potential = tau * torch.logsumexp(top.values.double() / tau, dim=1)
            if with_potential:
                total[-1] += potential.sum(dtype=torch.float64)
    total = all_reduce_sum_(total) / sample.n
    return (total[:-1], float(total[-1])) if with_potential else total[:-1]


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
    ``h = 0`` leaves each target inside the convex hull of the others with an empty cell.
    """
    y = problem.targets.double()
    centre = problem.weights @ y
    spread = (problem.weights @ (y - centre) ** 2).mean().sqrt().clamp_min(1e-12)
    a = spread / problem.source.coordinate_std
    h = -((y - centre) ** 2).sum(1) / (2 * a) - problem.source.mean * y.sum(1)
    return h - h.mean()


INITS = ("zeros", "moment-matched")


def initial_h(problem: Problem, init: str) -> torch.Tensor:
    if init == "zeros":
        return torch.zeros(problem.targets.shape[0], dtype=torch.float64, device=problem.device)
    if init == "moment-matched":
        return moment_matched_h(problem)
    raise unknown_name("init", init, INITS)


STOP_RULES = ("reference", "noise-floor")


def adam_mc(problem: Problem, state: dict | None = None, *, max_iter: int = 10_000, n_samples: int | None = None,
            lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, patience: int = 50,
            max_doublings: int = 3, lr_decay: float = 0.8, stop: str = "reference", grad_tol: float = 8e-4,
            noise_quantile: float = 0.5, init: str = "zeros"):
    """The reference code's solver (the "paper preset"): Adam on Monte-Carlo gradients.

    Iteration t draws ``n_samples`` fresh source points (default 10 N; sample key ``(ADAM_KEY, t)``), estimates
    ``g = counts / n - nu`` and takes an Adam step without bias correction,
    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``h <- h - lr m / (sqrt(v) + eps)``, then
    centres h. If ``|g|_2`` has not improved for ``patience`` iterations, the samples double and
    ``lr *= lr_decay`` (at most ``max_doublings`` times). The h with the smallest measured ``|g|_2`` is kept.

    Stop rules: ``"reference"`` stops when ``|g|_2 < grad_tol`` with no empty cell (below the Monte-Carlo
    noise floor ``sqrt(sum nu_i (1 - nu_i) / n)`` for usual N and n, so in practice it runs ``max_iter``
    iterations, as the reference code does). ``"noise-floor"`` treats a gradient that is statistically
    indistinguishable from pure sampling noise as a stall: Pearson's statistic
    ``X^2 = sum_i (c_i - n nu_i)^2 / (n nu_i)``, chi-square with N - 1 degrees of freedom when the masses
    equal nu, is at most its ``noise_quantile`` quantile. Then the samples double at once (more iterations
    at this sample size cannot be told apart from noise), and once no doubling is left the fit stops.
    """
    if stop not in STOP_RULES:
        raise unknown_name("stop rule", stop, STOP_RULES)
    n_targets = problem.targets.shape[0]
    nu = problem.weights
    if state is None:
        h = initial_h(problem, init)
        state = {"iteration": 0, "h": h, "m": torch.zeros_like(h), "v": torch.zeros_like(h), "lr": float(lr),
                 "n_samples": int(n_samples or 10 * n_targets), "doublings": 0, "stall": 0,
                 "stage_best": math.inf, "best_grad_norm": math.inf, "solution": h.clone(), "done": False,
                 "samples_used": 0}
    noise_threshold = float(stats.chi2.ppf(noise_quantile, n_targets - 1))
    h, m, v = state["h"], state["m"], state["v"]
    while not state["done"] and state["iteration"] < max_iter:
        n = state["n_samples"]
        counts = sample_masses(problem, problem.sample(n, (ADAM_KEY, state["iteration"])), h) * n
        g = counts / n - nu
        grad_norm = float(g.norm())
        state["samples_used"] += n
        if grad_norm < state["best_grad_norm"]:
            state["best_grad_norm"] = grad_norm
            state["solution"] = h.clone()
        log = {"iteration": state["iteration"], "samples": n, **mass_errors(counts / n, nu),
               "grad_norm": grad_norm, "lr": state["lr"]}
        if stop == "reference" and grad_norm < grad_tol and log["empty_cells"] == 0:
            state["done"] = True
        else:
            m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
            h.addcdiv_(m, v.sqrt().add_(eps), value=-state["lr"])
            h.sub_(h.mean())
            at_noise_floor = float(((counts - n * nu) ** 2 / (n * nu)).sum()) <= noise_threshold
            state["stall"] = 0 if grad_norm < state["stage_best"] else state["stall"] + 1
            state["stage_best"] = min(state["stage_best"], grad_norm)
            if state["stall"] >= patience or (stop == "noise-floor" and at_noise_floor):
                if state["doublings"] < max_doublings:
                    state.update(n_samples=2 * n, lr=state["lr"] * lr_decay, doublings=state["doublings"] + 1,
                                 stall=0, stage_best=math.inf)
                elif stop == "noise-floor":
                    state["done"] = True
        state["iteration"] += 1
        state["log"] = log
        yield state


# ------------------------------------------------------------------------------------------ Newton
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
        factor = torch.linalg.cholesky(hessian + torch.diag(regulariser))
        step = torch.cholesky_solve(g[:, None], factor)[:, 0]
    else:
        step = _conjugate_gradients(lambda v: hessian @ v + regulariser * v, g, diagonal + regulariser)
    return step - step.mean()


def _conjugate_gradients(matvec, b: torch.Tensor, diagonal: torch.Tensor, rtol: float = 1e-4,
                         max_iter: int = 1000) -> torch.Tensor:
    """Solve ``A x = b`` (A symmetric positive definite, applied by ``matvec``), Jacobi-preconditioned."""
    x, r = torch.zeros_like(b), b.clone()
    z = r / diagonal
    d, rz = z.clone(), float(r @ z)
    for _ in range(max_iter):
        ad = matvec(d)
        alpha = rz / float(d @ ad)
        x.add_(d, alpha=alpha)
        r.sub_(ad, alpha=alpha)
        if float(r.norm()) <= rtol * float(b.norm()):
            break
        z = r / diagonal
        rz, rz_old = float(r @ z), rz
        d.mul_(rz / rz_old).add_(z)
    return x


@dataclass(frozen=True)
class HeldSample:
    """A sample whose blocks are kept in memory (``cached``; a stage's, when they fit), else redrawn at
    each pass."""

    sample: SourceSample
    cached: list | None

    @property
    def n(self) -> int:
        return self.sample.n

    def blocks(self):
        return iter(self.cached) if self.cached is not None else self.sample.blocks()


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


def newton_levels(n_targets: int, n_samples: int | None, first_samples: int | None, growth: int,
                  smoothing: float, first_smoothing: float | None) -> list[tuple[int, float]]:
    """The (sample size, relative temperature) of each stage: an entropic warm-up whose temperature halves
    from ``first_smoothing`` down to ``smoothing`` on the first sample (none when ``first_smoothing`` is
    None), then hard stages (temperature 0) on that sample and on samples ``growth`` times larger, up to
    ``n_samples``."""
    n_final = int(n_samples or 256 * n_targets)
    n = min(int(first_samples or 16 * n_targets), n_final)
    levels, relative = [], first_smoothing
    while relative is not None and relative >= smoothing:
        levels.append((n, relative))
        relative /= 2
    levels.append((n, 0.0))
    while n < n_final:
        n = min(n * growth, n_final)
        levels.append((n, 0.0))
    return levels


def newton_qmc(problem: Problem, state: dict | None = None, *, max_iter: int = 200, n_samples: int | None = None,
               first_samples: int | None = None, growth: int = 4, quasi: bool = True, smoothing: float = 0.25,
               first_smoothing: float | None = 4.0, topk: int = 8, damping: float = 1e-3, floor: float = 1e-2,
               trust: float = 4.0, armijo: float = 1e-4, stage_tol: float = 0.5, final_tol: float = 0.1,
               max_halvings: int = 6, warmup_iter: int = 10, band_quantile: float = 0.2, shift: float = 1e-2,
               init: str = "moment-matched",
               dense_limit: int = 4096, hessian_samples: int | None = None, jacobian_samples: int | None = None,
               cache_bytes: int = 2**30):
    """Multiscale damped Newton on the hard cell masses, on quasi-Monte-Carlo samples (this toolkit's fast
    solver), after an entropic warm-up.

    Every stage fixes a source sample (scrambled Sobol points through the inverse CDF when ``quasi``; key
    ``(NEWTON_KEY, n)``); the stages (:func:`newton_levels`) use samples growing ``growth``-fold from
    ``first_samples`` (16 N) to ``n_samples`` (256 N), each stage warm-starting the next.

    Hard stages: ``g = counts / n - nu`` on the stage's sample, ``J`` the Jacobian of the hard masses
    estimated on its first ``jacobian_samples`` (64 N) points (:func:`facet_jacobian`), and
    ``h <- h - a (J + R)^{-1} g`` (:func:`newton_direction`) with ``a = 1, 1/2, ...`` until ``|g|_1``
    decreases and no cell loses more than half of ``min(its mass, nu_i)`` (Kitagawa, Merigot and Thibert's
    damping, under which Newton's method converges globally from cells of positive mass; empty cells are
    first given one point, :func:`refill_empty`). On a fixed sample the hard energy is piecewise linear:
    its gradient norm ``|g|_1``, the error we report, is the measure to decrease.

    Entropic warm-up (unless ``first_smoothing`` is None): on the first sample, the entropic semi-dual at
    ``tau = c * (median gap between the two best scores)``, c halving from ``first_smoothing`` to
    ``smoothing``: ``g = mean_x softmax(s(x) / tau) - nu``, ``H`` its Hessian (:class:`HessianSum`, on the
    first ``hessian_samples`` points; over each point's ``topk`` best targets above ``dense_limit``),
    ``h <- h - a clip((H + R)^{-1} g, +-trust tau)`` with Armijo backtracking on the sample's energy. On by
    default: the smoothed masses are smooth in h, so it brings h from far off (clustered data latents,
    where the moment-matched start leaves whole clusters of cells empty and the hard Newton steps stall)
    to where the hard steps converge. Targets spread like the source (Gaussian targets from a Gaussian
    source) need none: ``first_smoothing=None`` skips it.

    A stage ends once ``|g|_1`` is below ``stage_tol`` (``final_tol`` in the last stage) times
    ``sqrt(2 N / (pi n))``, the l1 error of n Monte-Carlo points, or after ``max_halvings`` failed
    halvings; a warm-up level also after ``warmup_iter`` passes (its steps are clipped to a few tau, so
    where tau is tiny, as inside tight clusters, it would crawl: the hard steps take over from there).

    Why it is fast: early stages are cheap and move h most of the way; quasi-Monte-Carlo points integrate
    the cells far more accurately than Monte-Carlo ones in low dimension; near the solution Newton
    converges in a few passes over the final sample.
    """
    if not smoothing > 0:
        raise InputError(f"newton-qmc needs smoothing > 0 (a fraction of the score gaps), got {smoothing}")
    if not 0 < band_quantile < 1:
        raise InputError(f"newton-qmc needs 0 < band_quantile < 1, got {band_quantile}")
    n_targets = problem.targets.shape[0]
    nu = problem.weights
    levels = newton_levels(n_targets, n_samples, first_samples, growth, smoothing, first_smoothing)
    if state is None:
        h = initial_h(problem, init)
        state = {"iteration": 0, "stage": 0, "stage_start": 0, "h": h, "solution": h, "tau": None, "g": None,
                 "step": None, "halving": 0, "scale": 1.0, "refilled": -1, "done": False, "samples_used": 0}
    stage_sample, jacobian_points, dense = None, None, n_targets <= dense_limit
    while not state["done"] and state["iteration"] < max_iter:
        stage, h = state["stage"], state["h"]
        n, relative = levels[stage]
        hard, last = relative == 0, stage == len(levels) - 1
        if stage_sample is None or stage_sample.n != n:
            sample = problem.sample(n, (NEWTON_KEY, n), quasi)
            stage_sample = HeldSample(sample, list(sample.blocks()) if n * problem.source.dim * 4 <= cache_bytes
                                        else None)
        tol = (final_tol if last else stage_tol) * math.sqrt(2 * n_targets / (math.pi * n))
        warmed_up = not hard and state["iteration"] - state["stage_start"] >= warmup_iter
        if state["g"] is not None and (float(state["g"].abs().sum()) <= tol or state["halving"] > max_halvings
                                       or warmed_up):
            state.update(stage=stage + 1, stage_start=state["iteration"], tau=None, g=None, step=None, halving=0,
                         done=last)
            continue
        if state["tau"] is None and not hard:
            state["tau"] = relative * median_gap(problem, stage_sample.sample.head(16 * n_targets), h)
        tau = 0.0 if hard else state["tau"]
        a = state["scale"] * 0.5 ** state["halving"] if state["g"] is not None else 0.0
        h_try = h - a * state["step"] if state["g"] is not None else h
        h_try = h_try - h_try.mean()
        if hard:  # the hard steps are judged by |g|_1; only the entropic ones need the energy
            masses, energy = sample_masses(problem, stage_sample, h_try), None
        else:
            masses, potential = sample_masses(problem, stage_sample, h_try, tau, None if dense else topk,
                                              with_potential=True)
            energy = potential - float(nu @ h_try)
        g = masses - nu
        state["samples_used"] += n
        state["iteration"] += 1
        state["log"] = {"iteration": state["iteration"] - 1, "stage": stage, "samples": n,
                              **mass_errors(masses, nu), "step": a, "tau": tau}
        if state["g"] is None:
            accept = True
        elif hard:
            kept = bool((masses >= 0.5 * torch.minimum(state["g"] + nu, nu)).all())
            accept = kept and float(g.abs().sum()) < float(state["g"].abs().sum())
        else:
            accept = energy <= state["energy"] - armijo * a * float(state["g"] @ state["step"])
        if not accept:  # not enough decrease: halve the step; after max_halvings the stage ends where it is
            state["halving"] += 1
            yield state
            continue
        if hard:
            if jacobian_points is None:  # one fixed set for every stage (key (NEWTON_KEY, 0): no stage's)
                m = int(jacobian_samples or 64 * n_targets)
                jacobian_points = problem.sample(m, (NEWTON_KEY, 0), quasi).head(m)
            empty = masses == 0
            if bool(empty.any()) and state["refilled"] != stage:
                state.update(h=refill_empty(problem, jacobian_points, h_try, empty), g=None, refilled=stage)
                yield state
                continue
            jacobian = facet_jacobian(problem, jacobian_points, h_try, band_quantile, dense)
            # No facet in the band: nothing to go on, the stage ends here (the halving rule above).
            step = None if jacobian is None else newton_direction(jacobian, g, 0.0, 0.0, shift)
        else:
            head = stage_sample.sample.head(min(n, int(hessian_samples or 16 * n_targets)))
            hessian = HessianSum.on_points(problem, head, h_try, tau, None if dense else topk)
            step = newton_direction(hessian, g, damping, floor).clamp_(-trust * tau, trust * tau)
        # The next step starts at twice this one's length (at most 1): halvings cost a pass each.
        state.update(h=h_try, solution=h_try, g=g, energy=energy, halving=0 if step is not None else max_halvings + 1,
                     step=step, scale=min(1.0, 2 * a) if a > 0 else state["scale"])
        yield state


SOLVERS = {"adam-mc": adam_mc, "newton-qmc": newton_qmc}
