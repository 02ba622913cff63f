"""Reproducible source samples for the solvers, split into blocks that processes share out.

A sample of n rows is cut into blocks of ``BLOCK_ROWS`` rows. Monte Carlo: block b is drawn by its own
generator, seeded with ``block_seed(seed, b, (OT_STREAM, 0, *key))`` on the compute device. Quasi-Monte Carlo:
block b is rows ``[b * BLOCK_ROWS, ...)`` of one scrambled Sobol sequence whose scrambling is seeded by
``(seed, key)``, mapped through the source's inverse CDF. A sample is therefore a function of
``(seed, key)`` alone (a solver uses e.g. ``key = (iteration,)``): not of the process that draws a block,
the number of processes, or an interruption. That is what makes checkpoint/resume and multi-process runs
reproduce a single uninterrupted run exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from ..noise import block_seed
from .distributed import rank_and_world
from .sources import Source

BLOCK_ROWS = 8192
OT_STREAM = 0x07A5  # namespace of solver samples, apart from the data splits and the sampling noise


@dataclass(frozen=True)
class SourceSample:
    """``n`` rows of ``source`` named by ``(seed, key)``; ``quasi`` selects scrambled Sobol points."""

    source: Source
    n: int
    seed: int
    key: tuple[int, ...]
    quasi: bool = False
    device: torch.device = torch.device("cpu")

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / BLOCK_ROWS)

    def _rows(self, block: int) -> int:
        return min(BLOCK_ROWS, self.n - block * BLOCK_ROWS)

    def own_blocks(self) -> range:
        """The indices of the blocks this process owns: ``rank, rank + world, ...``."""
        rank, world = rank_and_world()
        return range(rank, self.n_blocks, world)

    def blocks(self, indices: range | None = None) -> Iterator[torch.Tensor]:
        """The blocks ``indices`` (default: those this process owns, :meth:`own_blocks`)."""
        if indices is None:
            indices = self.own_blocks()
        if self.quasi:
            yield from self._sobol_blocks(indices)
            return
        for block in indices:
            generator = torch.Generator(self.device).manual_seed(block_seed(self.seed, block, (OT_STREAM, 0, *self.key)))
            yield self.source.sample(self._rows(block), generator)

    def _sobol_blocks(self, indices: range) -> Iterator[torch.Tensor]:
        engine = torch.quasirandom.SobolEngine(self.source.dim, scramble=True,
                                               seed=block_seed(self.seed, 0, (OT_STREAM, 1, *self.key)))
        position = 0
        for block in indices:
            if block * BLOCK_ROWS > position:
                engine.fast_forward(block * BLOCK_ROWS - position)
            u = engine.draw(self._rows(block), dtype=torch.float64)
            position = block * BLOCK_ROWS + u.shape[0]
            # A scrambled coordinate is exactly 0 with probability 2^-30: from_unit_cube keeps it finite.
            yield self.source.from_unit_cube(u).to(self.device)

    def head_blocks(self, m: int) -> Iterator[torch.Tensor]:
        """The blocks holding the first ``min(m, n)`` rows, in every process (the last one may hold more)."""
        return self.blocks(range(math.ceil(min(m, self.n) / BLOCK_ROWS)))

    def head(self, m: int) -> torch.Tensor:
        """The first ``min(m, n)`` rows (the same in every process)."""
        m = min(m, self.n)
        return torch.cat(list(self.head_blocks(m)))[:m]
