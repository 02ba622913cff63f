"""``exact-2d``: damped Newton on exact power-cell masses in two dimensions (Kitagawa, Merigot and Thibert,
"Convergence of a Newton algorithm for semi-discrete optimal transport", JEMS 2019), for the uniform
square and the Gaussian source. No sampling: the masses G(h) and their Jacobian DG(h) come from the power
diagram (``power2d.py``), so it converges quadratically down to float64 round-off.

Convention: cell i is ``{x : <x, y_i> + h_i >= <x, y_j> + h_j for all j}`` and we solve ``G(h) = nu``.
Raising h_i grows cell i, so ``dG_i / dh_i = sum_j w_ij > 0`` and ``dG_i / dh_j = -w_ij <= 0`` (j != i),
``w_ij`` = (density integrated over facet ij) / |y_i - y_j|: DG is a graph Laplacian on the neighbour
graph of the regular triangulation (sparse, about 6 entries per row), singular only along the constants.

One iteration:

1. the Newton direction ``u = -DG(h)^+ (G(h) - nu)``: DG with the row and column of one cell (the
   largest) removed is positive definite, solved by sparse LU (SuperLU in symmetric mode, no pivoting,
   minimum-degree ordering on ``A^T + A``: 30 ms at N = 10^4); ``u`` is 0 on that cell (h + c is the same solution);
2. KMT's damping: the first ``a = 1, 1/2, 1/4, ...`` (at most ``max_halvings`` halvings) with
   ``min_i G_i(h + a u) >= eps0 / 2`` and ``|G(h + a u) - nu|_2 <= (1 - a / 2) |G(h) - nu|_2``, where
   ``eps0 = min(min_i G_i(h_0), min_i nu_i)``; under these rules the iteration converges globally from any
   h_0 whose cells all have mass, and quadratically near the solution (KMT, Theorem 1.3).

Stop: ``|G(h) - nu|_1 <= max(tol, r)``, r the round-off bound of the computed masses (4 eps times the
sum of the absolute terms added into them, plus ``|sum_i (G_i - nu_i)|``, which no h can reduce: the
masses sum to 1, the weights only to 1 up to rounding). ``tol`` defaults to 1e-12: a stop at round-off,
not at a sampling floor. If no halving is accepted (round-off stops the decrease before the bound), the
run ends with ``done`` False.

Start (``init="voronoi"``): the Voronoi diagram of the targets themselves (``h_i = -|y_i|^2 / 2``) when
they lie in the source's box (``[-0.95, 0.95]^2`` in its standard coordinates, ``[-4, 4]^2`` std for the
Gaussian), else of the targets shrunk isotropically towards their mean into it (``_Problem2D.sites``):
every cell contains a neighbourhood of its site and has positive mass. Should
one still be empty (float64 cannot separate two sites), its h is raised until it wins at its site (at
most 8 rounds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.sparse import linalg as splinalg

from ..errors import InputError
from ..options import check_fields, option
from .power2d import Diagram, power_diagram, standardise
from .problem import Problem, mass_errors
from .sources import GaussianSource, UniformSource

INITS = ("voronoi",)
_SITE_BOX = {"uniform": 0.95, "gaussian": 4.0}


@dataclass(frozen=True)
class Exact2DOptions:
    """The options of :func:`exact_2d` (checked when built)."""

    max_iter: int = option(100, int, low=1, help="Newton steps, in all")
    tol: float = option(1e-12, float, above=0, help="the l1 mass error to stop at (or the round-off bound, if larger)")
    max_halvings: int = option(40, int, low=0, help="step halvings before a step is given up (the run ends)")
    init: str = option("voronoi", str, choices=INITS, help="the starting h")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class Exact2DLog:
    """One Newton step of :func:`exact_2d`, at its accepted point (or at h when no step was accepted)."""

    iteration: int  # 0-based
    samples: int  # always 0: nothing is sampled
    l1_mass_error: float  # exact: sum_i |G_i(h) - nu_i|
    max_rel_mass_error: float
    empty_cells: int
    step: float  # the accepted step length a (0: none accepted)
    halvings: int
    roundoff: float  # the round-off bound of the l1 error at that point


def exact_2d_applies(problem_or_source) -> bool:
    source = getattr(problem_or_source, "source", problem_or_source)
    return source.dim == 2 and isinstance(source, (GaussianSource, UniformSource))


class _Problem2D:
    """The problem in float64 numpy, with the diagram of the last h asked for kept."""

    def __init__(self, problem: Problem):
        if not exact_2d_applies(problem):
            raise InputError(f"solver exact-2d needs a 2-D Gaussian or uniform source, got "
                             f"{type(problem.source).__name__} in {problem.source.dim} dimensions; use newton-qmc")
        self.problem = problem
        self.source = problem.source
        self.y = problem.targets.detach().cpu().double().numpy()
        self.nu = problem.weights.detach().cpu().double().numpy()
        self._last: tuple[bytes, Diagram] | None = None

    def diagram(self, h: np.ndarray, hint: np.ndarray | None = None) -> Diagram:
        """The diagram of h; ``hint`` a nearby h's triangulation (``Diagram.hint()``), tried before Qhull.
        The diagram is a function of h and the triangulation it uses, which is kept in the solver state,
        so a resumed run computes the very same diagram as an uninterrupted one."""
        key = h.tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, power_diagram(self.source, self.y, h, hint=hint))
        return self._last[1]

    def frame(self) -> tuple[float, float]:
        """``(c, s)``: the source is ``c + s z`` with z standard (``[-1, 1]^2`` or ``N(0, I)``)."""
        if isinstance(self.source, UniformSource):
            return (self.source.low + self.source.high) / 2, (self.source.high - self.source.low) / 2
        return self.source.mean, self.source.std

    def sites(self) -> tuple[np.ndarray, np.ndarray]:
        """The Voronoi sites of the start in standard coordinates and their standard h: the targets
        ``(y - c) / s``, shrunk by a < 1 towards their mean and centred when they leave the site box.
        The standard scores are ``<z, s y_i> + h~_i = s^2 <z, z_i> / a + (common terms) + h~_i`` for sites
        ``z_i``, so ``h~_i = -s^2 |z_i|^2 / (2 a)`` gives the Voronoi diagram of the sites."""
        c, s = self.frame()
        z = (self.y - c) / s
        limit, a = _SITE_BOX[self.source.kind], 1.0
        if np.abs(z).max() > limit:
            centred = z - z.mean(0)
            a = 0.999 * limit / max(float(np.abs(centred).max()), 1e-300)
            z = a * centred
        return z, -s * s * (z ** 2).sum(1) / (2 * a)

    def to_h(self, standard_h: np.ndarray) -> np.ndarray:
        """Original-coordinate h from the standard one (``h~ = h + m <1, y>``), centred."""
        h = standard_h - self.frame()[0] * self.y.sum(1)
        return h - h.mean()


def voronoi_h(p: _Problem2D) -> np.ndarray:
    z, standard_h = p.sites()
    h = p.to_h(standard_h)
    scale_y, _ = standardise(p.source, p.y, np.zeros(len(p.y)))
    for _ in range(8):
        empty = p.diagram(h).masses <= 0
        if not empty.any():
            break
        # raise each empty cell's h until it wins at its site (in standard coordinates)
        _, hz = standardise(p.source, p.y, h)
        scores = z[empty] @ scale_y.T + hz
        best = scores.max(1)
        own = scores[np.arange(int(empty.sum())), np.flatnonzero(empty)]
        gap = best - own
        hz = hz.copy()
        hz[empty] += gap + 1e-6 * (1.0 + np.abs(gap))
        h = p.to_h(hz)
    return h


def newton_direction(diagram: Diagram, g: np.ndarray) -> np.ndarray:
    """``u`` with ``DG u = -g`` (u = 0 on the largest cell, which fixes the constant)."""
    jacobian = diagram.jacobian().tocsc()
    n = jacobian.shape[0]
    anchor = int(np.argmax(diagram.masses))
    keep = np.flatnonzero(np.arange(n) != anchor)
    reduced = jacobian[keep][:, keep].tocsc()
    u = np.zeros(n)
    try:
        # symmetric positive definite: no pivoting, a symmetric ordering (8x faster than the default here)
        lu = splinalg.splu(reduced, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        u[keep] = lu.solve(-g[keep])
    except RuntimeError:  # exactly singular: a cell cut off from the others (an empty cell); regularise
        shift = 1e-12 * float(np.abs(reduced.diagonal()).max() or 1.0)
        u[keep] = splinalg.spsolve((reduced + shift * sparse.identity(n - 1, format="csc")).tocsc(), -g[keep])
    return u


def _threshold(diagram: Diagram, g: np.ndarray, tol: float) -> float:
    return max(tol, diagram.roundoff + abs(float(g.sum())))


def initial_state(p: _Problem2D, options: Exact2DOptions) -> dict:
    h = voronoi_h(p)
    masses = p.diagram(h).masses
    eps0 = float(min(masses.min(), p.nu.min()))
    device = p.problem.device
    solution = torch.from_numpy(h).to(device)
    return {"iteration": 0, "h": solution, "solution": solution, "triangles": _triangles(p.diagram(h)), "eps0": eps0,
            "done": False, "stalled": False, "samples_used": 0}


def _triangles(diagram: Diagram) -> torch.Tensor:
    triangles = diagram.triangles if diagram.triangles is not None else np.empty((0, 3), dtype=np.int64)
    return torch.from_numpy(np.ascontiguousarray(triangles, dtype=np.int64))


def _hint(state: dict) -> np.ndarray | None:
    triangles = state["triangles"].cpu().numpy()
    n = int(state["h"].shape[0])
    return triangles if len(triangles) and len(np.unique(triangles)) == n else None


def exact_2d(problem: Problem, options: Exact2DOptions, state: dict | None = None, on_iteration=None) -> dict:
    """Solve ``G(h) = nu`` exactly by KMT's damped Newton method (module docstring); return the final
    solver state (resumable; ``state["solution"]`` the centred h)."""
    p = _Problem2D(problem)
    state = initial_state(p, options) if state is None else state
    while not state["done"] and not state["stalled"] and state["iteration"] < options.max_iter:
        h = state["h"].detach().cpu().double().numpy()
        diagram = p.diagram(h, hint=_hint(state))
        g = diagram.masses - p.nu
        if float(np.abs(g).sum()) <= _threshold(diagram, g, options.tol):
            state["done"] = True
            break
        u = newton_direction(diagram, g)
        norm = float(np.linalg.norm(g))
        floor = state["eps0"] / 2
        accepted, halvings, a = None, 0, 1.0
        for halvings in range(options.max_halvings + 1):
            a = 0.5 ** halvings
            h_try = h + a * u
            h_try = h_try - h_try.mean()
            trial = p.diagram(h_try, hint=diagram.hint())
            g_try = trial.masses - p.nu
            if trial.masses.min() >= floor and float(np.linalg.norm(g_try)) <= (1 - a / 2) * norm:
                accepted = (h_try, trial, g_try)
                break
        state["iteration"] += 1
        if accepted is None:
            state["stalled"] = True
            masses, roundoff, a = diagram.masses, diagram.roundoff, 0.0
        else:
            h_new, trial, g_new = accepted
            solution = torch.from_numpy(h_new).to(problem.device)
            state.update(h=solution, solution=solution, triangles=_triangles(trial))
            masses, roundoff = trial.masses, trial.roundoff
            state["done"] = float(np.abs(g_new).sum()) <= _threshold(trial, g_new, options.tol)
        errors = mass_errors(torch.from_numpy(masses), torch.from_numpy(p.nu))
        log = Exact2DLog(state["iteration"] - 1, 0, **errors, step=a, halvings=halvings, roundoff=roundoff)
        if on_iteration is not None and on_iteration(state, log):
            break
    return state
