"""Run a suite: expand it into cells, run the cells that are not done, store one result file per cell.

Expensive shared things (denoisers, fitted DPM-OT maps, reference data, W2 floors, the digits classifier)
are built once per run by :class:`Context`; fitted maps are also saved in the run directory, so a resumed
run uses the very same map. A DPM-OT map's fit is its own ``ot-fit`` cell (the one-off cost); sampling cells
report only the per-sample cost.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..devices import as_device
from ..io import exclusive_lock
from ..provenance import provenance
from ..samplers.generate import DPMOT_SAMPLERS
from ..threads import check_threads, cpu_threads
from .context import Context
from .store import Cell, ResultStore
from .suites import Suite
from .tasks import run_cell
from .unibench import expand_unibench


LOCK_NAME = ".lock"


def expand(suite: Suite) -> list[Cell]:
    """Every cell of a suite, in the order they run (cheap set-up first, so results appear early)."""
    cells = [Cell.make("floor", d, n=suite.samples_for(d)) for d in suite.datasets]
    # One map per dataset, or per NFE for a preset whose latents sit at the budget's level (the paper's L - K).
    for sampler in (s for s in DPMOT_SAMPLERS if s in suite.samplers):
        budget = Context.preset(sampler).sigma_star == "budget"
        cells += [Cell.make("ot-fit", d, sampler, *((nfe,) if budget else ())) for d in suite.datasets
                  for nfe in (suite.nfes if budget else (0,))]
    cells += [Cell.make("sample", d, s, nfe, seed, n=suite.samples_for(d))
              for d in suite.datasets for s in suite.samplers for nfe in suite.nfes for seed in suite.seeds]
    cells += [Cell.make("sigma-star", d, "dpm-ot", suite.sweep_nfe, seed, n=suite.samples_for(d), sigma_rel=s)
              for d in suite.sweep_datasets for s in suite.sweep_sigmas for seed in suite.seeds]
    cells += [Cell.make("latent-count", d, "dpm-ot", suite.sweep_nfe, seed, n=suite.samples_for(d), n_latents=k)
              for d in suite.latent_curve_datasets for k in suite.latent_curve_sizes for seed in suite.seeds]
    cells += [Cell.make("train-loss", d) for d in suite.train_loss_datasets]
    if "digits" in suite.datasets:
        cells.append(Cell.make("classifier", "digits"))
    if suite.ot_benchmarks:
        cells += [Cell.make(f"ot-{kind}", level=suite.ot_benchmarks) for kind in ("kernel", "solver", "scale")]
    if suite.bound_checks:
        cells.append(Cell.make("bound", level=suite.bound_checks))
    return cells + expand_unibench(suite)


def run_suite(suite: Suite, out: str | Path, *, resume: bool = False, device="cpu", progress: bool = True,
              cells: list[Cell] | None = None, user=None, threads: int = 1) -> list[dict]:
    """Run (or, with ``resume``, finish) ``suite`` into ``out``; returns every stored row. One run at a
    time per folder: a second one gets an InputError (its lock: ``out/work/.lock``). ``user``: a
    :class:`~dpmot_bench.bench.experiment.UserData` whose dataset the suite names. ``threads``: torch's
    intra-op CPU threads while the cells run. The default, 1, suits this machine's cells: small networks
    on a few thousand rows, where a second thread on a loaded 2-core machine made calls up to 10x slower,
    and the OT benchmarks' timings are then one-thread timings (their rows say so). A many-core CPU run of
    the full suite (d = 3072 OT passes) may ask for more; results do not depend on it beyond float
    summation order."""
    device = as_device(device)  # before the lock creates anything
    check_threads(threads)
    with exclusive_lock(Path(out) / "work" / LOCK_NAME, f"run folder {str(out)!r}", wait=False), cpu_threads(threads):
        return _run_suite(suite, out, resume, device, progress, cells, user)


def _run_suite(suite, out, resume, device, progress, cells, user) -> list[dict]:
    store = ResultStore(Path(out) / "work", resume=resume)
    ctx = Context(suite, store.directory, torch.device(device), progress, user)
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
