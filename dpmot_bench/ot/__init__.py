"""Semi-discrete optimal transport: sources, the assignment kernel, solvers, the fitted map, its file.

>>> import torch
>>> from dpmot_bench.ot import GaussianSource, SemiDiscreteOT
>>> ot = SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=20).fit(torch.randn(5, 2))
>>> ot.assign(torch.zeros(3, 2)).shape
torch.Size([3])
"""
from .estimator import DEFAULT_SOLVER, DEFAULT_TAU, SemiDiscreteOT
from .files import load_ot
from .kernel import assign, cell_counts, potential, smooth_transport, soft_masses
from .solvers import SOLVERS, Problem, adam_mc, mass_errors
from .sources import GaussianSource, Source, UniformSource, source_from_meta

__all__ = ["GaussianSource", "UniformSource", "Source", "source_from_meta", "SemiDiscreteOT", "DEFAULT_SOLVER",
           "DEFAULT_TAU", "SOLVERS", "Problem", "adam_mc", "mass_errors", "assign", "cell_counts", "potential",
           "smooth_transport", "soft_masses", "load_ot"]
