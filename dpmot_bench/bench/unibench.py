"""UniBench-small: UPainting's claim measured at this machine's scale (suite field ``unibench``).

One cell = one dataset, prompt kind, arm (``text`` / ``matcher`` / ``both``, samplers/prompted.py), guidance
schedule and input, sampler and NFE, and seed: ``samples`` samples for each of the kind's ``prompts``
prompts, row i of every prompt and arm from the seed's noise row i (so arms are paired sample by sample).
Judged by the evaluator (models/evaluator.py: another model family, fitted on the held-out split, never
used for guidance):

- ``alignment``: the share of samples the evaluator puts in the prompt's class set; ``ceiling``: the same
  for the train split's real rows of those classes (the evaluator never saw them);
- ``fd``: the Frechet distance, in the evaluator's features, between a prompt's samples and the train
  split's rows of its classes, averaged over prompts; ``fd_floor``: the same for as many held-out real
  rows of those classes (at most ``samples``): what real data scores at this sample size;
- ``precision`` / ``recall`` (k = 3) against the first 1000 of the same rows, ``diversity``: the mean pairwise distance of a
  prompt's samples over that of the floor's real rows (1: as spread as real data);
- ``mixed``: samples between modes (gmm-grid25) or with two digit classes at softmax >= 0.2 (digits'
  classifier, the mode-mixture ratio);
- ``matcher_similarity``: the matcher's cosine between samples and prompt. Biased: it is what matcher
  guidance maximises, so it rises with guidance whether or not the samples improve;
- ``ms_per_sample`` (wall time; CFG and matcher gradients cost network evaluations an NFE does not count),
  and for DPM-OT the classes of its map and their Jaccard index with the prompt's true class set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..io import save_npz
from .store import Cell
from .suites import UNIBENCH_KINDS, Suite, UniBench

PRDC_REFERENCE = 1000  # reference rows for precision / recall (its k-NN radii cost O(rows^2))
NONE = "-"  # the text arm has no matcher schedule or input
TASK = "unibench"


def prompts_of(prompt_set, kind: str, k: int) -> list:
    """``k`` prompts of a UniBench kind, evenly spaced over its list (all when it has fewer)."""
    prompt_kind, split = UNIBENCH_KINDS[kind]
    prompts = prompt_set.prompts(prompt_kind, split)
    if len(prompts) <= k:
        return prompts
    return [prompts[int(i * len(prompts) / k)] for i in range(k)]


def _cell(bench: UniBench, dataset: str, arm: str, nfe: int, seed: int, kind: str, schedule: str, input: str,
          sampler: str = "dpmpp-2m") -> Cell:
    if arm == "text":
        schedule, input = NONE, NONE
    return Cell.make(TASK, dataset, arm, nfe, seed, kind=kind, schedule=schedule, input=input, sampler=sampler,
                     n=bench.prompts * bench.samples)


def expand_unibench(suite: Suite) -> list[Cell]:
    """The suite's UniBench-small cells (see :class:`~dpmot_bench.bench.suites.UniBench`), without repeats."""
    bench = suite.unibench
    if bench is None:
        return []
    schedule, input = bench.schedules[0], bench.inputs[0]
    cells = []
    for d in bench.datasets:
        for seed in bench.seeds or suite.seeds:
            for kind in bench.kinds:
                for nfe in bench.nfes:
                    for arm in bench.arms:
                        if bench.design == "factorial" and arm == "both" and nfe == bench.nfes[0]:
                            cells += [_cell(bench, d, arm, nfe, seed, kind, s, i) for s in bench.schedules
                                      for i in bench.inputs]
                        else:
                            cells.append(_cell(bench, d, arm, nfe, seed, kind, schedule, input))
                if bench.design != "factorial" and kind in bench.factor_kinds and d in bench.factor_datasets:
                    nfe = bench.nfes[0]
                    cells += [_cell(bench, d, "both", nfe, seed, kind, s, input) for s in bench.schedules[1:]]
                    cells += [_cell(bench, d, "both", nfe, seed, kind, schedule, i) for i in bench.inputs[1:]]
                if d in bench.dpmot_datasets:
                    cells += [_cell(bench, d, "both", nfe, seed, kind, schedule, input, "dpm-ot")
                              for nfe in bench.dpmot_nfes]
    return list(dict.fromkeys(cells))


def paired_file(work: Path, fields: dict) -> Path:
    """Where a UniBench cell's per-sample values live (one file per arm and seed)."""
    keys = ("dataset", "sampler", "method", "nfe", "seed", "kind", "schedule", "input")
    return work / "paired" / ("unibench-" + "-".join(str(fields[k]) for k in keys) + ".npz")


def _pairwise_mean(x: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    return float(pdist(x).mean()) if len(x) > 1 else float("nan")


@dataclass(frozen=True)
class _Reference:
    """What a prompt's samples are measured against, the same in every cell: the evaluator's ceiling on the
    train rows of the prompt's classes, their feature statistics and first PRDC_REFERENCE features, and the
    features of up to n held-out rows of those classes (the floor)."""
    ceiling: float
    statistics: tuple
    prdc_rows: np.ndarray
    real: np.ndarray


@lru_cache(maxsize=256)
def _reference(name: str, classes: frozenset, n_real: int) -> _Reference:
    from ..data import get_dataset
    from ..metrics import feature_statistics
    from ..models.evaluator import get_evaluator

    dataset, evaluator = get_dataset(name), get_evaluator(name)
    labels = torch.tensor(sorted(classes))
    rows_x, rows_y = dataset.data("train", None if dataset.is_finite else 20_000)
    rows = rows_x[torch.isin(rows_y.long(), labels)]
    held_x, held_y = dataset.data("heldout")
    features = evaluator.features(rows)
    real = evaluator.features(held_x[torch.isin(held_y.long(), labels)][:n_real])
    return _Reference(float(evaluator.in_classes(rows, classes).mean()), feature_statistics(features),
                      features[:PRDC_REFERENCE], real)


def _mixed(ctx, dataset, x: torch.Tensor) -> np.ndarray:
    if dataset.mixture is not None:
        from ..metrics import gmm_mode_metrics

        return np.asarray(gmm_mode_metrics(x, dataset.mixture, masks=True)["between_mask"])
    probs = ctx.probs(dataset.name, x)
    return ((probs >= 0.2).sum(1) >= 2).numpy()


def unibench_task(ctx, cell: Cell) -> dict:
    from ..metrics import feature_statistics, frechet_distance_from_stats, precision_recall_density_coverage
    from ..models.evaluator import get_evaluator
    from ..models.prompted import get_prompted_models
    from ..samplers.prompted import ARMS, sample_prompted

    params = dict(cell.params)
    bench = ctx.suite.unibench
    models = get_prompted_models(cell.dataset, device=ctx.device, progress=ctx.progress)
    evaluator = get_evaluator(cell.dataset)
    dataset = models.dataset
    guidance = ARMS[cell.method]
    if cell.method != "text":
        guidance = replace(guidance, schedule=params["schedule"], input=params["input"])
    aligned, similarity, mixed, fds, floors, prec, rec, div, jaccard, seconds, shown = ([] for _ in range(11))
    ceiling = []
    for prompt in prompts_of(models.prompt_set, params["kind"], bench.prompts):
        out = sample_prompted(models, prompt.text, params["sampler"], cell.nfe, bench.samples, cell.seed,
                              guidance=guidance, device=ctx.device)
        seconds.append(out.result.seconds)  # sampling only (a DPM-OT class map's one-off fit excluded)
        x = out.result.x
        if out.classes is not None:
            chosen = set(out.classes)
            jaccard.append(len(chosen & prompt.classes) / len(chosen | prompt.classes))
        aligned.append(evaluator.in_classes(x, prompt.classes))
        with torch.no_grad():
            text = models.encoder.encode([prompt.text])[0]
            similarity.append(models.matcher.similarity(x.to(ctx.device), text.to(ctx.device)).cpu().numpy())
        mixed.append(_mixed(ctx, dataset, x))
        ref = _reference(cell.dataset, prompt.classes, bench.samples)
        ceiling.append(ref.ceiling)
        f_x = evaluator.features(x)
        fds.append(frechet_distance_from_stats(*feature_statistics(f_x), *ref.statistics, method="eigh"))
        floors.append(frechet_distance_from_stats(*feature_statistics(ref.real), *ref.statistics, method="eigh"))
        prdc = precision_recall_density_coverage(ref.prdc_rows, f_x, k=3)
        prec.append(prdc["precision"])
        rec.append(prdc["recall"])
        div.append(_pairwise_mean(f_x) / _pairwise_mean(ref.real))
        shown.append(x.numpy())
    save_npz(paired_file(ctx.work, cell.fields()), aligned=np.stack(aligned), similarity=np.stack(similarity),
             mixed=np.stack(mixed), fd=np.asarray(fds))
    if cell.seed == (bench.seeds or ctx.suite.seeds)[0]:
        save_npz(ctx.work / "samples" / (paired_file(ctx.work, cell.fields()).stem + ".npz"), x=np.stack(shown))
    row = {"alignment": float(np.mean(aligned)), "ceiling": float(np.mean(ceiling)),
           "matcher_similarity": float(np.mean(similarity)), "mixed": float(np.mean(mixed)),
           "fd": float(np.mean(fds)), "fd_floor": float(np.mean(floors)), "precision": float(np.mean(prec)),
           "recall": float(np.mean(rec)), "diversity": float(np.nanmean(div)),
           "ms_per_sample": 1e3 * float(np.sum(seconds)) / (len(seconds) * bench.samples),
           "nfe_spent": out.result.nfe_spent, "n_prompts": len(seconds), "cfg": guidance.cfg,
           "guidance": guidance.guidance}
    if jaccard:
        row["class_jaccard"] = float(np.mean(jaccard))
    return row
