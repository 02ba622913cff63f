"""The fitted semi-discrete OT map as a scikit-learn-like estimator, a thin face over
:func:`~dpmot_bench.ot.solvers.solve_semidiscrete`."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..devices import as_device
from ..errors import InputError, check_points, unknown_name
from ..io import remove_stale_temps
from . import kernel
from .files import load_ot, save_ot
from .problem import EVALUATION_KEY, Problem, mass_errors, sample_masses
from .solvers import DEFAULT_SOLVER, solve_semidiscrete
from .sources import Source, source_from_meta

DEFAULT_TAU = 0.02  # the follow-up paper's smoothing (arXiv 2410.13431)
MODES = ("hard", "smooth")


MAX_MASS_SAMPLES = 2 ** 36


def check_mass_samples(n_samples, name: str = "n_samples") -> int:
    """``n_samples`` of a cell-mass measurement, an integer in [1, 2^36] (the CLI calls this before a fit)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= MAX_MASS_SAMPLES:
        raise InputError(f"{name} must be an integer in [1, 2^36] (beyond, the check alone takes hours and "
                         f"its noise floor is already below 1e-5 for N <= 10^5), got {n_samples!r}")
    return n_samples


class SemiDiscreteOT:
    """Semi-discrete optimal transport from a source measure to weighted targets.

    The map is ``T(x) = y_{i*(x)}``, ``i*(x) = argmax_i <x, y_i> + h_i``, with h fitted so that every power
    cell has the mass of its target (:func:`~dpmot_bench.ot.solvers.solve_semidiscrete` states the problem
    and does the fitting).

    Parameters are stored as given and validated in :meth:`fit`: ``source`` (a GaussianSource or
    UniformSource), ``solver`` (a name in ``SOLVER_NAMES``; ``auto`` picks exact-2d in 2-D), ``max_iter`` (None: the solver's default), ``seed``
    (names every source sample drawn), ``device``, ``progress`` (a tqdm bar), ``checkpoint`` (a path: the
    solver state is saved there atomically every ``checkpoint_every`` iterations, and a fit started with an
    existing checkpoint of the same problem resumes from it, ending with the same h as an uninterrupted fit),
    and ``solver_options``, the options of the solver that runs (``SOLVERS[name].options``), e.g. ``tol``,
    the l1 cell-mass error asked for.

    Fitted attributes: ``targets_`` (N, d) float32, ``weights_`` and ``h_`` (N,) float64, ``n_iter_``,
    ``history_`` (one dict per iteration: the fields of the solver's log record, e.g. iteration, samples,
    l1_mass_error, max_rel_mass_error, empty_cells measured on that iteration's own sample, and seconds
    since the start), ``fit_seconds_``, ``n_source_samples_`` (source points drawn by the solver),
    ``converged_`` (the independent check confirms tol), ``check_`` (that check: ``tol``, ``l1_mass_error``,
    ``max_rel_mass_error``, ``empty_cells``, ``noise_floor``, ``n_samples`` (0: exact), ``agrees``, ``exact``,
    ``stopped_early``), ``solver_stopped_`` (the solver's own stop rule fired), ``solver_`` (the solver that
    ran: ``auto`` resolved), ``options_`` (its typed options).

    The hard map scores in centred coordinates (``problem.Scoring``: the same argmax, with float32 errors
    of ``|x - a| |y_i - c|`` instead of ``|x| |y_i|``); ``targets_`` are the targets as given (float32).
    """

    def __init__(self, source: Source, solver: str = DEFAULT_SOLVER, max_iter: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = False, checkpoint: str | Path | None = None,
                 checkpoint_every: int = 100, **solver_options):
        self.source = source
        self.solver = solver
        self.max_iter = max_iter
        self.seed = seed
        self.device = device
        self.progress = progress
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.solver_options = solver_options

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, targets: torch.Tensor, weights: torch.Tensor | None = None) -> "SemiDiscreteOT":
        """Fit h so that every power cell has its target's weight (uniform weights by default)."""
        options = dict(self.solver_options)
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter
        result = solve_semidiscrete(self.source, targets, weights, self.solver, seed=self.seed, device=self.device,
                                    progress=self.progress, checkpoint=self.checkpoint,
                                    checkpoint_every=self.checkpoint_every, **options)
        self.targets_, self.weights_ = result.problem.targets, result.problem.weights
        self.h_ = result.h
        self.n_iter_ = result.n_iter
        self.history_ = result.history.to_dict("records")
        self.fit_seconds_ = result.seconds
        self.n_source_samples_ = result.samples_used
        self.converged_ = result.converged
        self.check_ = result.check.to_dict()
        self.solver_stopped_ = result.solver_stopped
        self._problem = result.problem
        self.solver_ = result.method
        self.options_ = result.options
        return self

    # ------------------------------------------------------------------------------------------ the map
    def _check_fitted(self) -> None:
        if not hasattr(self, "h_"):
            raise InputError("this SemiDiscreteOT is not fitted yet; call fit(targets) or SemiDiscreteOT.load(path)")

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return check_points(x, "x", dim=self.targets_.shape[1]).to(self.targets_.device)

    def _scored(self) -> Problem:
        """The fitted problem, whose centred targets the hard map scores against (built once)."""
        problem = getattr(self, "_problem", None)
        if problem is None or problem.targets is not self.targets_ or problem.weights is not self.weights_:
            problem = self._problem = Problem(self.source, self.targets_, self.weights_, self.seed)
        return problem

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The target index of each row of x, ``argmax_i <x, y_i> + h_i`` (int64, lowest index on ties among
        the float32 centred scores)."""
        points = self._points(x)
        return self._scored().assign(points, self.h_)

    def transport(self, x: torch.Tensor, mode: str = "hard", tau: float | None = None) -> torch.Tensor:
        """``T(x)``: the assigned target (``hard``), or the softmax(scores / tau) average of the targets
        (``smooth``, the gradient of the entropic potential; tau defaults to 0.02). Same dtype as x."""
        points = self._points(x)
        if mode == "hard":
            return self.targets_[self._scored().assign(points, self.h_)].to(x.dtype)
        if mode == "smooth":
            return kernel.smooth_transport(points, self.targets_, self.h_, self._tau(tau)).to(x.dtype)
        raise unknown_name("transport mode", mode, MODES)

    def potential(self, x: torch.Tensor, tau: float | None = 0.0) -> torch.Tensor:
        """The Brenier potential ``u_h(x) = max_i <x, y_i> + h_i`` (tau = 0), or its smoothing ``u_tau``."""
        return kernel.potential(self._points(x), self.targets_, self.h_, self._tau(tau) if tau else 0.0)

    @staticmethod
    def _tau(tau: float | None) -> float:
        tau = DEFAULT_TAU if tau is None else tau
        if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise InputError(f"tau must be a finite number > 0, got {tau!r}")
        return float(tau)

    # ------------------------------------------------------------------------------------------ accuracy
    def cell_masses(self, n_samples: int = 2**20, seed: int = 0) -> torch.Tensor:
        """Monte-Carlo masses of the power cells from ``n_samples`` fresh source points (float64, (N,)).
        The sample is independent of every solver sample; each mass has std ``sqrt(m (1 - m) / n)``."""
        self._check_fitted()
        check_mass_samples(n_samples)
        problem = Problem(self.source, self.targets_, self.weights_, seed)
        return sample_masses(problem, problem.sample(n_samples, (EVALUATION_KEY,)), self.h_)

    def mass_errors(self, n_samples: int = 2**20, seed: int = 0) -> dict:
        """l1 and max relative cell-mass errors and empty cells, measured on an independent sample, with
        ``l1_noise_floor``: the expected l1 error of the measurement alone, ``sum_i sqrt(2 nu_i (1 - nu_i) /
        (pi n))`` (a measured l1 near it means the map is at least as accurate as the measurement)."""
        masses = self.cell_masses(n_samples, seed)
        nu = self.weights_
        floor = float((2 * nu * (1 - nu) / (math.pi * n_samples)).sqrt().sum())
        return {**mass_errors(masses, nu), "n_samples": n_samples, "l1_noise_floor": floor}

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path, **meta_extra) -> None:
        """Write the OT file of DESIGN.md; ``meta_extra`` (JSON-able) goes into ``meta`` (e.g. dataset,
        sigma_star). Temp files of ``path`` left by killed writers are removed first (only those of this
        file name: the folder may be the user's)."""
        from .. import __version__

        self._check_fitted()
        path = Path(path)
        remove_stale_temps(path.parent, names=[path.name], recursive=False)
        meta = {"source": self.source.to_meta(), "sigma_star": None, "dataset": None, "seed": self.seed,
                "solver": getattr(self, "solver_", self.solver), "version": __version__, "n_iter": getattr(self, "n_iter_", None),
                "fit_seconds": getattr(self, "fit_seconds_", None),
                "n_source_samples": getattr(self, "n_source_samples_", None),
                "check": getattr(self, "check_", None), "solver_stopped": getattr(self, "solver_stopped_", None),
                "solver_options": {k: v for k, v in self.solver_options.items()}, **meta_extra}
        save_ot(path, self.targets_, self.weights_, self.h_, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "SemiDiscreteOT":
        """A fitted map from an OT file (``CorruptFileError`` if it is not one); ``.meta_`` holds its meta."""
        from ..errors import CorruptFileError

        device = as_device(device)
        targets, weights, h, meta = load_ot(path)
        try:
            source = source_from_meta(meta["source"], targets.shape[1])
        except InputError as err:
            raise CorruptFileError(f"{str(path)!r}: bad source in meta: {err}") from None
        seed = meta["seed"] if isinstance(meta["seed"], int) and meta["seed"] >= 0 else 0
        solver = meta["solver"] if isinstance(meta["solver"], str) else DEFAULT_SOLVER
        ot = cls(source, solver=solver, seed=seed, device=device)
        ot.solver_ = solver
        ot.targets_, ot.weights_, ot.h_ = targets.to(device), weights.to(device), h.to(device)
        ot.n_iter_, ot.history_, ot.meta_ = meta.get("n_iter"), [], meta
        ot.fit_seconds_, ot.n_source_samples_ = meta.get("fit_seconds"), meta.get("n_source_samples")
        check = meta.get("check")
        ot.check_ = check if isinstance(check, dict) else None
        ot.converged_ = bool(check["agrees"]) if isinstance(check, dict) and "agrees" in check else None
        ot.solver_stopped_ = meta.get("solver_stopped")
        return ot
