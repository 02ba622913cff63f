"""Semi-discrete OT as a function: :func:`solve_semidiscrete` fits the dual weights h of the map from a
source measure mu to weighted targets, by a solver chosen by name.

The problem: minimise the convex semi-dual energy over h (N,),

    E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i,    dE/dh_i = mu(W_i(h)) - nu_i,

where ``W_i(h)`` is the power cell of target i. At the minimum every cell has mass nu_i and
``T(x) = y_{argmax_i <x, y_i> + h_i}`` is the optimal map for the cost |x - y|^2 / 2; ``h + c`` is the same
solution (h is kept centred). Cell masses are estimated from source samples (``problem.py``).

A solver (``SOLVERS[name].solve``) is a function ``solve(problem, options, state=None, on_iteration=None)
-> state``: ``options`` an instance of its options class (``SOLVERS[name].options``), ``state`` a dict of
tensors and JSON-able scalars, enough to resume exactly (pass it back), with ``state["solution"]`` the h
to use if stopped there, ``state["iteration"]`` the iterations run and ``state["done"]`` convergence. It
calls ``on_iteration(state, log)`` after every iteration (``log`` a small frozen record) and stops when
that returns True. :func:`solve_semidiscrete` drives it: history, progress bar, atomic checkpoints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from tqdm.auto import tqdm

from ..devices import as_device
from ..errors import InputError, check_points, check_weights, unknown_name
from ..io import remove_stale_temps
from ..options import check_fields, option, parse, unknown_keys
from .adam import AdamMCOptions, adam_mc
from .check import Check, final_check
from .distributed import is_main_process
from .exact_newton import Exact2DOptions, exact_2d, exact_2d_applies
from .files import load_checkpoint, save_checkpoint
from .newton import NewtonQMCOptions, newton_qmc
from .problem import Problem
from .sources import GaussianSource, Source, UniformSource

DEFAULT_SOLVER = "auto"
AUTO = "auto"
AUTO_CHOICES = ("exact-2d", "newton-qmc")  # what auto picks from: exact where it applies, else sampling


@dataclass(frozen=True)
class Method:
    """A solver function and the frozen options class it takes."""

    solve: Callable[..., dict]
    options: type


SOLVERS = {"adam-mc": Method(adam_mc, AdamMCOptions), "newton-qmc": Method(newton_qmc, NewtonQMCOptions),
           "exact-2d": Method(exact_2d, Exact2DOptions)}
SOLVER_NAMES = (AUTO, *SOLVERS)


def chosen_solver(method: str, source: Source) -> str:
    """The solver that runs for ``method`` on ``source``: ``auto`` is ``exact-2d`` where it applies (d = 2, a
    Gaussian or uniform source), else ``newton-qmc``; any other name is itself."""
    _method(method)
    if method != AUTO:
        return method
    return "exact-2d" if exact_2d_applies(source) else "newton-qmc"


def _method(name: str) -> Method | None:
    if not isinstance(name, str) or name not in SOLVER_NAMES:
        raise unknown_name("solver", str(name), SOLVER_NAMES)
    return SOLVERS.get(name)


def option_names(method: str) -> tuple[str, ...]:
    """Every option of a solver (``max_iter`` included), sorted; for ``auto``, those of either choice."""
    if _method(method) is None:
        return tuple(sorted({name for choice in AUTO_CHOICES for name in option_names(choice)}))
    return tuple(sorted(field.name for field in dataclasses.fields(SOLVERS[method].options)))


def solver_options(method: str, values: Mapping[str, Any], source: Source | None = None):
    """The typed options of solver ``method`` from ``values`` over its defaults: an unknown key is an
    :class:`InputError` listing the valid ones, a mistyped or out-of-range value one naming the key.

    ``auto`` takes the options of the solver it picks for ``source`` (:func:`chosen_solver`), so a key
    only the other choice takes is refused, naming the choice. Without a source (a preset checked before
    it meets its data) each choice checks the keys it takes, and the result is None."""
    if _method(method) is not None:
        unknown_keys(values, option_names(method), f"solver {method}")
        return SOLVERS[method].options(**values)
    if source is not None:
        choice = chosen_solver(method, source)
        unknown_keys(values, option_names(choice),
                     f"solver auto, which picks {choice} for a {source.dim}-D {source.kind} source,")
        return SOLVERS[choice].options(**values)
    unknown_keys(values, option_names(method), "solver auto")
    for choice in AUTO_CHOICES:
        solver_options(choice, {k: v for k, v in values.items() if k in option_names(choice)})
    return None


@dataclass(frozen=True)
class SemiDiscreteResult:
    """What :func:`solve_semidiscrete` returns.

    ``h`` (N,) float64 on the compute device, centred; ``n_iter`` iterations run in all (a resumed fit
    counts the earlier ones); ``converged`` whether the independent accuracy check ``check`` (a
    :class:`~dpmot_bench.ot.check.Check`: l1 and max relative mass errors on source points no solver used,
    its noise floor and size) confirms the l1 error ``tol`` the solver was given (0.01 for the sampling
    solvers when none was); ``solver_stopped`` whether the solver's own stop rule fired (else it ran out
    of ``max_iter``, or the callback stopped it); ``samples_used`` source points drawn by the solver; ``seconds`` of fitting, resumed runs'
    earlier time included; ``history`` one row per iteration (a pandas DataFrame with the columns of the
    solver's log record and ``seconds`` since the start); ``method`` and ``options`` (the typed options);
    ``problem`` the checked problem (targets float32 and weights float64 on the device, the seed)."""

    h: torch.Tensor
    n_iter: int
    converged: bool
    samples_used: int
    seconds: float
    history: Any
    method: str
    options: Any
    problem: Problem
    solver_stopped: bool = False
    check: Check | None = None


def _check_source(source) -> None:
    if not isinstance(source, (GaussianSource, UniformSource)):
        raise InputError(f"source must be a GaussianSource or UniformSource, got {type(source).__name__}")


def semidiscrete_problem(source: Source, targets: torch.Tensor, weights: torch.Tensor | None = None, seed: int = 0,
                         device: str | torch.device = "cpu") -> Problem:
    """The checked :class:`Problem`: distinct finite targets (N >= 2, the source's dimension) and weights
    > 0 summing to 1 (uniform when None); ``InputError`` for anything else."""
    _check_source(source)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    device = as_device(device)
    targets = check_points(targets, "targets", dim=source.dim, min_rows=2)
    n = targets.shape[0]
    if torch.unique(targets.float(), dim=0).shape[0] < n:
        raise InputError("targets contain duplicate rows (two targets at one point share one cell); "
                         "merge them and add their weights")
    if weights is None:
        weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    elif not isinstance(weights, torch.Tensor):
        raise InputError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    weights = check_weights(weights.double(), n)
    if bool((weights <= 0).any()):
        raise InputError("weights must be > 0 (a target of weight 0 has an empty cell); drop those targets")
    return Problem(source, targets.detach().float().to(device), weights.to(device), seed)


def fingerprint(problem: Problem, method: str, options: Mapping[str, Any]) -> str:
    """What a checkpoint must match to be resumed: targets, weights, source, method, seed and the options
    as given."""
    digest = hashlib.sha256()
    for tensor in (problem.targets, problem.weights):
        digest.update(tensor.cpu().numpy().tobytes())
    digest.update(json.dumps([problem.source.to_meta(), method, problem.seed, dict(options)],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _history_table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def run_solver(problem: Problem, method: str, options, *, progress: bool = False,
               checkpoint: str | Path | None = None, checkpoint_every: int = 100,
               checkpoint_key: str = "") -> SemiDiscreteResult:
    """Drive solver ``method`` with typed ``options`` on a checked problem. With ``checkpoint``, the state is saved there atomically every ``checkpoint_every`` iterations
    and at the end (by the main process), and a run started with an existing checkpoint whose fingerprint
    is ``checkpoint_key`` resumes from it, ending with the same h as an uninterrupted run."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise InputError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    main = is_main_process()
    state, history = None, []
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if main:  # a killed fit's temp checkpoints (never a live writer's)
            remove_stale_temps(checkpoint.parent, names=[checkpoint.name], recursive=False)
        if checkpoint.exists():
            state, history = load_checkpoint(checkpoint, checkpoint_key, problem.device)
    seconds_before = history[-1]["seconds"] if history else 0.0
    start = time.perf_counter()
    bar = tqdm(total=options.max_iter, initial=len(history), disable=not (progress and main),
               desc=f"fit-ot {method}", unit="it", leave=False)

    def on_iteration(state: dict, log) -> None:
        history.append({**dataclasses.asdict(log), "seconds": seconds_before + time.perf_counter() - start})
        bar.update(1)
        bar.set_postfix(l1=f"{log.l1_mass_error:.3g}", samples=log.samples, refresh=False)
        if checkpoint is not None and main and state["iteration"] % checkpoint_every == 0:
            save_checkpoint(checkpoint, state, history, checkpoint_key)

    with bar:
        state = SOLVERS[method].solve(problem, options, state, on_iteration)
    if checkpoint is not None and main:
        save_checkpoint(checkpoint, state, history, checkpoint_key)
    check = final_check(problem, options, state)
    return SemiDiscreteResult(h=state["solution"].clone(), n_iter=state["iteration"], converged=check.agrees,
                              samples_used=state["samples_used"], seconds=history[-1]["seconds"] if history else 0.0,
                              history=_history_table(history), method=method, options=options, problem=problem,
                              solver_stopped=bool(state["done"]), check=check)


def solve_semidiscrete(source: Source, targets: torch.Tensor, weights: torch.Tensor | None = None,
                       method: str = DEFAULT_SOLVER, *, seed: int = 0, device: str | torch.device = "cpu",
                       progress: bool = False, checkpoint: str | Path | None = None, checkpoint_every: int = 100,
                       **options) -> SemiDiscreteResult:
    """Semi-discrete OT from ``source`` to ``targets`` (N, d) with ``weights`` (N,) (uniform when None):
    the dual weights h minimising ``E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i``, so that
    every power cell ``W_i(h)`` has mass ``nu_i``.

    ``method``: ``"auto"`` (the default: exact-2d where it applies, else newton-qmc), ``"exact-2d"`` (damped
    Newton on exact power-cell masses, d = 2 with a Gaussian or uniform source, to float64 round-off),
    ``"newton-qmc"`` (multiscale Newton on quasi-Monte-Carlo samples) or ``"adam-mc"`` (the reference code's
    Adam on Monte-Carlo gradients); ``options`` are the options of the solver that runs
    (:class:`~dpmot_bench.ot.exact_newton.Exact2DOptions`, :class:`~dpmot_bench.ot.newton.NewtonQMCOptions`,
    :class:`~dpmot_bench.ot.adam.AdamMCOptions`, e.g. ``max_iter``), checked before any work. ``seed`` names every source sample the solver draws;
    ``progress`` shows a tqdm bar; ``checkpoint`` (a path) saves the solver state atomically every
    ``checkpoint_every`` iterations, and a call with an existing checkpoint of the same problem, method,
    seed and options resumes from it, ending with the same h as an uninterrupted call.

    ``tol``, an option of every solver, is the l1 cell-mass error ``sum_i |mu(W_i) - nu_i|`` asked for
    (exact-2d: default 1e-12; the sampling solvers: none, when the fixed schedule runs and the check tests
    0.01); after the fit an independent check (``check.py``) measures the errors on source points no solver
    used, sized so that its noise floor is at most tol / 2 within ``check_samples`` points (exact masses for
    exact-2d), and ``converged`` is whether it confirms tol. newton-qmc grows its samples until it does.

    Returns a :class:`SemiDiscreteResult`; bad input of any kind is an :class:`InputError`.
    """
    _check_source(source)
    typed = solver_options(method, options, source)
    method = chosen_solver(method, source)
    problem = semidiscrete_problem(source, targets, weights, seed, device)
    return run_solver(problem, method, typed, progress=progress, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, checkpoint_key=fingerprint(problem, method, options))
