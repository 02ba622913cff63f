"""The semi-discrete OT problem and what every solver measures on it.

A :class:`Problem` is a source measure mu and weighted targets (y_i, nu_i); the unknown is the vector of
dual weights h (N,), whose power cells ``W_i(h) = {x : <x, y_i> + h_i >= <x, y_j> + h_j for all j}`` should
have the masses ``mu(W_i(h)) = nu_i``. Cell masses are estimated on source samples (``sampling.py``), named
by the problem's seed and a key whose first element says who draws them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import unknown_name
from .distributed import all_reduce_sum_
from .kernel import argmax_rows, chunk_rows, padded, score_chunks, softmax_
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


@dataclass(frozen=True)
class HeldSample:
    """A sample whose blocks are kept in memory (``cached``; a stage's, when they fit), else redrawn at
    each pass."""

    sample: SourceSample
    cached: list | None

    @property
    def n(self) -> int:
        return self.sample.n

    def blocks(self):
        return iter(self.cached) if self.cached is not None else self.sample.blocks()


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
