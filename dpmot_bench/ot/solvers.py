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


def newton_direction(hessian: torch.Tensor, g: torch.Tensor, damping: float, floor: float) -> torch.Tensor:
    """``(H + R)^{-1} g``, centred, with ``R = diag(damping * d + max(floor * median(d) - d, 0))`` (d = diag H):
    Levenberg-Marquardt damping, and a floor for cells that too few sample points border to estimate
    their row. Cholesky for a dense H, conjugate gradients with Jacobi preconditioning for a sparse one."""
    diagonal = hessian.diagonal() if not hessian.is_sparse else torch.zeros_like(g).index_add_(
        0, hessian.indices()[0], torch.where(hessian.indices()[0] == hessian.indices()[1], hessian.values(), 0))
    positive = diagonal[diagonal > 0]
    level = floor * float(positive.median()) if positive.numel() else 1.0
    regulariser = damping * diagonal + (level - diagonal).clamp_min(0)
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
class _StageSample:
    """A stage's sample, its blocks kept in memory (``cached``) when they fit, else redrawn at each pass."""

    sample: SourceSample
    cached: list | None

    @property
    def n(self) -> int:
        return self.sample.n

    def blocks(self):
        return iter(self.cached) if self.cached is not None else self.sample.blocks()


def newton_levels(n_targets: int, n_samples: int | None, first_samples: int | None, growth: int,
                  smoothing: float, first_smoothing: float) -> list[tuple[int, float]]:
    """The (sample size, relative temperature) of each stage: the temperature halves from
    ``first_smoothing`` to ``smoothing`` on the first sample, then the sample grows ``growth``-fold up to
    ``n_samples``."""
    n_final = int(n_samples or 256 * n_targets)
    n = min(int(first_samples or 16 * n_targets), n_final)
    levels, relative = [], max(first_smoothing, smoothing)
    while relative > smoothing:
        levels.append((n, relative))
        relative /= 2
    levels.append((n, smoothing))
    while n < n_final:
        n = min(n * growth, n_final)
        levels.append((n, smoothing))
    return levels


def newton_qmc(problem: Problem, state: dict | None = None, *, max_iter: int = 100, n_samples: int | None = None,
               first_samples: int | None = None, growth: int = 4, quasi: bool = True, smoothing: float = 0.25,
               first_smoothing: float = 4.0, topk: int = 8, damping: float = 1e-3, floor: float = 1e-2,
               trust: float = 4.0, armijo: float = 1e-4, stage_tol: float = 0.5, final_tol: float = 0.1,
               max_halvings: int = 5, max_refinements: int = 8,
               init: str = "moment-matched", dense_limit: int = 4096, hessian_samples: int | None = None,
               cache_bytes: int = 2**30):
    """Multiscale, annealed sample-average Newton on quasi-Monte-Carlo samples (this toolkit's fast solver).

    Each stage fixes a source sample (scrambled Sobol points through the inverse CDF when ``quasi``; key
    ``(NEWTON_KEY, stage)``) and a temperature ``tau = c * (median gap between the two best scores)``, and
    solves the entropic semi-dual on it by damped Newton: ``g = mean_x softmax(s(x) / tau) - nu``, ``H`` the
    matching Hessian (:class:`HessianSum`), ``h <- h - a clip((H + R)^{-1} g, +-trust tau)``
    (:func:`newton_direction`; the clip is a trust region: the softmax masses change by ``exp(+-trust)`` at
    most, which a quadratic model of log-sum-exp cannot see for cells far from their mass) with
    ``a = 1, 1/2, ...`` until the sample's l1 error ``|g|_1`` decreases. The stages (:func:`newton_levels`)
    first anneal c from ``first_smoothing`` to ``smoothing`` on a small sample (Newton's basin shrinks
    with tau, so each temperature warm-starts the next), then grow the sample ``growth``-fold up to
    ``n_samples`` at the final temperature. Above ``full_softmax_above`` the softmax runs over all
    targets (and H is a GEMM); below, over each point's ``topk`` best. A stage ends once ``|g|_1`` is below
    ``stage_tol`` (``final_tol`` in the last stage) times ``sqrt(2 N / (pi n))``, the l1 error of n Monte-Carlo
    points, or when no step decreases it. After the last stage the temperature halves on the same sample
    until the entropic bias, estimated as ``(4/3) |m(tau) - m(tau / 2)|_1`` at the fitted h (it is second
    order in tau), is below the final tolerance (at most ``max_refinements`` times): the masses reported are
    those of the hard cells up to the sampling error, not of the smoothed problem.

    Why it is fast: smoothing at a fraction of the score gaps makes the masses smooth functions of h and of
    x, so Newton converges in a step or two per stage and a quasi-Monte-Carlo sample integrates the masses
    far more accurately than Monte-Carlo cell indicators, while the entropic bias (second order in tau)
    stays below that error. One iteration is one pass over a stage's sample; for N > ``dense_limit`` the
    Hessian is sparse, from the top-k softmax of the first ``hessian_samples`` points, and solved by CG.
    """
    if not smoothing > 0:
        raise InputError(f"newton-qmc needs smoothing > 0 (a fraction of the score gaps), got {smoothing}")
    n_targets = problem.targets.shape[0]
    nu = problem.weights
    levels = newton_levels(n_targets, n_samples, first_samples, growth, smoothing, first_smoothing)
    if state is None:
        h = initial_h(problem, init)
        state = {"iteration": 0, "stage": 0, "h": h, "solution": h, "tau": None, "g": None, "step": None,
                 "halving": 0, "done": False, "samples_used": 0}
    stage_sample, dense = None, n_targets <= dense_limit
    final_scale = final_tol * math.sqrt(2 * n_targets / (math.pi * levels[-1][0]))
    while not state["done"] and state["iteration"] < max_iter:
        stage, h = state["stage"], state["h"]
        n, relative = levels[min(stage, len(levels) - 1)]
        if stage_sample is None or stage_sample.sample.key[1:] != (n,):
            sample = problem.sample(n, (NEWTON_KEY, n), quasi)
            stage_sample = _StageSample(sample, list(sample.blocks()) if n * problem.source.dim * 4 <= cache_bytes
                                        else None)
            head = sample.head(int(hessian_samples or 16 * n_targets))
        refining = stage >= len(levels) - 1
        tol = final_scale if refining else stage_tol * math.sqrt(2 * n_targets / (math.pi * n))
        if state["g"] is not None and (float(state["g"].abs().sum()) <= tol or state["halving"] > max_halvings):
            # Next stage; past the last level, the same sample at half the temperature (see the docstring).
            next_tau = state["tau"] / 2 if refining else None
            state.update(stage=stage + 1, tau=next_tau, previous_g=state["g"], g=None, step=None, halving=0,
                         done=stage + 1 - len(levels) >= max_refinements)
            continue
        if state["tau"] is None:
            state["tau"] = relative * median_gap(problem, stage_sample.sample.head(16 * n_targets), h)
        a = 0.5 ** state["halving"] if state["g"] is not None else 0.0
        h_try = h - a * state["step"] if state["g"] is not None else h
        h_try = h_try - h_try.mean()
        masses, potential = sample_masses(problem, stage_sample, h_try, state["tau"], None if dense else topk,
                                          with_potential=True)
        g, energy = masses - nu, potential - float(nu @ h_try)
        state["samples_used"] += n
        state["iteration"] += 1
        log = {"iteration": state["iteration"] - 1, "stage": stage, "samples": n, **mass_errors(g + nu, nu),
               "step": a, "tau": state["tau"]}
        if state["g"] is None and stage >= len(levels):
            # Entropic bias is second order in tau: b(tau) ~ (4/3) (m(tau) - m(tau / 2)) at the same h.
            log["bias_estimate"] = 4 / 3 * float((g - state["previous_g"]).abs().sum())
            if log["bias_estimate"] <= final_scale:
                state.update(done=True, log=log)
                yield state
                break
        if state["g"] is None or energy <= state["energy"] - armijo * a * float(state["g"] @ state["step"]):
            matrix = HessianSum.on_points(problem, head, h_try, state["tau"], None if dense else topk)
            step = newton_direction(matrix, g, damping, floor).clamp_(-trust * state["tau"], trust * state["tau"])
            state.update(h=h_try, solution=h_try, g=g, energy=energy, halving=0, step=step)
        else:  # not enough decrease: halve the step; after max_halvings the stage ends where it is
            state["halving"] += 1
        state["log"] = log
        yield state


SOLVERS = {"adam-mc": adam_mc, "newton-qmc": newton_qmc}
