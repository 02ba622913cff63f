"""Run a suite: expand it into cells, run the cells that are not done, store one result file per cell.

Expensive shared things (denoisers, fitted DPM-OT maps, reference data, W2 floors, the digits classifier)
are built once per run by :class:`Context`; fitted maps are also saved in the run directory, so a resumed
run uses the very same map. A DPM-OT map's fit is its own ``ot-fit`` cell (the one-off cost); sampling cells
report only the per-sample cost.
"""
from __future__ import annotations

import time
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import get_dataset
from ..io import save_npz
from ..provenance import provenance
from .store import Cell, ResultStore
from .suites import Suite

DPMOT_PRESETS = ("dpm-ot", "dpm-ot-paper")
REFERENCE_SEED = 10_000  # fresh true samples for W2 are drawn from seeds REFERENCE_SEED + cell seed


def expand(suite: Suite) -> list[Cell]:
    """Every cell of a suite, in the order they run (cheap set-up first, so results appear early)."""
    cells = [Cell.make("floor", d, n=suite.samples_for(d)) for d in suite.datasets]
    # The default preset has one map per dataset; the paper preset one per NFE (its latents sit at level L - K).
    cells += [Cell.make("ot-fit", d, "dpm-ot") for d in suite.datasets if "dpm-ot" in suite.samplers]
    cells += [Cell.make("ot-fit", d, "dpm-ot-paper", nfe) for d in suite.datasets for nfe in suite.nfes
              if "dpm-ot-paper" in suite.samplers]
    cells += [Cell.make("sample", d, s, nfe, seed, n=suite.samples_for(d))
              for d in suite.datasets for s in suite.samplers for nfe in suite.nfes for seed in suite.seeds]
    cells += [Cell.make("sigma-star", d, "dpm-ot", suite.sweep_nfe, seed, n=suite.samples_for(d), sigma_rel=s)
              for d in suite.sweep_datasets for s in suite.sweep_sigmas for seed in suite.seeds]
    cells += [Cell.make("train-loss", d) for d in suite.train_loss_datasets]
    if "digits" in suite.datasets:
        cells.append(Cell.make("classifier", "digits"))
    if suite.ot_benchmarks:
        cells += [Cell.make(f"ot-{kind}", level=suite.ot_benchmarks) for kind in ("kernel", "solver", "scale")]
    if suite.bound_checks:
        cells.append(Cell.make("bound", level=suite.bound_checks))
    return cells


class Context:
    """Memoised set-up shared by the cells of one run."""

    def __init__(self, suite: Suite, work: Path, device: torch.device, progress: bool):
        self.suite, self.work, self.device, self.progress = suite, work, device, progress
        self.dataset = lru_cache(maxsize=None)(get_dataset)
        self._maps: dict = {}
        self._denoisers: dict = {}

    def denoiser(self, dataset: str, model: str | None = None):
        from ..models import default_model, get_denoiser

        model = model or default_model(self.dataset(dataset))
        if (dataset, model) not in self._denoisers:
            self._denoisers[dataset, model] = get_denoiser(self.dataset(dataset), model, device=self.device,
                                                           progress=self.progress)
        return self._denoisers[dataset, model]

    def ot_map(self, dataset: str, sampler: str, nfe: int = 0, sigma_star: float | None = None):
        """``(map, fit seconds or None)`` of a DPM-OT sampler: fitted once per run with seed 0, saved under
        work/maps and reloaded on resume. The paper preset's map depends on the NFE through its latent
        level (NFE 1 and 2 share one), the default's does not."""
        from ..ot import SemiDiscreteOT
        from ..samplers import fit_ot_map, preset_sigma_star

        paper = sampler == "dpm-ot-paper"
        level = f"{preset_sigma_star(self.dataset(dataset), 'paper', nfe):.6g}" if paper else 0
        key = (dataset, sampler, level, sigma_star)
        if key not in self._maps:
            name = "-".join(str(k) for k in key if k not in (None, 0))
            path = self.work / "maps" / f"{name}.npz"
            if path.exists():
                self._maps[key] = (SemiDiscreteOT.load(path, device=self.device), None)
            else:
                start = time.perf_counter()
                fitted = fit_ot_map(self.dataset(dataset), "paper" if paper else "default", nfe=nfe if paper else None,
                                    seed=0, device=self.device, progress=self.progress, sigma_star=sigma_star,
                                    n_latents=self.suite.latents_for(dataset))
                seconds = time.perf_counter() - start
                path.parent.mkdir(parents=True, exist_ok=True)
                fitted.save(path, **fitted.meta_)
                self._maps[key] = (fitted, seconds)
        return self._maps[key]

    @cached_property
    def classifier(self):
        from ..metrics import get_digits_classifier

        return get_digits_classifier(device=self.device, progress=self.progress)

    @lru_cache(maxsize=None)
    def split(self, dataset: str, split: str) -> torch.Tensor:
        return self.dataset(dataset).data(split)[0]

    @lru_cache(maxsize=None)
    def train_features(self) -> torch.Tensor:
        return self.classifier.features(self.split("digits", "train").to(self.device)).cpu()

    @lru_cache(maxsize=None)
    def heldout_memorisation(self, dataset: str) -> dict:
        """Fresh data's memorisation metrics (held-out to train): the copy threshold and baseline rates
        every sample set of ``dataset`` is compared with."""
        from ..metrics import memorisation

        heldout, train = self.split(dataset, "heldout"), self.split(dataset, "train")
        return memorisation(heldout, train=train, heldout=heldout)

    def reference(self, dataset: str, n: int, seed: int) -> torch.Tensor:
        """Fresh true samples (GMMs) to compare generated samples with."""
        return self.dataset(dataset).sample(n, seed=REFERENCE_SEED + seed)[0]

    def save_samples(self, cell: Cell, **arrays) -> None:
        save_npz(self.work / "samples" / f"{cell.task}-{cell.dataset}-{cell.method}.npz",
                 **{k: np.asarray(v) for k, v in arrays.items()})


def run_suite(suite: Suite, out: str | Path, *, resume: bool = False, device="cpu", progress: bool = True,
              cells: list[Cell] | None = None) -> list[dict]:
    """Run (or, with ``resume``, finish) ``suite`` into ``out``; returns every stored row."""
    from .tasks import run_cell

    store = ResultStore(Path(out) / "work", resume=resume)
    ctx = Context(suite, store.directory, torch.device(device), progress)
    todo = [c for c in (cells if cells is not None else expand(suite)) if not store.done(c)]
    record = provenance(device=device)
    bar = tqdm(todo, desc=f"suite {suite.name}", unit="cell", disable=not progress, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(f"{cell.task} {cell.dataset} {cell.method} {cell.nfe or ''}".strip())
        start = time.perf_counter()
        results = run_cell(ctx, cell)
        wall = time.perf_counter() - start
        rows = results if isinstance(results, list) else [results]
        store.write(cell, [{**row, "wall_seconds": wall, "torch": record["torch"],
                            "git_commit": record["git_commit"], "device": str(device)} for row in rows])
    return store.rows()
