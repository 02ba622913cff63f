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
from ..errors import InputError
from ..io import exclusive_lock
from ..provenance import provenance
from ..samplers.generate import DPMOT_SAMPLERS
from ..threads import check_threads, cpu_threads, set_cpu_threads
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
              cells: list[Cell] | None = None, user=None, threads: int = 1, jobs: int = 1) -> list[dict]:
    """Run (or, with ``resume``, finish) ``suite`` into ``out``; returns every stored row. One run at a
    time per folder: a second one gets an InputError (its lock: ``out/work/.lock``). ``user``: a
    :class:`~dpmot_bench.bench.experiment.UserData` whose dataset the suite names. ``threads``: torch's
    intra-op CPU threads while the cells run. The default, 1, suits this machine's cells: small networks
    on a few thousand rows, where a second thread on a loaded 2-core machine made calls up to 10x slower,
    and the OT benchmarks' timings are then one-thread timings (their rows say so). A many-core CPU run of
    the full suite (d = 3072 OT passes) may ask for more; results do not depend on it beyond float
    summation order.

    ``jobs``: worker processes (each on ``threads`` threads). The DPM-OT maps (``ot-fit`` cells), the
    floors, the classifier and the trainings many cells wait for (denoisers, prompted models) run first,
    then the other cells; within each phase the cells that differ only in their seed (a preset's maps:
    in their NFE) form one group (they share a map, a model), and idle workers take the next group. Every
    cell's result is the same whichever process runs it: its randomness comes from its own seed, and the
    maps are read back from the run folder, as a resumed run does."""
    device = as_device(device)  # before the lock creates anything
    check_threads(threads)
    check_threads(jobs, "jobs")
    if jobs > 1 and user is not None:
        raise InputError("jobs > 1 runs the embedded datasets only; a run on your own data and model uses one "
                         "process (give it threads, or a GPU)")
    with exclusive_lock(Path(out) / "work" / LOCK_NAME, f"run folder {str(out)!r}", wait=False), cpu_threads(threads):
        store = ResultStore(Path(out) / "work", resume=resume)
        todo = [c for c in (cells if cells is not None else expand(suite)) if not store.done(c)]
        bar = tqdm(total=len(todo), desc=f"suite {suite.name}", unit="cell", disable=not progress, dynamic_ncols=True)
        with bar:
            if jobs == 1:
                _run_cells(Context(suite, store.directory, torch.device(device), progress, user), store, todo, bar)
            else:
                _run_parallel(suite, store, todo, device, threads, jobs, bar)
        return store.rows()


def _run_cells(ctx: Context, store: ResultStore, cells: list[Cell], bar=None) -> int:
    record = provenance(device=ctx.device)
    for cell in cells:
        if bar is not None:
            bar.set_postfix_str(f"{cell.task} {cell.dataset} {cell.method} {cell.nfe or ''}".strip())
        start = time.perf_counter()
        results = run_cell(ctx, cell)
        wall = time.perf_counter() - start
        rows = results if isinstance(results, list) else [results]
        store.write(cell, [{**row, "wall_seconds": wall, "torch": record["torch"],
                            "git_commit": record["git_commit"], "device": str(ctx.device)} for row in rows])
        if bar is not None:
            bar.update()
    return len(cells)


FIRST_PHASE = ("floor", "ot-fit", "classifier")  # what the other cells read back or load from the cache


def _groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells that differ only in their seed (a preset's maps: in their NFE, as NFE 1 and 2 share a level), in
    the order of their first member."""
    groups: dict = {}
    for cell in cells:
        nfe = None if cell.task == "ot-fit" else cell.nfe
        groups.setdefault((cell.task, cell.dataset, cell.method, nfe, cell.params), []).append(cell)
    return list(groups.values())


_WORKER: dict = {}


def _start_worker(suite: Suite, directory: str, device: str, threads: int) -> None:
    set_cpu_threads(threads)  # for the worker's whole life
    _WORKER["store"] = ResultStore(directory, resume=True)
    _WORKER["ctx"] = Context(suite, Path(directory), torch.device(device), False)


def _work(cells: list[Cell]) -> int:
    return _run_cells(_WORKER["ctx"], _WORKER["store"], cells)


def _preparations(todo: list[Cell]) -> list[tuple[str, str]]:
    """The one-off trainings many cells need (a dataset's denoiser, UniBench's prompted models), each
    given to one worker in the first phase, so the others do not wait for it on the model cache's lock."""
    uses = lambda tasks: list(dict.fromkeys(c.dataset for c in todo if c.task in tasks))  # noqa: E731
    return ([("denoiser", d) for d in uses(("sample", "sigma-star", "latent-count"))]
            + [("prompted", d) for d in uses(("unibench",))])


def _prepare(kind: str, dataset: str) -> int:
    ctx = _WORKER["ctx"]
    if kind == "denoiser":
        ctx.denoiser(dataset)
    else:
        from ..models.prompted import get_prompted_models

        get_prompted_models(dataset, device=ctx.device, progress=False)
    return 0


def _run_parallel(suite, store, todo, device, threads, jobs, bar) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread pools can hang);
    # a worker that dies breaks the pool with an error instead of being replaced (multiprocessing.Pool's way)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, context, initializer=_start_worker,
                             initargs=(suite, str(store.directory), str(device), threads)) as pool:
        first = [pool.submit(_prepare, *what) for what in _preparations(todo)]
        try:
            for phase in ([c for c in todo if c.task in FIRST_PHASE], [c for c in todo if c.task not in FIRST_PHASE]):
                futures, first = first + [pool.submit(_work, group) for group in _groups(phase)], []
                for future in as_completed(futures):
                    bar.update(future.result())  # a cell's error is raised here, as in a one-process run
        except BrokenProcessPool as error:
            raise RuntimeError("a worker process of the run died (jobs > 1 starts each worker as a fresh "
                               "interpreter, which imports the main module: run from the dpmot command "
                               "or a script file, or use jobs=1)") from error
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the groups not started yet are dropped
            raise
