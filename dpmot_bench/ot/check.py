"""The independent accuracy check of a fitted h: its cell-mass errors measured on source points that no
solver used, with the noise floor of that measurement, against the l1 error ``tol`` the user asked for.

Sampling solvers (``newton-qmc``, ``adam-mc``): Monte Carlo on n fresh source points (key
``(EVALUATION_KEY, 2, r)``, r = 0 for the final check, 1, 2, ... for a solver's own rounds), masses
``m_i = c_i / n``. With ``t = |mu(W(h)) - nu|_1`` the true error and ``L = |m - nu|_1`` the measured one,

    F(n) = sum_i sqrt(2 nu_i (1 - nu_i) / (pi n))      (the noise floor: E |m - mu(W)|_1 when mu(W) = nu,
                                                        the binomial mean absolute deviation, normal approx.)
    t <= E L <= t + F                                  (Jensen: E |a + e| >= |a| for zero-mean e; the
                                                        triangle inequality for the upper bound),

and L concentrates around E L: one point moves L by at most 2 / n, so ``P(|L - E L| >= eps) <=
2 exp(-n eps^2 / 2)`` (McDiarmid). The check is sized so that ``F(n) <= tol / 2`` (the smallest such n,
at most ``budget`` points) and **agrees** when ``L <= tol`` and ``F(n) <= tol / 2``: L is an upward-biased
estimate of t, so ``L <= tol`` confirms ``t <= tol`` up to L's fluctuation, which is below F for N >= 25
(McDiarmid's eps at probability 1e-3 is ``sqrt(2 ln 2000 / n) ~ 4.6 F / sqrt(N)``); a budget too small for
``F <= tol / 2`` never agrees (the result says so: ``noise_floor`` > tol / 2).

The points are streamed in rounds (the first 1/64, 1/16, 1/4 of the blocks, then all): after a round of n'
points with ``L' > tol + F(n') + sqrt(2 ln(1 / delta) / n')``, delta = 1e-3, t > tol except with
probability delta (``E L' <= t + F(n')``), and the check ends there, disagreeing: a map far from tol costs
a fraction of the full check. Memory: one block of points and the counts.

``exact-2d``: the exact masses of the power diagram (``power2d.py``, what the solver uses), no sampling;
the floor is the float64 round-off bound of their l1 error (plus ``|sum_i (m_i - nu_i)|``, which no h can
reduce), and the check agrees when ``L <= max(tol, floor)``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from .distributed import rank_and_world
from .problem import EVALUATION_KEY, Problem, mass_errors, sample_masses
from . import sampling
from .sampling import SourceSample

DEFAULT_TOL = 0.01  # what the check tests when the user gives no tol (sampling solvers)
CHECK_SAMPLES_WITH_TOL = 2**26  # the check's budget when tol is given: F <= 0.005 up to N ~ 2500 targets
CHECK_SAMPLES_DEFAULT = 2**20  # without tol: one measurement, confirming l1 <= 0.01 only up to N ~ 40
FLOOR_FRACTION = 0.5  # the check's noise floor must be at most this fraction of tol
EARLY_DELTA = 1e-3  # probability that the early stop refuses a map within tol
CHECK_STREAM = 2  # second element of the check's sample key (after EVALUATION_KEY)


@dataclass(frozen=True)
class Check:
    """The outcome of an accuracy check: ``tol`` tested, the measured ``l1_mass_error``,
    ``max_rel_mass_error`` and ``empty_cells``, the measurement's ``noise_floor`` and ``n_samples`` (0
    when ``exact``), whether it ``agrees`` (the map is within tol) and whether it ``stopped_early``."""

    tol: float
    l1_mass_error: float
    max_rel_mass_error: float
    empty_cells: int
    noise_floor: float
    n_samples: int
    agrees: bool
    exact: bool
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Check":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def noise_floor(weights: torch.Tensor, n: int) -> float:
    """``F(n) = sum_i sqrt(2 nu_i (1 - nu_i) / (pi n))``: the expected l1 error of n-point Monte-Carlo masses."""
    nu = weights.double()
    return float((2 * nu * (1 - nu) / (math.pi * n)).sqrt().sum())


def check_size(weights: torch.Tensor, tol: float, budget: int) -> int:
    """The smallest n with ``F(n) <= FLOOR_FRACTION tol`` (F falls as 1 / sqrt(n)), at most ``budget``."""
    needed = math.ceil((noise_floor(weights, 1) / (FLOOR_FRACTION * tol)) ** 2)
    return max(1, min(budget, needed))


def check_budget(tol: float | None, check_samples: int | None) -> int:
    """The most points a check may draw: ``check_samples``, else a default that depends on whether the
    user asked for a tol."""
    if check_samples is not None:
        return check_samples
    return CHECK_SAMPLES_DEFAULT if tol is None else CHECK_SAMPLES_WITH_TOL


@dataclass(frozen=True)
class _Blocks:
    """Blocks ``[low, high)`` of a sample, this process's share (rank-strided), as ``sample_masses`` reads."""

    sample: SourceSample
    low: int
    high: int

    @property
    def n(self) -> int:
        return min(self.high * sampling.BLOCK_ROWS, self.sample.n) - self.low * sampling.BLOCK_ROWS

    def blocks(self):
        rank, world = rank_and_world()
        return self.sample.blocks(range(self.low + rank, self.high, world))


def sampled_check(problem: Problem, h: torch.Tensor, tol: float, budget: int, round_: int = 0) -> Check:
    """The Monte-Carlo check of h against ``tol`` (module docstring), on at most ``budget`` points."""
    nu = problem.weights
    n = check_size(nu, tol, budget)
    sample = problem.sample(n, (EVALUATION_KEY, CHECK_STREAM, round_))
    ends = sorted({max(1, math.ceil(sample.n_blocks / q)) for q in (64, 16, 4)} | {sample.n_blocks})
    counts, low, drawn = torch.zeros_like(nu), 0, 0
    for high in ends:
        part = _Blocks(sample, low, high)
        counts += sample_masses(problem, part, h) * part.n
        drawn += part.n
        low = high
        errors = mass_errors(counts / drawn, nu)
        floor = noise_floor(nu, drawn)
        if drawn < n and errors["l1_mass_error"] > tol + floor + math.sqrt(2 * math.log(1 / EARLY_DELTA) / drawn):
            return Check(tol, **errors, noise_floor=floor, n_samples=drawn, agrees=False, exact=False,
                         stopped_early=True)
    agrees = errors["l1_mass_error"] <= tol and floor <= FLOOR_FRACTION * tol
    return Check(tol, **errors, noise_floor=floor, n_samples=drawn, agrees=agrees, exact=False)


def exact_check(problem: Problem, h: torch.Tensor, tol: float) -> Check:
    """The exact check of a 2-D h: the power diagram's masses, floor = their round-off bound."""
    from .power2d import power_diagram

    y = problem.targets.detach().cpu().double().numpy()
    diagram = power_diagram(problem.source, y, h.detach().cpu().double().numpy(), with_jacobian=False)
    nu = problem.weights.detach().cpu().double()
    masses = torch.from_numpy(np.asarray(diagram.masses, dtype=np.float64))
    errors = mass_errors(masses, nu)
    floor = float(diagram.roundoff + abs(float((masses - nu).sum())))
    return Check(tol, **errors, noise_floor=floor, n_samples=0, agrees=errors["l1_mass_error"] <= max(tol, floor),
                 exact=True)


def check_fit(problem: Problem, options, h: torch.Tensor) -> Check:
    """The final check of a solver's h: exact for ``exact-2d`` (its options have no ``check_samples``),
    else Monte Carlo against ``options.tol`` (``DEFAULT_TOL`` when None) within the options' budget."""
    if not hasattr(options, "check_samples"):
        return exact_check(problem, h, options.tol)
    tol = DEFAULT_TOL if options.tol is None else options.tol
    return sampled_check(problem, h, tol, check_budget(options.tol, options.check_samples))


def final_check(problem: Problem, options, state: dict) -> Check:
    """The check of ``state["solution"]``: the solver's own, when it checked that very solution (its
    ``state["check"]`` was taken at the final iteration), else :func:`check_fit`."""
    saved = state.get("check")
    if isinstance(saved, dict) and saved.get("iteration") == state["iteration"]:
        return Check.from_dict(saved)
    return check_fit(problem, options, state["solution"])
