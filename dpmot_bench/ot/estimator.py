"""The fitted semi-discrete OT map as a scikit-learn-like estimator."""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import InputError, check_points, check_weights, unknown_name
from ..options import unknown_keys
from ..io import remove_stale_temps
from . import kernel
from .distributed import is_main_process
from .files import load_checkpoint, load_ot, save_checkpoint, save_ot
from .solvers import EVALUATION_KEY, SOLVERS, Problem, mass_errors, sample_masses
from .sources import GaussianSource, Source, UniformSource, source_from_meta

DEFAULT_SOLVER = "newton-qmc"
DEFAULT_TAU = 0.02  # the follow-up paper's smoothing (arXiv 2410.13431)
MODES = ("hard", "smooth")


def solver_option_names(solver: str) -> tuple[str, ...]:
    """The options a solver takes (besides ``max_iter``, an estimator parameter)."""
    if solver not in SOLVERS:
        raise unknown_name("solver", solver, SOLVERS)
    return tuple(sorted(set(inspect.signature(SOLVERS[solver]).parameters) - {"problem", "state", "max_iter"}))


class SemiDiscreteOT:
    """Semi-discrete optimal transport from a source measure to weighted targets.

    The map is ``T(x) = y_{i*(x)}``, ``i*(x) = argmax_i <x, y_i> + h_i``, with h fitted so that every power
    cell has the mass of its target (see ``solvers.py`` for the maths and the solvers).

    Parameters are stored as given and validated in :meth:`fit`: ``source`` (a GaussianSource or
    UniformSource), ``solver`` (a name in ``SOLVERS``), ``max_iter`` (None: the solver's default), ``seed``
    (names every source sample drawn), ``device``, ``progress`` (a tqdm bar), ``checkpoint`` (a path: the
    solver state is saved there atomically every ``checkpoint_every`` iterations, and a fit started with an
    existing checkpoint of the same problem resumes from it, ending with the same h as an uninterrupted fit),
    and ``solver_options`` passed to the solver.

    Fitted attributes: ``targets_`` (N, d) float32, ``weights_`` and ``h_`` (N,) float64, ``n_iter_``,
    ``history_`` (one dict per iteration: iteration, samples, l1_mass_error, max_rel_mass_error,
    empty_cells measured on that iteration's own sample, seconds since the start, ...), ``fit_seconds_``,
    ``n_source_samples_`` (source points drawn by the solver), ``converged_``.
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
    def _validated(self, targets, weights) -> tuple[Problem, dict]:
        if not isinstance(self.source, (GaussianSource, UniformSource)):
            raise InputError(f"source must be a GaussianSource or UniformSource, got {type(self.source).__name__}")
        if self.solver not in SOLVERS:
            raise unknown_name("solver", self.solver, SOLVERS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.max_iter is not None and (not isinstance(self.max_iter, int) or self.max_iter < 1):
            raise InputError(f"max_iter must be a positive integer or None, got {self.max_iter!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be a positive integer, got {self.checkpoint_every!r}")
        unknown_keys(self.solver_options, solver_option_names(self.solver), f"solver {self.solver}")
        device = torch.device(self.device)
        targets = check_points(targets, "targets", dim=self.source.dim, min_rows=2)
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
        problem = Problem(self.source, targets.detach().float().to(device), weights.to(device), self.seed)
        options = dict(self.solver_options)
        if self.max_iter is not None:
            options["max_iter"] = self.max_iter
        return problem, options

    def _fingerprint(self, problem: Problem, options: dict) -> str:
        digest = hashlib.sha256()
        for tensor in (problem.targets, problem.weights):
            digest.update(tensor.cpu().numpy().tobytes())
        digest.update(json.dumps([self.source.to_meta(), self.solver, self.seed, options],
                                 sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def fit(self, targets: torch.Tensor, weights: torch.Tensor | None = None) -> "SemiDiscreteOT":
        """Fit h so that every power cell has its target's weight (uniform weights by default)."""
        problem, options = self._validated(targets, weights)
        fingerprint = self._fingerprint(problem, options)
        main = is_main_process()
        if self.checkpoint is not None and main:  # a killed fit's temp checkpoints (never a live writer's)
            checkpoint = Path(self.checkpoint)
            remove_stale_temps(checkpoint.parent, names=[checkpoint.name], recursive=False)
        state, history = None, []
        if self.checkpoint is not None and Path(self.checkpoint).exists():
            state, history = load_checkpoint(self.checkpoint, fingerprint, problem.device)
        seconds_before = history[-1]["seconds"] if history else 0.0
        start = time.perf_counter()
        bar = tqdm(total=options.get("max_iter"), initial=len(history), disable=not (self.progress and main),
                   desc=f"fit-ot {self.solver}", unit="it", leave=False)
        with bar:
            for state in SOLVERS[self.solver](problem, state, **options):
                history.append({**state["log"], "seconds": seconds_before + time.perf_counter() - start})
                bar.update(1)
                bar.set_postfix(l1=f"{state['log']['l1_mass_error']:.3g}", samples=state["log"]["samples"],
                                refresh=False)
                if self.checkpoint is not None and main and state["iteration"] % self.checkpoint_every == 0:
                    save_checkpoint(self.checkpoint, state, history, fingerprint)
        if state is None:
            raise InputError(f"max_iter={self.max_iter} leaves no iteration to run")
        if self.checkpoint is not None and main:
            save_checkpoint(self.checkpoint, state, history, fingerprint)
        self.targets_, self.weights_ = problem.targets, problem.weights
        self.h_ = state["solution"].clone()
        self.n_iter_ = state["iteration"]
        self.history_ = history
        self.fit_seconds_ = history[-1]["seconds"] if history else 0.0
        self.n_source_samples_ = state["samples_used"]
        self.converged_ = bool(state["done"])
        return self

    # ------------------------------------------------------------------------------------------ the map
    def _check_fitted(self) -> None:
        if not hasattr(self, "h_"):
            raise InputError("this SemiDiscreteOT is not fitted yet; call fit(targets) or SemiDiscreteOT.load(path)")

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return check_points(x, "x", dim=self.targets_.shape[1]).to(self.targets_.device)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The target index of each row of x, ``argmax_i <x, y_i> + h_i`` (int64, lowest index on ties)."""
        return kernel.assign(self._points(x), self.targets_, self.h_)

    def transport(self, x: torch.Tensor, mode: str = "hard", tau: float | None = None) -> torch.Tensor:
        """``T(x)``: the assigned target (``hard``), or the softmax(scores / tau) average of the targets
        (``smooth``, the gradient of the entropic potential; tau defaults to 0.02). Same dtype as x."""
        points = self._points(x)
        if mode == "hard":
            return self.targets_[kernel.assign(points, self.targets_, self.h_)].to(x.dtype)
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
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
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
                "solver": self.solver, "version": __version__, "n_iter": getattr(self, "n_iter_", None),
                "fit_seconds": getattr(self, "fit_seconds_", None),
                "n_source_samples": getattr(self, "n_source_samples_", None),
                "solver_options": {k: v for k, v in self.solver_options.items()}, **meta_extra}
        save_ot(path, self.targets_, self.weights_, self.h_, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "SemiDiscreteOT":
        """A fitted map from an OT file (``CorruptFileError`` if it is not one); ``.meta_`` holds its meta."""
        from ..errors import CorruptFileError

        targets, weights, h, meta = load_ot(path)
        try:
            source = source_from_meta(meta["source"], targets.shape[1])
        except InputError as err:
            raise CorruptFileError(f"{str(path)!r}: bad source in meta: {err}") from None
        seed = meta["seed"] if isinstance(meta["seed"], int) and meta["seed"] >= 0 else 0
        solver = meta["solver"] if isinstance(meta["solver"], str) else DEFAULT_SOLVER
        ot = cls(source, solver=solver, seed=seed, device=device)
        device = torch.device(device)
        ot.targets_, ot.weights_, ot.h_ = targets.to(device), weights.to(device), h.to(device)
        ot.n_iter_, ot.history_, ot.meta_ = meta.get("n_iter"), [], meta
        ot.fit_seconds_, ot.n_source_samples_ = meta.get("fit_seconds"), meta.get("n_source_samples")
        ot.converged_ = None
        return ot
