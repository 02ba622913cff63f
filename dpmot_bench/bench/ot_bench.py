"""Measurements of the semi-discrete OT engine (the scripts in ``benchmarks/ot_*.py`` and the report call
these). Each returns tidy rows (list of dicts) with the machine's thread count; timings are wall-clock,
best of a few repeats where noted, and noisy on a shared machine.

- :func:`kernel_benchmark`: the chunked assignment kernel vs a large square GEMM (useful FLOP/s
  ``2 M N d / t``) and vs the naive one-liner ``(x @ Y.T + h).argmax(1)``, with the peak extra memory.
- :func:`solver_benchmark`: time to accuracy of ``exact-2d`` (in 2-D), ``newton-qmc``, ``adam-mc`` (and
  ``adam-mc-blas``, counting cells as the reference code does) and POT's stochastic semi-dual (ASGD on a
  sampled source), all measured the same way: l1 and max relative cell-mass errors on an independent
  Monte-Carlo sample (and, in 2-D, the exact masses); one row per logged point.
- :func:`scale_benchmark`: time of a solver pass vs N (it is linear), a CIFAR-scale dry run, newton-qmc and
  adam-mc iterations at d = 3072 (time per iteration and per point, peak memory, the independent check),
  peak memory against the number of points, and the float32 argmax against float64, centred or not.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import unknown_name
from ..ot import GaussianSource, kernel, native, solvers as ot_solvers  # SOLVERS looked up at call time
from ..ot.exact2d import exact_masses
from ..ot.sampling import SourceSample
from ..ot.problem import EVALUATION_KEY, HeldSample, Problem, mass_errors, sample_masses
from ..ot.solvers import solver_options

SUITES = ("quick", "full")


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, BLAS threads)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _peak_rss_increase_mb(fn: Callable[[], object]) -> float | None:
    """Growth of this process's peak resident memory while ``fn`` runs (Linux: VmHWM, reset through
    /proc/self/clear_refs); None where that is not available."""
    def high_water() -> int:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        before = high_water()
    except OSError:
        return None
    fn()
    return (high_water() - before) / 1024


def _naive(x, y, h):
    return (x @ y.T + h).argmax(1)


#: ``kernel.assign`` by the chunked torch kernel, even where the fused one is built (for comparisons).
chunked_assign = native.disabled()(kernel.assign)


def kernel_benchmark(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    """The assignment kernels (chunked torch, and fused where built) vs square GEMM and naive argmax. Goals
    (issues 3, 15): >= 80% of the square GEMM's FLOP/s at d >= 256; >= 4x the naive expression at d <= 64;
    peak extra memory flat in M."""
    _check_suite(suite)
    device = torch.device(device)
    quick = suite == "quick"
    square = 2048 if quick else 4096
    m, n = (2**16, 1000) if quick else (2**18, 2000)
    dims = (2, 16, 64, 256) if quick else (2, 16, 64, 256, 1024)
    repeats = 2 if quick else 3
    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(square, square, generator=g, device=device)
    b = torch.randn(square, square, generator=g, device=device)
    base = {"threads": torch.get_num_threads(), "device": str(device), "suite": suite}
    fused_built = device.type == "cpu" and native.library() is not None
    gemm_seconds = _best_time(lambda: a @ b, repeats)
    gemm_flops = 2 * square**3 / gemm_seconds
    rows = [{**base, "method": "square-gemm", "M": square, "N": square, "d": square, "seconds": gemm_seconds,
             "gflops": gemm_flops / 1e9}]
    for d in tqdm(dims, disable=not progress, desc="kernel", leave=False):
        x = torch.randn(m, d, generator=g, device=device)
        y = torch.randn(n, d, generator=g, device=device)
        h = torch.randn(n, generator=g, device=device)
        useful = 2 * m * n * d
        naive = _best_time(lambda: _naive(x, y, h), repeats)
        chunked = _best_time(lambda: chunked_assign(x, y, h), repeats)
        # The fused kernel (native.py) where it is built: kernel.assign's default on the CPU.
        fused = _best_time(lambda: kernel.assign(x, y, h), repeats) if fused_built and d <= native.MAX_DIM else None
        # The chunked kernel's own matrix products without the argmax: what any kernel computing every
        # score must spend, hence the most it could gain over the naive expression on this machine.
        scores_only = _best_time(lambda: deque(kernel.score_chunks(x, *kernel.padded(y, h)), maxlen=0), repeats)
        for method, seconds in (("naive", naive), ("chunked", chunked), ("fused", fused), ("scores-only", scores_only)):
            if seconds is None:
                continue
            rows.append({**base, "method": method, "M": m, "N": n, "d": d, "seconds": seconds,
                         "gflops": useful / seconds / 1e9, "fraction_of_gemm": useful / seconds / gemm_flops,
                         "speedup_vs_naive": naive / seconds})
    # Peak extra memory vs M (d = 16): the chunked kernel's is its score buffer, whatever M is; the fused
    # kernel has none.
    d = 16
    y, h = torch.randn(n, d, generator=g, device=device), torch.randn(n, generator=g, device=device)
    # Every kernel run before any naive one: memory the naive runs free would hide the kernels'.
    methods = (("fused", kernel.assign),) if fused_built else ()
    for method, fn in methods + (("chunked", chunked_assign), ("naive", _naive)):
        for rows_m in ((2**14, 2**16, 2**18) if quick else (2**14, 2**16, 2**18, 2**20)):
            x = torch.randn(rows_m, d, generator=g, device=device)
            peak = _peak_rss_increase_mb(lambda: fn(x, y, h))
            buffer = {"chunked": kernel.chunk_rows(n) * n * 4, "fused": 0, "naive": rows_m * n * 4}[method]
            rows.append({**base, "method": f"memory-{method}", "M": rows_m, "N": n, "d": d, "peak_extra_mb": peak,
                         "score_buffer_mb": buffer / 2**20})
    return rows


# ------------------------------------------------------------------------------------------ solvers
def _evaluate(problem: Problem, h: torch.Tensor, n_eval: int) -> dict:
    """Errors of h: exactly in 2-D (power cells clipped against the source), elsewhere on an independent
    Monte-Carlo sample (seed 12345, evaluation key) of ``n_eval`` points."""
    nu, h = problem.weights, h.to(problem.device)
    if not bool(torch.isfinite(h).all()):  # a diverged solver (POT's ASGD at too large a step)
        prefix = "exact_" if problem.targets.shape[1] == 2 else ""
        return {f"{prefix}l1_mass_error": math.inf, f"{prefix}max_rel_mass_error": math.inf,
                f"{prefix}empty_cells": len(nu), "diverged": True,
                **({} if prefix else {"eval_samples": n_eval, "l1_noise_floor": math.nan})}
    if problem.targets.shape[1] == 2:
        exact = torch.from_numpy(exact_masses(problem.source, problem.targets.double().cpu().numpy(),
                                              h.double().cpu().numpy()))
        return {f"exact_{k}": v for k, v in mass_errors(exact, nu.cpu()).items()}
    evaluation = Problem(problem.source, problem.targets, problem.weights, 12345)
    masses = sample_masses(evaluation, evaluation.sample(n_eval, (EVALUATION_KEY,)), h)
    return {**mass_errors(masses, nu), "eval_samples": n_eval,
            "l1_noise_floor": float((2 * nu * (1 - nu) / (math.pi * n_eval)).sqrt().sum())}


def _run_solver(name: str, problem: Problem, budget: float, options: dict, log_every: Callable[[dict, object], bool]):
    """Run a solver (or ``REFERENCE_ADAM``: adam-mc on the chunked kernel) for at most ``budget`` seconds
    of solver time (the time between its iteration callbacks, not the snapshots'); snapshot h where
    ``log_every(state, log)`` (and at the end)."""
    snapshots, clock = [], {"elapsed": 0.0, "start": 0.0}

    def on_iteration(state: dict, log) -> bool:
        clock["elapsed"] += time.perf_counter() - clock["start"]
        if log_every(state, log) or state["done"]:
            snapshots.append((state["iteration"], clock["elapsed"], state["samples_used"], state["solution"].clone()))
        clock["start"] = time.perf_counter()
        return clock["elapsed"] >= budget

    reference = name == REFERENCE_ADAM
    name = "adam-mc" if reference else name
    typed = solver_options(name, options)
    with native.disabled() if reference else contextlib.nullcontext():
        clock["start"] = time.perf_counter()
        ot_solvers.SOLVERS[name].solve(problem, typed, None, on_iteration)
    return snapshots


def _pass_seconds(problem: Problem, n: int, h: torch.Tensor) -> float:
    """Seconds of one pass of hard cell counts over n source points held in memory (what every hard Newton
    step of newton-qmc costs on its final sample; drawing the points is not counted)."""
    sample = problem.sample(n, (EVALUATION_KEY, 1))
    held = HeldSample(sample, list(sample.blocks()))
    return _best_time(lambda: sample_masses(problem, held, h.to(problem.device)), repeats=1)


POT_LEARNING_RATES = (0.1, 1.0, 10.0, 100.0)
#: adam-mc with its cell counts computed as the reference code computes them (blockwise BLAS products, then
#: argmax, then bincount; here the chunked torch kernel, whose blocked argmax is if anything faster): the
#: fused kernel of native.py is this toolkit's, and speeds adam-mc (nothing but cell counts) up more than
#: newton-qmc (which also estimates Jacobians and solves linear systems), so both are measured.
REFERENCE_ADAM = "adam-mc-blas"
#: Solvers are compared at the first times each has l1 <= this x the other's best (not at the best itself:
#: a slow solver spends most of its time on the last few percent of its plateau).
SAME_ACCURACY_SLACK = 1.1


def h_from_semi_dual(v: np.ndarray, targets: np.ndarray, weights: np.ndarray, reg: float) -> torch.Tensor:
    """Our h from the dual v of POT's entropic semi-dual for the cost |x - y|^2 / 2: ``h_j = v_j + reg log
    nu_j - |y_j|^2 / 2``, so that POT's plan row, ``nu_j exp((v_j - |x - y_j|^2 / 2) / reg)`` normalised, is
    ``softmax_j((<x, y_j> + h_j) / reg)`` (the factor exp(-|x|^2 / 2 reg) is common to the row)."""
    return torch.from_numpy(v + reg * np.log(weights) - (targets ** 2).sum(1) / 2)


def _pot_asgd(problem: Problem, n_source: int, reg: float, iterations: list[int], tune_iterations: int,
              learning_rates=POT_LEARNING_RATES) -> tuple[list, float]:
    """POT's stochastic semi-dual (``ot.stochastic.averaged_sgd_entropic_transport``, ASGD) on a fixed
    sample of ``n_source`` source points with cost |x - y|^2 / 2, a fresh run per logged iteration count,
    its dual turned into h by :func:`h_from_semi_dual`. Returns the snapshots and the learning rate used.

    Two settings make POT usable here without changing the problem it solves. Each cost row is shifted by
    its minimum: the semi-dual and its gradient do not depend on a constant per source point, and POT
    exponentiates ``(v_j - M_ij) / reg`` without stabilisation (NaN once every M_ij / reg > 745). The
    learning rate is the best of ``learning_rates`` by the l1 error after ``tune_iterations`` (tuning time
    not counted); POT's default, reg * n_source, overflows at these sizes.
    """
    import ot as pot

    x = torch.cat(list(SourceSample(problem.source, n_source, problem.seed, (7,)).blocks())).double().numpy()
    y = problem.targets.double().cpu().numpy()
    nu = problem.weights.cpu().numpy()
    cost = pot.dist(x, y) / 2
    cost -= cost.min(axis=1, keepdims=True)
    a = np.full(n_source, 1 / n_source)

    def run(count: int, lr: float) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported as such
            v = pot.stochastic.averaged_sgd_entropic_transport(a, nu, cost, reg, numItermax=count, lr=lr,
                                                               random_state=0)
        return time.perf_counter() - start, h_from_semi_dual(v, y, nu, reg)

    tuning = {lr: run(tune_iterations, lr) for lr in learning_rates}
    lr = min(learning_rates, key=lambda lr: _accuracy(_evaluate(problem, tuning[lr][1], 2**20))[0])
    # POT's runs are deterministic (random_state=0): the tuning run at the chosen rate is that count's run.
    runs = {count: tuning[lr] if count == tune_iterations else run(count, lr) for count in iterations}
    return [(count, seconds, n_source, h) for count, (seconds, h) in runs.items()], lr


def solver_benchmark(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    """Time to accuracy, Gaussian source, Gaussian targets, uniform weights. Goal (issues 3 and 15, full
    suite: N = 1000, d = 2 and 16): l1 <= 0.01 and max relative error <= 10% within 10 s on 2 cores, >= 10x
    faster than the reference code's Adam-MC and POT. adam-mc runs on this toolkit's default kernel (the
    fused one where built); in the full suite, at d = 16, ``REFERENCE_ADAM`` is the same solver counting its
    cells as the reference code does (blockwise BLAS products, then argmax: the chunked kernel). The quick
    suite (part of the 10-minute report) is a smaller instance: N = 200, d = 2 only (measured exactly),
    short budgets."""
    _check_suite(suite)
    quick = suite == "quick"
    n_targets = 200 if quick else 1000
    budget = 5.0 if quick else 120.0
    n_eval = 2**24  # l1 noise floor sqrt(2 N / (pi n)) = 0.0062 at N = 1000 (d = 2 is measured exactly)
    rows = []
    plans = [(d, solver) for d in ((2,) if quick else (2, 16))
             for solver in (("exact-2d",) if d == 2 else ()) + ("newton-qmc", "adam-mc", "pot-asgd")
             + ((REFERENCE_ADAM,) if d == 16 else ())]
    for d, solver in tqdm(plans, disable=not progress, desc="solvers", leave=False):
        coarse = None  # every snapshot measured (adam-mc's: see there)
        g = torch.Generator().manual_seed(1)
        targets = torch.randn(n_targets, d, generator=g).to(device)
        weights = torch.full((n_targets,), 1 / n_targets, dtype=torch.float64, device=device)
        problem = Problem(GaussianSource(d), targets, weights, seed=0)
        if solver == "exact-2d":  # the default (auto) in 2-D: no sampling, every Newton step logged
            extra = {}
            snapshots = _run_solver(solver, problem, budget, {}, lambda state, log: True)
        elif solver == "newton-qmc":
            # Quasi-Monte Carlo integrates 2-D cells to l1 ~ 0.006 with 512 points per target; in 16-D it
            # is barely better than Monte Carlo, sqrt(2 N / (pi n)): l1 <= 0.01 takes n ~ 8000 N.
            n_final = (512 if d == 2 else 8192) * n_targets
            # The default options otherwise (the entropic warm-up included). A snapshot at every iteration
            # of the stages with >= 1/64 of the final sample (the earlier ones are far from the goal;
            # evaluating a 16-D snapshot takes a few seconds).
            snapshots = _run_solver(solver, problem, budget, {"n_samples": n_final},
                                    lambda state, log: log.samples * 64 >= n_final)
            extra = {"final_samples": n_final, "final_pass_seconds": _pass_seconds(problem, n_final, snapshots[-1][3])}
        elif solver in ("adam-mc", REFERENCE_ADAM):
            # Powers of two, then every 10 iterations (its batch doubles on stalls, so late iterations are
            # long); measured at powers of two and every 100 iterations, and all of them up to its first
            # time at the accuracy the report compares at (_refined).
            snapshots = _run_solver(solver, problem, budget, {"max_iter": 10_000},
                                    lambda state, log: (it := state["iteration"]) & (it - 1) == 0 or it % 10 == 0)
            coarse = [(it := snapshot[0]) & (it - 1) == 0 or it % 100 == 0 for snapshot in snapshots]
            coarse[-1] = True
            extra = {}
        else:
            n_source = 20 * n_targets if quick else 32 * n_targets
            # 1, 2, 5 per decade (each count is a run of its own): with decades alone, the first time POT
            # reaches an accuracy could be overstated up to 10x, and so could a speed-up over it.
            top = 5 if quick else 6
            counts = [m * 10**k for k in range(3, top) for m in (1, 2, 5)] + [10**top]
            reg = 0.01
            snapshots, lr = _pot_asgd(problem, n_source, reg, iterations=counts, tune_iterations=10**(top - 1))
            extra = {"pot_reg": reg, "pot_lr": lr}
        for (iteration, seconds, samples, _), errors in _refined(problem, snapshots, coarse, n_eval):
            rows.append({"solver": solver, "N": n_targets, "d": d, "iteration": iteration, "seconds": seconds,
                         "source_samples": samples, "threads": torch.get_num_threads(), "suite": suite,
                         **extra, **errors})
    return rows


def _refined(problem: Problem, snapshots: list, coarse: list[bool] | None, n_eval: int,
             slack: float = SAME_ACCURACY_SLACK) -> list[tuple[tuple, dict]]:
    """``(snapshot, its errors)`` of the ``coarse`` snapshots (None: all of them), and of as many others as
    it takes to find the first snapshot with l1 <= ``slack`` x the best measured l1, the accuracy the report
    compares solvers at: the snapshots before the first measured one within it are measured in time order
    (the level falls when one of them is the new best) until none is left. So that first time is exact to
    the snapshots, not to the coarse ones only (10x sparser in iterations, more in time as a solver's batch
    grows), for the price of those measurements (a pass over ``n_eval`` points each)."""
    coarse = [True] * len(snapshots) if coarse is None else coarse
    measured = {i: _evaluate(problem, snapshots[i][3], n_eval) for i, keep in enumerate(coarse) if keep}
    while True:
        finite = [_accuracy(errors)[0] for errors in measured.values() if math.isfinite(_accuracy(errors)[0])]
        if not finite:
            break
        level = slack * min(finite)
        hit = next(i for i in sorted(measured) if _accuracy(measured[i])[0] <= level)
        left = next((i for i in range(hit) if i not in measured), None)
        if left is None:
            break
        measured[left] = _evaluate(problem, snapshots[left][3], n_eval)
    return [(snapshots[i], measured[i]) for i in sorted(measured)]


def _accuracy(row: dict) -> tuple[float, float, str]:
    """(l1, max relative error, how measured): the exact masses where known (2-D), else the independent
    Monte-Carlo sample (whose own noise only adds to the error: a goal met there is met)."""
    exact = row.get("exact_l1_mass_error")
    if exact is not None and not (isinstance(exact, float) and math.isnan(exact)):
        return float(exact), float(row["exact_max_rel_mass_error"]), "exact"
    return float(row["l1_mass_error"]), float(row["max_rel_mass_error"]), f"MC {int(row['eval_samples'])}"


def _curve(rows: list[dict], solver: str, d: int) -> list[dict]:
    """One solver's logged points in dimension d, by solver time."""
    return sorted((r for r in rows if (r["solver"], r["d"]) == (solver, d)), key=lambda r: r["seconds"])


def _first_hit(curve: list[dict], l1: float, max_rel: float = math.inf) -> dict | None:
    """The first point of ``curve`` with both errors within bounds (None: never)."""
    return next((r for r in curve if _accuracy(r)[0] <= l1 and _accuracy(r)[1] <= max_rel), None)


def time_to_accuracy(rows: list[dict], l1: float = 0.01, max_rel: float = 0.1) -> list[dict]:
    """Per (solver, d): the first time both errors are met, else the best errors reached and when."""
    summary = []
    for solver, d in sorted({(r["solver"], r["d"]) for r in rows}):
        curve = _curve(rows, solver, d)
        errors = [_accuracy(r) for r in curve]
        hit = _first_hit(curve, l1, max_rel)
        best = min(range(len(curve)), key=lambda i: errors[i][0])
        summary.append({"solver": solver, "d": d, "N": curve[0]["N"], "measured": errors[0][2],
                        "reached": hit is not None, "seconds_to_goal": hit["seconds"] if hit else None,
                        "best_l1": errors[best][0], "best_max_rel": min(e[1] for e in errors),
                        "seconds_at_best_l1": curve[best]["seconds"],
                        "l1_noise_floor": None if errors[0][2] == "exact" else curve[0]["l1_noise_floor"]})
    return summary


def _seconds_to_l1(rows: list[dict], solver: str, d: int, l1: float) -> float | None:
    """The first solver time at which ``solver`` reaches an l1 error of at most ``l1`` (None: never)."""
    hit = _first_hit(_curve(rows, solver, d), l1)
    return float(hit["seconds"]) if hit else None


# ------------------------------------------------------------------------------------------ scale
def scale_benchmark(suite: str = "quick", device: str = "cpu", progress: bool = False) -> list[dict]:
    """Seconds of one solver pass (cell counts of ``samples`` source points) vs N at d = 64, which is
    linear in N; a CIFAR-scale dry run (N = 1e5 random targets, d = 3072 in the full suite; 1e4 in the
    quick one) with its peak resident memory (goal: within 4 GB); the float32 argmax against float64
    (:func:`float32_argmax_rows`); and in the full suite newton-qmc and adam-mc iterations at d = 3072
    (:func:`d3072_solver_rows`, N = 2000 and 10 000) and their memory against the number of points
    (:func:`points_memory_rows`)."""
    _check_suite(suite)
    device = torch.device(device)
    quick = suite == "quick"
    rows, d, samples = [], 64, 2**15 if quick else 2**17
    sizes = (500, 1000, 2000, 4000) if quick else (1000, 3000, 10_000, 30_000)
    for n in tqdm(sizes, disable=not progress, desc="scale", leave=False):
        problem = _random_problem(n, d, device)
        sample = problem.sample(samples, (0,))
        seconds = _best_time(lambda: sample_masses(problem, sample, torch.zeros(n, dtype=torch.float64,
                                                                                device=device)), 1 if quick else 2)
        rows.append({"kind": "pass", "N": n, "d": d, "samples": samples, "seconds": seconds,
                     "seconds_per_target": seconds / n, "threads": torch.get_num_threads()})
    n, d, samples = (10_000, 3072, 2048) if quick else (100_000, 3072, 8192)
    problem, peak, seconds = None, None, 0.0

    def dry_run():
        nonlocal problem, seconds
        problem = _random_problem(n, d, device)
        start = time.perf_counter()
        sample_masses(problem, problem.sample(samples, (0,)), torch.zeros(n, dtype=torch.float64, device=device))
        seconds = time.perf_counter() - start

    peak = _peak_rss_increase_mb(dry_run)
    rows.append({"kind": "cifar-dry-run", "N": n, "d": d, "samples": samples, "seconds": seconds,
                 "seconds_per_sample": seconds / samples, "peak_extra_mb": peak,
                 "targets_mb": n * d * 4 / 2**20, "threads": torch.get_num_threads(),
                 "adam_mc_iteration_seconds_estimate": seconds / samples * 10 * n})
    del problem
    rows += float32_argmax_rows(suite, device)
    if not quick:  # minutes per row at d = 3072; N = 50 000 (about an hour on one CPU thread) runs alone:
        # d3072_solver_rows("full", sizes=(50_000,)), benchmarks/README.md "OT at d = 3072"
        rows += d3072_solver_rows(suite, device, progress, sizes=(2000, 10_000))
        rows += points_memory_rows(suite, device)
    return rows


D_CIFAR = 3072


def _cifar_targets(n: int, kind: str, seed: int = 3) -> torch.Tensor:
    """N targets in d = 3072: ``random`` standard Gaussian, or ``clustered``: 10 centres (standard Gaussian)
    with members at std 0.05 around them (data latents at a small sigma_star look like this)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, D_CIFAR, generator=g)
    centres = torch.randn(10, D_CIFAR, generator=g)
    return centres[torch.arange(n) % 10] + 0.05 * torch.randn(n, D_CIFAR, generator=g)


def _solver_run(name: str, problem: Problem, options: dict, iterations: int) -> tuple[list[dict], torch.Tensor]:
    """``iterations`` iterations of a solver; one record (seconds, points, temperature) per iteration."""
    records, clock = [], {"start": time.perf_counter()}
    out = {}

    def on_iteration(state: dict, log) -> bool:
        now = time.perf_counter()
        records.append({"seconds": now - clock["start"], "points": log.samples, "tau": getattr(log, "tau", 0.0)})
        clock["start"] = now
        out["h"] = state["solution"]
        return len(records) >= iterations

    ot_solvers.SOLVERS[name].solve(problem, solver_options(name, options), None, on_iteration)
    return records, out["h"]


def d3072_solver_rows(suite: str, device, progress: bool = False, sizes: tuple[int, ...] | None = None) -> list[dict]:
    """newton-qmc and adam-mc at d = 3072 (CIFAR-10's dimension), random and clustered targets: a few
    iterations each, on stage samples of ``points`` source points (newton-qmc: first stage, Hessian and
    Jacobian samples; adam-mc: its per-iteration sample), with the peak extra resident memory of the run,
    the seconds per iteration and per source point, and the independent check of the h reached (l1 error
    and its noise floor; after so few iterations on so few points this is the accuracy *reached*, not a
    converged fit). ``*_default_iteration_seconds`` extrapolate linearly in the points (a pass is a GEMM of
    points x N x d): a newton-qmc pass over its default final stage (256 N points), an adam-mc iteration at
    its default 10 N points. N = 2000, 10 000, 50 000 (the quick suite, used by tests only: 2000)."""
    from ..ot.check import sampled_check

    quick = suite == "quick"
    sizes = sizes or ((2000,) if quick else (2000, 10_000, 50_000))
    iterations, points = (2, 8192) if quick else (3, 8192)
    check_points = 2**14 if quick else 2**16
    plans = [(n, kind, solver) for n in sizes for kind in ("random", "clustered") for solver in ("newton-qmc", "adam-mc")]
    rows = []
    for n, kind, solver in tqdm(plans, disable=not progress, desc="d=3072", leave=False):
        targets = _cifar_targets(n, kind).to(device)
        weights = torch.full((n,), 1 / n, dtype=torch.float64, device=device)
        problem = Problem(GaussianSource(D_CIFAR), targets, weights, 0)
        if solver == "newton-qmc":  # one warm-up pass, then hard passes (Jacobian, refill) on `points` points
            options = {"first_samples": points, "n_samples": 4 * points, "hessian_samples": points,
                       "jacobian_samples": points, "first_smoothing": 0.25, "smoothing": 0.25, "warmup_iter": 1,
                       "max_iter": iterations}
        else:
            options = {"n_samples": points, "max_iter": iterations}
        result = {}
        peak = _peak_rss_increase_mb(lambda: result.update(zip(("records", "h"),
                                                               _solver_run(solver, problem, options, iterations))))
        records = result["records"]
        per_iteration = float(np.mean([r["seconds"] for r in records]))
        per_point = float(np.mean([r["seconds"] / r["points"] for r in records]))
        check = sampled_check(problem, result["h"], 0.01, check_points)
        rows.append({"kind": "d3072-solver", "N": n, "d": D_CIFAR, "targets": kind, "solver": solver,
                     "iterations": len(records), "points_per_iteration": int(np.mean([r["points"] for r in records])),
                     "seconds_per_iteration": per_iteration,
                     "seconds_per_entropic_iteration": _mean([r["seconds"] for r in records if r["tau"] > 0]),
                     "seconds_per_hard_iteration": _mean([r["seconds"] for r in records if r["tau"] == 0]),
                     "seconds_per_point": per_point, "peak_extra_mb": peak, "targets_mb": n * D_CIFAR * 4 / 2**20,
                     "check_l1_mass_error": check.l1_mass_error, "check_noise_floor": check.noise_floor,
                     "check_samples": check.n_samples,
                     "default_iteration_points": 256 * n if solver == "newton-qmc" else 10 * n,
                     "default_iteration_seconds": per_point * (256 * n if solver == "newton-qmc" else 10 * n),
                     "threads": torch.get_num_threads(), "device": str(device)})
        del problem, targets
    return rows


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def points_memory_rows(suite: str, device) -> list[dict]:
    """Peak extra memory of newton-qmc passes against the number of source points (N = 2000 random
    targets in d = 3072, samples streamed: ``cache_bytes=0``): flat in the points."""
    n = 2000
    counts = (8192, 16384) if suite == "quick" else (8192, 32768, 131072)
    rows = []
    for points in counts:
        problem = Problem(GaussianSource(D_CIFAR), _cifar_targets(n, "random").to(device),
                          torch.full((n,), 1 / n, dtype=torch.float64, device=device), 0)
        problem.scoring  # built before the measurement: part of the targets' memory, not of the points'
        options = {"first_samples": points, "n_samples": points, "hessian_samples": points, "jacobian_samples": points,
                   "first_smoothing": 0.25, "smoothing": 0.25, "warmup_iter": 1, "max_iter": 2, "cache_bytes": 0}
        result = {}
        peak = _peak_rss_increase_mb(lambda: result.update(records=_solver_run("newton-qmc", problem, options, 2)[0]))
        rows.append({"kind": "memory-vs-points", "N": n, "d": D_CIFAR, "solver": "newton-qmc", "points": points,
                     "iterations": len(result["records"]), "peak_extra_mb": peak,
                     "seconds": float(sum(r["seconds"] for r in result["records"])),
                     "threads": torch.get_num_threads(), "device": str(device)})
    return rows


def float32_argmax_rows(suite: str, device) -> list[dict]:
    """How often the float32 argmax of ``<x, y_i> + h_i`` differs from the float64 one, scored as given
    (``kernel.assign``) or centred (``Problem.assign``), for image-like targets in [0, 1]^3072 (10 cluster
    centres uniform in [0, 1], members at std 0.01, clipped; common mean ~0.5) under the uniform source on
    [0, 1] (the reference code's; inner products ~ d / 4) and the standard Gaussian, at the moment-matched
    h (where newton-qmc starts) on M source points; also the median absolute float32 error of the winning
    score."""
    from ..ot.problem import initial_h
    from ..ot.sources import UniformSource

    n, m = 2000, 4096 if suite == "quick" else 32768
    g = torch.Generator().manual_seed(5)
    centres = torch.rand(10, D_CIFAR, generator=g)
    y = (centres[torch.arange(n) % 10] + 0.01 * torch.randn(n, D_CIFAR, generator=g)).clamp_(0, 1).to(device)
    weights = torch.full((n,), 1 / n, dtype=torch.float64, device=device)
    rows = []
    for source in (UniformSource(D_CIFAR, 0.0, 1.0), GaussianSource(D_CIFAR)):
        problem = Problem(source, y, weights, 0)
        h = initial_h(problem, "moment-matched")
        x = problem.sample(m, (EVALUATION_KEY, 9)).head(m)
        y64, x64 = y.double(), x.double()
        exact_index, exact_best = [], []
        for start in range(0, m, 1024):
            scores = x64[start:start + 1024] @ y64.T + h
            best = scores.max(dim=1)
            exact_index.append(best.indices)
            exact_best.append(best.values)
        exact_index, exact_best = torch.cat(exact_index), torch.cat(exact_best)
        plain = kernel.assign(x, y, h)
        centred = problem.assign(x, h)
        for name, index in (("as given", plain), ("centred", centred)):
            rows.append({"kind": "float32-argmax", "N": n, "d": D_CIFAR, "M": m, "source": source.kind,
                         "scores": name, "disagreement": float((index != exact_index).double().mean()),
                         "mean_abs_inner_product": float((x64[:1024] @ y64.T).abs().mean()),
                         "device": str(device)})
        best32 = (x[:1024] @ y.T + h.float()).amax(1).double()
        rows[-2]["median_abs_score_error"] = float((best32 - exact_best[:1024]).abs().median())
        scoring = problem.scoring
        best_c = ((scoring.points(x[:1024]) @ scoring.targets[:n].T + scoring.scores_h(h)).amax(1).double()
                  + scoring.row_constant(x[:1024]))
        rows[-1]["median_abs_score_error"] = float((best_c - exact_best[:1024]).abs().median())
    return rows


def _random_problem(n: int, d: int, device) -> Problem:
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(n, d, generator=g).to(device)
    return Problem(GaussianSource(d), targets, torch.full((n,), 1 / n, dtype=torch.float64, device=device), 0)


# ------------------------------------------------------------------------------------------ report
