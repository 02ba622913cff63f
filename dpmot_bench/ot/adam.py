"""``adam-mc``: the reference code's solver (the "paper preset"), Adam on Monte-Carlo gradients of the
semi-dual ``E(h) = int max_i (<x, y_i> + h_i) dmu(x) - sum_i nu_i h_i``, ``dE/dh_i = mu(W_i(h)) - nu_i``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from scipy import stats

from ..errors import InputError
from ..options import check_fields, option
from .problem import ADAM_KEY, INITS, Problem, initial_h, mass_errors, sample_masses

STOP_RULES = ("reference", "noise-floor")


@dataclass(frozen=True)
class AdamMCOptions:
    """The options of :func:`adam_mc`, checked when built (an :class:`~dpmot_bench.errors.InputError`
    names a mistyped or out-of-range field)."""

    max_iter: int = option(10_000, int, low=1, help="iterations (one fresh sample each)")
    n_samples: int | None = option(None, int, low=1, optional=True, help="source points per iteration (default 10 N)")
    lr: float = option(0.1, float, above=0, help="Adam's step size")
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "Adam's moment decays, each in [0, 1)"})
    eps: float = option(1e-8, float, above=0, help="Adam's denominator guard")
    patience: int = option(50, int, low=1, help="iterations without a better |g|_2 before the samples double")
    max_doublings: int = option(3, int, low=0, help="how often the samples may double")
    lr_decay: float = option(0.8, float, above=0, high=1, help="lr factor at each doubling")
    stop: str = option("reference", str, choices=STOP_RULES, help="the stop rule (see adam_mc)")
    grad_tol: float = option(8e-4, float, low=0, help="the reference rule's |g|_2 threshold")
    noise_quantile: float = option(0.5, float, above=0, high=1, help="the noise-floor rule's chi-square quantile, < 1")
    init: str = option("zeros", str, choices=INITS, help="the starting h")
    tol: float | None = option(None, float, above=0, optional=True,
                               help="the l1 cell-mass error the independent check tests after the fit (null: 0.01); "
                                    "the schedule is unchanged")
    check_samples: int | None = option(None, int, low=1, optional=True,
                                       help="most points of the independent check (null: 2^26 with tol, 2^20 without)")

    def __post_init__(self):
        check_fields(self)
        betas = self.betas
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise InputError(f"option betas must be two numbers in [0, 1) (Adam's moment decays), got {betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        if self.noise_quantile >= 1:
            raise InputError(f"option noise_quantile must be a number in (0, 1), got {self.noise_quantile!r}")


@dataclass(frozen=True)
class AdamLog:
    """One iteration of :func:`adam_mc`, measured on that iteration's own sample."""

    iteration: int  # 0-based
    samples: int  # source points drawn
    l1_mass_error: float  # sum_i |m_i - nu_i|
    max_rel_mass_error: float  # max_i |m_i - nu_i| / nu_i
    empty_cells: int
    grad_norm: float  # |g|_2
    lr: float  # the step size used


def initial_state(problem: Problem, options: AdamMCOptions) -> dict:
    """The solver state before the first iteration (tensors and JSON-able scalars, resumable as is)."""
    h = initial_h(problem, options.init)
    return {"iteration": 0, "h": h, "m": torch.zeros_like(h), "v": torch.zeros_like(h), "lr": float(options.lr),
            "n_samples": int(options.n_samples or 10 * problem.targets.shape[0]), "doublings": 0, "stall": 0,
            "stage_best": math.inf, "best_grad_norm": math.inf, "solution": h.clone(), "done": False,
            "samples_used": 0}


def measure(problem: Problem, state: dict) -> tuple[torch.Tensor, AdamLog]:
    """Cell counts of h on this iteration's fresh sample (key ``(ADAM_KEY, iteration)``); keeps the h with
    the smallest ``|g|_2`` so far as the solution."""
    n, nu, h = state["n_samples"], problem.weights, state["h"]
    counts = sample_masses(problem, problem.sample(n, (ADAM_KEY, state["iteration"])), h) * n
    grad_norm = float((counts / n - nu).norm())
    state["samples_used"] += n
    if grad_norm < state["best_grad_norm"]:
        state["best_grad_norm"] = grad_norm
        state["solution"] = h.clone()
    log = AdamLog(state["iteration"], n, **mass_errors(counts / n, nu), grad_norm=grad_norm, lr=state["lr"])
    return counts, log


def adam_step(state: dict, g: torch.Tensor, betas: tuple[float, float], eps: float) -> None:
    """Adam without bias correction, in place: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``h <- h - lr m / (sqrt(v) + eps)``, then h is centred."""
    h, m, v = state["h"], state["m"], state["v"]
    m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
    v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
    h.addcdiv_(m, v.sqrt().add_(eps), value=-state["lr"])
    h.sub_(h.mean())


def schedule(state: dict, grad_norm: float, at_noise_floor: bool, options: AdamMCOptions) -> None:
    """The sample-size schedule and the noise-floor stop: on a stall (``patience`` iterations without a
    better |g|_2 at this sample size, or, under ``stop="noise-floor"``, a gradient that is pure sampling
    noise) the samples double and ``lr *= lr_decay``, at most ``max_doublings`` times; a noise-floor stall
    with no doubling left ends the fit."""
    state["stall"] = 0 if grad_norm < state["stage_best"] else state["stall"] + 1
    state["stage_best"] = min(state["stage_best"], grad_norm)
    noise_rule = options.stop == "noise-floor"
    if state["stall"] >= options.patience or (noise_rule and at_noise_floor):
        if state["doublings"] < options.max_doublings:
            state.update(n_samples=2 * state["n_samples"], lr=state["lr"] * options.lr_decay,
                         doublings=state["doublings"] + 1, stall=0, stage_best=math.inf)
        elif noise_rule:
            state["done"] = True


def adam_mc(problem: Problem, options: AdamMCOptions, state: dict | None = None, on_iteration=None) -> dict:
    """Minimise the semi-dual by Adam on Monte-Carlo gradients; return the final solver state.

    Iteration t draws ``n_samples`` fresh source points (default 10 N; sample key ``(ADAM_KEY, t)``),
    estimates ``g = counts / n - nu`` and takes an Adam step (:func:`adam_step`); the samples double on
    stalls (:func:`schedule`). The h with the smallest measured ``|g|_2`` is the solution.

    Stop rules: ``"reference"`` stops when ``|g|_2 < grad_tol`` with no empty cell (below the Monte-Carlo
    noise floor ``sqrt(sum nu_i (1 - nu_i) / n)`` for usual N and n, so in practice it runs ``max_iter``
    iterations, as the reference code does). ``"noise-floor"`` treats a gradient that is statistically
    indistinguishable from pure sampling noise as a stall: Pearson's statistic
    ``X^2 = sum_i (c_i - n nu_i)^2 / (n nu_i)``, chi-square with N - 1 degrees of freedom when the masses
    equal nu, is at most its ``noise_quantile`` quantile. Then the samples double at once (more iterations
    at this sample size cannot be told apart from noise), and once no doubling is left the fit stops.

    ``tol`` is what the independent check after the fit (``check.py``, run by the driver) tests; the
    schedule and the stop rules above do not depend on it.

    ``state`` (from :func:`initial_state` or a previous run, e.g. a checkpoint) resumes exactly;
    ``on_iteration(state, log)`` is called after every iteration and stops the run by returning True.
    """
    state = initial_state(problem, options) if state is None else state
    nu = problem.weights
    noise_threshold = float(stats.chi2.ppf(options.noise_quantile, problem.targets.shape[0] - 1))
    while not state["done"] and state["iteration"] < options.max_iter:
        n = state["n_samples"]
        counts, log = measure(problem, state)
        if options.stop == "reference" and log.grad_norm < options.grad_tol and log.empty_cells == 0:
            state["done"] = True
        else:
            adam_step(state, counts / n - nu, options.betas, options.eps)
            at_noise_floor = float(((counts - n * nu) ** 2 / (n * nu)).sum()) <= noise_threshold
            schedule(state, log.grad_norm, at_noise_floor, options)
        state["iteration"] += 1
        if on_iteration is not None and on_iteration(state, log):
            break
    return state
