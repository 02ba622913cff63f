"""Semi-discrete optimal transport: sources, the assignment kernel, solvers (a function and an
estimator over it), the fitted map, its file.

>>> import torch
>>> from dpmot_bench.ot import GaussianSource, SemiDiscreteOT, solve_semidiscrete
>>> ot = SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=20).fit(torch.randn(5, 2))
>>> ot.assign(torch.zeros(3, 2)).shape
torch.Size([3])
>>> result = solve_semidiscrete(GaussianSource(2), torch.randn(5, 2), method="adam-mc", max_iter=20)
>>> result.h.shape, result.n_iter
(torch.Size([5]), 20)
"""
from .adam import AdamMCOptions, adam_mc
from .estimator import DEFAULT_SOLVER, DEFAULT_TAU, SemiDiscreteOT
from .exact_newton import Exact2DOptions, exact_2d
from .files import load_ot
from .kernel import assign, cell_counts, potential, smooth_transport, soft_masses
from .newton import NewtonQMCOptions, newton_qmc
from .problem import Problem, mass_errors
from .solvers import SOLVER_NAMES, SOLVERS, SemiDiscreteResult, chosen_solver, solve_semidiscrete, solver_options
from .sources import GaussianSource, Source, UniformSource, source_from_meta

__all__ = ["GaussianSource", "UniformSource", "Source", "source_from_meta", "SemiDiscreteOT", "DEFAULT_SOLVER",
           "DEFAULT_TAU", "SOLVERS", "SOLVER_NAMES", "chosen_solver", "Problem", "solve_semidiscrete",
           "SemiDiscreteResult", "solver_options", "AdamMCOptions", "NewtonQMCOptions", "Exact2DOptions", "adam_mc",
           "newton_qmc", "exact_2d", "mass_errors", "assign", "cell_counts", "potential", "smooth_transport",
           "soft_masses", "load_ot"]
