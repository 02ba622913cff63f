"""Report figures (seaborn / matplotlib, written as PNG through atomic writes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..render import plt, save, sns


def _method_order(frame: pd.DataFrame) -> list[str]:
    names = sorted(frame["method"].unique())
    return sorted(names, key=lambda m: (not m.startswith("dpm-ot"), m.startswith("diffusers"), m))


def metric_vs_nfe(frame: pd.DataFrame, metric: str, label: str, path: Path, log_y: bool = True,
                  floor: pd.DataFrame | None = None) -> Path:
    """One panel per dataset: ``metric`` against NFE for every method, mean and 95% CI over seeds;
    an optional dashed line per dataset for the sampling-noise floor."""
    datasets = sorted(frame["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.6), squeeze=False)
    order = _method_order(frame)
    palette = dict(zip(order, sns.color_palette("tab20", len(order))))
    for ax, dataset in zip(axes[0], datasets):
        part = frame[frame["dataset"] == dataset]
        sns.lineplot(part, x="nfe", y=metric, hue="method", hue_order=[m for m in order if m in set(part["method"])],
                     palette=palette, style="method", markers=True, dashes=False, errorbar=("ci", 95),
                     ax=ax, legend=ax is axes[0][-1])
        if floor is not None and dataset in set(floor["dataset"]):
            value = float(floor.loc[floor["dataset"] == dataset, "floor"].iloc[0])
            ax.axhline(value, color="black", ls="--", lw=1, label="noise floor")
        ax.set(xscale="log", title=dataset, xlabel="NFE", ylabel=label)
        nfes = sorted(part["nfe"].unique())
        ax.set_xticks(nfes, [str(v) for v in nfes])
        ax.minorticks_off()
        if log_y and (part[metric] > 0).all():
            ax.set_yscale("log")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return save(fig, path)


def scatter_grid(samples: dict[str, np.ndarray], reference: np.ndarray, title: str, path: Path,
                 targets: np.ndarray | None = None) -> Path:
    """2-D samples of every method next to the true distribution."""
    panels = {"true data": reference, **samples}
    cols = min(5, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    lim = np.abs(reference).max() * 1.25
    for ax, (name, x) in zip(axes.flat, panels.items()):
        ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, color="C0" if name == "true data" else "C3", lw=0)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=name, aspect="equal", xticks=[], yticks=[])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)


def digit_grid(samples: dict[str, np.ndarray], path: Path, per_method: int = 16) -> Path:
    """A row of 8x8 digits per method (values in [-1, 1])."""
    return image_grid(samples, path, (1, 8, 8), (-1.0, 1.0), per_method)


def image_grid(samples: dict[str, np.ndarray], path: Path, shape: tuple[int, int, int],
               value_range: tuple[float, float], per_method: int = 16) -> Path:
    """A row of images per method: flat rows of ``shape`` (C, H, W) with values in ``value_range``."""
    channels, height, width = shape
    low, high = value_range
    names = list(samples)
    scale = max(0.45, width / 18)
    fig, axes = plt.subplots(len(names), 1, figsize=(per_method * scale, 0.62 * len(names) * scale / 0.45),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        x = (np.clip(samples[name][:per_method].reshape(-1, *shape), low, high) - low) / (high - low)
        x = x.transpose(0, 2, 3, 1)  # (n, H, W, C)
        blank = 0 if channels == 1 else 1  # white: grey images are drawn with high values dark
        strip = np.concatenate([np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=blank) for img in x], axis=1)
        if channels == 1:
            ax.imshow(strip[..., 0], cmap="gray_r", vmin=0, vmax=1)  # as the digits: high values dark
        else:
            ax.imshow(strip)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    return save(fig, path)


def histograms(values: dict[str, np.ndarray], xlabel: str, title: str, path: Path,
               reference: str | None = None) -> Path:
    """Overlaid histograms (e.g. nearest-neighbour distances per method); ``reference`` drawn in black."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    upper = np.quantile(np.concatenate(list(values.values())), 0.995)
    bins = np.linspace(0, upper, 50)
    for name, v in values.items():
        ax.hist(v, bins=bins, histtype="step", density=True, lw=2 if name == reference else 1.2,
                color="black" if name == reference else None, label=name)
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    return save(fig, path)


def tradeoff(frame: pd.DataFrame, path: Path) -> Path:
    """DPM-OT's sigma_star sweep: quality (left axis) and copy rate to the OT targets (right), per dataset."""
    datasets = sorted(frame["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = frame[frame["dataset"] == dataset]
        sns.lineplot(part, x="sigma_star", y="quality", marker="o", errorbar=("ci", 95), ax=ax, color="C0")
        ax.set(xscale="log", title=dataset, xlabel="sigma_star", ylabel="W2 / FD (lower is better)")
        twin = ax.twinx()
        sns.lineplot(part, x="sigma_star", y="copy_rate_targets", marker="s", errorbar=("ci", 95), ax=twin,
                     color="C3")
        twin.set(ylabel="copy rate to OT targets", ylim=(-0.02, 1.02))
        twin.yaxis.label.set_color("C3")
        twin.grid(False)
    return save(fig, path)


def power_cells(ot_map, samples: np.ndarray, path: Path, resolution: int = 300) -> Path:
    """Left: the power (Laguerre) cells of a 2-D map over the source's bulk, coloured by target. Right: the
    targets (latents) and the final samples."""
    import torch

    source = ot_map.source
    meta = source.to_meta()
    if meta["kind"] == "gaussian":
        lo, hi = meta["mean"] - 3 * meta["std"], meta["mean"] + 3 * meta["std"]
    else:
        lo, hi = meta["low"], meta["high"]
    axis = np.linspace(lo, hi, resolution)
    grid = torch.from_numpy(np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype(np.float32))
    cells = ot_map.assign(grid.to(ot_map.targets_.device)).cpu().numpy().reshape(resolution, resolution)
    colours = np.random.default_rng(0).permutation(ot_map.targets_.shape[0])[cells]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.3))
    left.imshow(colours, origin="lower", extent=(lo, hi, lo, hi), cmap="tab20", interpolation="nearest")
    left.set(title=f"power cells in source space ({meta['kind']})", aspect="equal")
    targets = ot_map.targets_.cpu().numpy()
    right.scatter(targets[:, 0], targets[:, 1], s=4, color="0.6", lw=0, label="OT targets (latents)")
    right.scatter(samples[:, 0], samples[:, 1], s=2, color="C3", lw=0, alpha=0.6, label="DPM-OT samples")
    right.set(title="targets and final samples", aspect="equal")
    right.legend(fontsize=7, loc="upper right", markerscale=3)
    return save(fig, path)


def latent_curve(frame: pd.DataFrame, path: Path) -> Path:
    """DPM-OT's MMD^2 against its number of latents N (mean, 95% CI over seeds), per dataset, with the
    finite-N floor (the N clean points' own MMD^2) dashed."""
    datasets = sorted(frame["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = frame[frame["dataset"] == dataset]
        sns.lineplot(part, x="n_latents", y="mmd2", marker="o", errorbar=("ci", 95), ax=ax, label="DPM-OT")
        floor = part.groupby("n_latents")["mmd2_floor_n"].mean()
        ax.plot(floor.index, floor.values, "k--", lw=1, label="finite-N floor")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xscale="log", title=dataset, xlabel="latents N", ylabel="unbiased MMD^2 to the mixture")
        ax.legend(fontsize=7, frameon=False)
    return save(fig, path)


def prompt_scatter(panels: dict[tuple[str, str], np.ndarray], reference: np.ndarray, targets: dict[str, np.ndarray],
                   title: str, path: Path) -> Path:
    """2-D samples per (prompt, arm): prompts as rows, arms as columns, over the true data in grey, with the
    means of each prompt's classes ringed in green."""
    prompts = list(dict.fromkeys(p for p, _ in panels))
    arms = list(dict.fromkeys(a for _, a in panels))
    fig, axes = plt.subplots(len(prompts), len(arms), figsize=(2.3 * len(arms), 2.3 * len(prompts) + 0.4),
                             squeeze=False)
    lim = np.abs(reference).max() * 1.2
    for i, prompt in enumerate(prompts):
        for j, arm in enumerate(arms):
            ax = axes[i][j]
            ax.scatter(reference[:, 0], reference[:, 1], s=1, color="0.8", lw=0)
            ax.scatter(*targets[prompt].T, s=90, facecolors="none", edgecolors="C2", lw=1.2)
            if (prompt, arm) in panels:
                x = panels[prompt, arm]
                ax.scatter(x[:, 0], x[:, 1], s=7, color="C3", alpha=0.8, lw=0)
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
            if i == 0:
                ax.set_title(arm, fontsize=9)
            if j == 0:
                ax.set_ylabel(prompt, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)
