"""What each kind of cell measures. Every task returns one flat row (or a list of rows)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import unknown_name
from ..io import save_npz
from ..samplers.generate import DPMOT_SAMPLERS
from .context import Context
from .store import Cell


def _draw(ctx: Context, cell: Cell, sigma_star: float | None = None):
    """Samples of one cell: (x, index or None, nfe spent, seconds)."""
    from ..samplers import generate

    ot_map = None
    if cell.method in DPMOT_SAMPLERS:
        ot_map = ctx.ot_map(cell.dataset, cell.method, cell.nfe, sigma_star, dict(cell.params).get("n_latents"))[0]
    n = dict(cell.params)["n"]
    result = generate(ctx.dataset(cell.dataset), cell.method, cell.nfe, n, cell.seed,
                      ctx.denoiser(cell.dataset), ot_map=ot_map, device=ctx.device, progress=False,
                      **ctx.sampler_options(cell.dataset, cell.method))
    return result.x, result.index, result.nfe_spent, result.seconds, ot_map


def _quality(ctx: Context, cell: Cell, x: torch.Tensor, ot_map) -> tuple[dict, dict]:
    """Metrics of a sample set, and the per-sample arrays worth keeping for figures."""
    from ..metrics import (feature_statistics, frechet_distance_from_stats, gmm_mode_metrics, memorisation,
                           mmd2_contributions, mode_mixture_curve, per_mode_statistics,
                           precision_recall_density_coverage, w2)

    dataset = ctx.dataset(cell.dataset)
    targets = None if ot_map is None else ot_map.targets_.cpu()
    baseline = ctx.heldout_memorisation(cell.dataset)
    if ctx.audits_in_features(cell.dataset):  # the user's Inception features
        # the latents' clean source set (their held-out rows) stands for the targets in feature space
        latent_rows = None if ot_map is None else ctx.audit_split(cell.dataset, "heldout")[:targets.shape[0]]
        memo = memorisation(ctx.features(cell.dataset, x), targets=latent_rows,
                            train=ctx.audit_split(cell.dataset, "train"), threshold=baseline["threshold"])
    else:
        memo = memorisation(x, targets=targets, train=ctx.split(cell.dataset, "train"), threshold=baseline["threshold"])
    row = {"nn_train_median": float(np.median(memo["nn_to_train"])),
           "copy_rate_train": memo["copy_rate_train"], "ratio_copy_rate_train": memo["ratio_copy_rate_train"],
           "baseline_copy_rate": baseline["baseline_copy_rate"], "copy_threshold": baseline["threshold"]}
    arrays = {"nn_to_train": memo["nn_to_train"]}
    if targets is not None:
        row.update(nn_targets_median=float(np.median(memo["nn_to_targets"])),
                   copy_rate_targets=memo["copy_rate_targets"],
                   ratio_copy_rate_targets=memo["ratio_copy_rate_targets"])
        arrays["nn_to_targets"] = memo["nn_to_targets"]
    if dataset.mixture is not None:
        modes = gmm_mode_metrics(x, dataset.mixture, masks=True)
        row.update({k: modes[k] for k in ("high_quality", "between_modes", "outliers", "modes_covered",
                                          "n_modes", "kl", "tv")})
        row["w2"] = w2(x, ctx.reference(cell.dataset, x.shape[0], cell.seed))
        # unbiased MMD^2 to the mixture itself (kernel means in closed form: 0 in expectation for true
        # samples), as per-sample terms whose mean it is, so that arms can be compared sample by sample
        psi = mmd2_contributions(x, dataset.mixture)
        row["mmd2"] = float(psi.mean())
        per_mode = per_mode_statistics(x, dataset.mixture)
        row.update(max_weight_error=per_mode["max_abs_weight_error"], spread_ratio=per_mode["mean_spread_ratio"])
        paired = {"mmd2": psi.cpu().numpy(), "high_quality": modes["high_quality_mask"],
                  "mixed": modes["between_mask"]}
    else:
        features = ctx.features(cell.dataset, x)
        row["fd"] = frechet_distance_from_stats(*feature_statistics(features), *ctx.reference_statistics(cell.dataset),
                                                method="eigh")
        probs = ctx.probs(cell.dataset, x)
        paired = {"features": features.float().numpy()}
        if probs is not None:
            row.update({f"mmr_{lam:g}": v for lam, v in mode_mixture_curve(probs).items()})
            row["mmr"] = row["mmr_0.2"]
            paired["mixed"] = ((probs >= 0.2).sum(1) >= 2).numpy()  # the lambda = 0.2 rule, per sample
        train_features = ctx.train_features(cell.dataset)
        row.update(precision_recall_density_coverage(train_features, features, k=3))
        if ctx.is_user(cell.dataset) and ctx.user.experiment.kid:
            from ..metrics.kid import kernel_inception_distance

            kid = kernel_inception_distance(features, train_features)
            row.update(kid_mean=kid["kid_mean"], kid_std=kid["kid_std"], kid_subset_size=kid["subset_size"])
    ctx.save_paired(cell, **paired)
    return row, arrays


def sample_task(ctx: Context, cell: Cell, sigma_star: float | None = None) -> dict:
    x, index, nfe_spent, seconds, ot_map = _draw(ctx, cell, sigma_star)
    row, arrays = _quality(ctx, cell, x, ot_map)
    row.update(nfe_spent=nfe_spent, sample_seconds=seconds, per_sample_ms=1e3 * seconds / x.shape[0])
    if cell.seed == 0 and cell.nfe == (ctx.suite.sweep_nfe if sigma_star else ctx.suite.figure_nfe):
        name = cell if sigma_star is None else Cell.make(cell.task, cell.dataset, f"{cell.method}-{sigma_star:g}")
        ctx.save_samples(name, x=x.numpy(), **({} if index is None else {"index": index.numpy()}), **arrays)
    return row


def sigma_star_task(ctx: Context, cell: Cell) -> dict:
    """DPM-OT (default preset) with sigma_star = sigma_rel x the data range."""
    from ..ot.latents import data_range

    low, high = data_range(ctx.dataset(cell.dataset))
    sigma_star = dict(cell.params)["sigma_rel"] * (high - low)
    return {"sigma_star": sigma_star, **sample_task(ctx, cell, sigma_star)}


def latent_count_task(ctx: Context, cell: Cell) -> dict:
    """DPM-OT (default preset) over the first N held-out latents, and the finite-N floor: the MMD^2 of
    the N clean held-out points themselves, MMD^2(empirical measure, mixture) (a V-statistic), which is
    what a sampler emitting exact copies of those N points scores in expectation; a map onto N latents
    cannot do better than reproduce them."""
    from ..metrics import mmd2_to_mixture

    x, index, nfe_spent, seconds, ot_map = _draw(ctx, cell)
    row, _ = _quality(ctx, cell, x, ot_map)
    n_latents = dict(cell.params)["n_latents"]
    clean = ctx.split(cell.dataset, "heldout")[:n_latents]
    stats = mmd2_to_mixture(clean, ctx.dataset(cell.dataset).mixture)
    floor = stats["mmd2"] + (1 - stats["kernel_mean_sample"]) / n_latents  # U -> V: the k(x_i, x_i) = 1 terms
    return {**{k: row[k] for k in ("mmd2", "w2", "high_quality", "between_modes", "copy_rate_targets") if k in row},
            "n_latents_used": int(ot_map.targets_.shape[0]), "mmd2_floor_n": floor, "nfe_spent": nfe_spent}


def floor_task(ctx: Context, cell: Cell) -> dict:
    """What a perfect sampler scores: true samples measured like generated ones."""
    from ..metrics import feature_statistics, frechet_distance_from_stats, mode_mixture_ratio, w2_floor

    dataset, n = ctx.dataset(cell.dataset), dict(cell.params)["n"]
    # fresh data's nearest-neighbour distances (held-out to train): the report's reference histogram
    save_npz(ctx.work / "samples" / f"heldout-nn-{cell.dataset}.npz",
             nn_to_train=np.asarray(ctx.heldout_memorisation(cell.dataset)["nn_to_train"]))
    if dataset.mixture is not None:
        floor = w2_floor(lambda m, s: dataset.sample(m, seed=s), n, seed=cell.seed, repeats=ctx.suite.floor_repeats)
        return {"metric": "w2", "floor": floor["mean"], "floor_std": floor["std"], "method_w2": floor["method"]}
    heldout = ctx.split(cell.dataset, "heldout")[:dict(cell.params)["n"]]  # as many as samples
    features, probs = ctx.features(cell.dataset, heldout), ctx.probs(cell.dataset, heldout)
    return {"metric": "fd", "floor": frechet_distance_from_stats(*feature_statistics(features),
                                                                 *ctx.reference_statistics(cell.dataset), method="eigh"),
            "floor_mmr": None if probs is None else mode_mixture_ratio(probs), "n_heldout": heldout.shape[0]}


MASS_CHECK_SAMPLES = 2 ** 22


def ot_fit_task(ctx: Context, cell: Cell) -> dict:
    """The one-off cost of a DPM-OT preset, and the fitted map's accuracy measured on an independent
    Monte-Carlo sample (with that measurement's own l1 noise floor). ``solver`` is the one that ran
    (``solver_``: ``auto`` resolved), the same whether the map was just fitted or reloaded on resume."""
    fitted, seconds = ctx.ot_map(cell.dataset, cell.method, cell.nfe)
    errors = fitted.mass_errors(n_samples=MASS_CHECK_SAMPLES, seed=777)
    return {"fit_seconds": seconds if seconds is not None else fitted.fit_seconds_,
            "n_targets": fitted.targets_.shape[0], "dim": fitted.targets_.shape[1], "iterations": fitted.n_iter_,
            "solver": fitted.solver_, "source": fitted.source.to_meta()["kind"],
            "sigma_star": fitted.meta_.get("sigma_star") if hasattr(fitted, "meta_") else None,
            "source_samples": fitted.n_source_samples_, **errors}


def train_loss_task(ctx: Context, cell: Cell) -> list[dict]:
    from ..models import denoising_loss

    sigmas = np.geomspace(0.01, 10, 7)
    rows = []
    for model in ("exact", "trained"):
        loss = denoising_loss(ctx.denoiser(cell.dataset, model), ctx.dataset(cell.dataset), sigmas, seed=1)
        rows += [{"model": model, "sigma": float(s), "loss": float(v)} for s, v in zip(loss.sigmas, loss.loss)]
    return rows


def classifier_task(ctx: Context, cell: Cell) -> dict:
    return {"heldout_accuracy": ctx.classifier.heldout_accuracy}


def ot_benchmark_task(ctx: Context, cell: Cell) -> list[dict]:
    from . import ot_bench

    run = {"ot-kernel": ot_bench.kernel_benchmark, "ot-solver": ot_bench.solver_benchmark,
           "ot-scale": ot_bench.scale_benchmark}[cell.task]
    return run(suite=dict(cell.params)["level"], device=ctx.device, progress=ctx.progress)


def bound_task(ctx: Context, cell: Cell) -> list[dict]:
    from ..theory import run_bound_checks

    return run_bound_checks(suite=dict(cell.params)["level"], device=ctx.device, progress=ctx.progress)


TASKS = {"sample": sample_task, "floor": floor_task, "ot-fit": ot_fit_task, "train-loss": train_loss_task,
         "classifier": classifier_task, "ot-kernel": ot_benchmark_task, "ot-solver": ot_benchmark_task,
         "ot-scale": ot_benchmark_task, "bound": bound_task,
         "sigma-star": lambda ctx, cell: sigma_star_task(ctx, cell), "latent-count": latent_count_task,
         "unibench": lambda ctx, cell: _unibench(ctx, cell)}


def _unibench(ctx: Context, cell: Cell) -> dict:
    from .unibench import unibench_task

    return unibench_task(ctx, cell)


def run_cell(ctx: Context, cell: Cell):
    if cell.task not in TASKS:
        raise unknown_name("benchmark task", cell.task, TASKS)
    return TASKS[cell.task](ctx, cell)
