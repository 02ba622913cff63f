"""Figures of the bound checks: left side against right side, every term against its sweep variable,
the Gronwall constants of Theorem A, and the smoothing gap (PNG, written atomically)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import ensure_writable_dir
from ..render import plt, save, sns

TERMS = {"lhs": "left side W2(p_gen, p_data)", "e_ot": "E_OT", "e_disc_path": "E_disc (pathwise)",
         "e_den_path": "E_den (pathwise)", "e_lat": "E_lat", "e_lat_lower": "E_lat lower bound (R1)",
         "rhs_bound": "right side (Thm B bounds)"}
SWEEP_AXES = {"n_latents": "N (latents)", "sigma_star": "sigma_star", "ot_iters": "OT iterations",
              "shift": "|delta| (denoiser shift)", "nfe": "NFE"}


def _log_x_ticks(ax, values) -> None:
    """Tick a log x-axis at the swept values themselves (a handful), printed plainly."""
    values = np.sort(pd.unique(pd.Series(values).dropna()))
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()


def lhs_vs_rhs(frame: pd.DataFrame, path: Path) -> Path:
    """Scatter of the left side against the two right sides of Theorem B (all seeds), with y = x."""
    data = frame.dropna(subset=["lhs"])
    long = pd.concat([data.assign(rhs=data["rhs_terms"], kind="sum of the four terms"),
                      data.assign(rhs=data["rhs_bound"], kind="sum of their bounds")])
    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    sns.scatterplot(long, x="rhs", y="lhs", hue="dataset", style="kind", ax=ax, s=22, alpha=0.8)
    lo, hi = long[["rhs", "lhs"]].min().min() * 0.8, long[["rhs", "lhs"]].max().max() * 1.2
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="left = right")
    ax.set(xscale="log", yscale="log", xlabel="right side (Theorem B)", ylabel="left side W2(p_gen, p_data)",
           title="Theorem B: left vs right side")
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    return save(fig, path)


def terms_vs_sweep(frame: pd.DataFrame, sweep: str, path: Path) -> Path:
    """One panel per data set: the left side, the four terms and the right side against the sweep
    variable (mean and 95% CI over seeds, log-log)."""
    x = "nfe_counted" if sweep == "nfe" else sweep
    swept = frame[frame["sweep"] == sweep]
    base = frame[(frame["sweep"] == "base") & frame["model"].isin(swept["model"].unique())]
    part = pd.concat([swept, base[base["dataset"].isin(swept["dataset"].unique())]])
    part = part[part["lhs"].notna() & (part[x] > 0)]
    long = part.melt(id_vars=["dataset", "sampler", x, "seed"], value_vars=[t for t in TERMS if t in part],
                     var_name="term", value_name="value")
    long["term"] = long["term"].map(TERMS)
    long = long[long["value"] > 0]
    datasets = sorted(long["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        data = long[long["dataset"] == dataset]
        style = "sampler" if sweep == "nfe" else None
        sns.lineplot(data, x=x, y="value", hue="term", style=style, markers=True, errorbar=("ci", 95), ax=ax,
                     legend=ax is axes[0][-1])
        ax.set(xscale="log", yscale="log", title=dataset, xlabel=SWEEP_AXES.get(sweep, sweep), ylabel="W2")
        _log_x_ticks(ax, data[x])
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=7)
    return save(fig, path)


def theorem_a(frame: pd.DataFrame, path: Path) -> Path:
    """How many orders of magnitude Theorem A's right side exceeds its left side, with rigorous and with
    estimated constants (base configurations, mean over seeds; > 0 means the bound holds)."""
    data = frame[frame["sweep"] == "base"].copy()
    data["case"] = data["dataset"] + " / " + data["model"]
    columns = {"thmA_log10_rhs_rig": "rigorous constants", "thmA_log10_rhs_est": "estimated constants"}
    for column in columns:
        data[column] = data[column] - np.log10(data["thmA_lhs"])
    long = data.melt(id_vars=["case"], value_vars=list(columns), var_name="constants", value_name="orders")
    long["constants"] = long["constants"].map(columns)
    long = long.dropna().groupby(["case", "constants"], as_index=False)["orders"].mean()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.barplot(long, x="case", y="orders", hue="constants", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3g", fontsize=7)
    ax.set(yscale="symlog", ylabel="log10(right side / left side)", xlabel="",
           title="Theorem A: orders of magnitude between the sides")
    ax.set_ylim(top=max(1.0, float(long["orders"].max())) * 5)  # room for the bar labels
    ax.tick_params(axis="x", labelrotation=15)
    ax.legend(fontsize=7, frameon=False)
    return save(fig, path)


def smoothing(frame: pd.DataFrame, path: Path) -> Path:
    """The gap between the smooth and the hard map, at the OT stage and after the tail, against tau, with
    the OT5 bound and a slope-1/2 guide."""
    data = frame[frame["sweep"] == "tau"]
    names = {"smooth_gap_ot": "gap at sigma_star (L2)", "smooth_gap_tail": "gap after the tail (L2)",
             "smooth_bound_ot": "OT5 (ii) bound", "potential_gap_bound": "tau log N (potential gap)"}
    long = data.melt(id_vars=["dataset", "tau", "seed"], value_vars=list(names), var_name="what", value_name="value")
    long["what"] = long["what"].map(names)
    datasets = sorted(long["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = long[long["dataset"] == dataset]
        taus = np.sort(part["tau"].unique())
        gap = part[part["what"] == names["smooth_gap_ot"]].groupby("tau")["value"].mean()
        ax.plot(taus, gap.iloc[0] * np.sqrt(taus / taus[0]), color="gray", ls=":", label="slope 1/2")
        sns.lineplot(part, x="tau", y="value", hue="what", markers=True, errorbar=("ci", 95), ax=ax,
                     legend=ax is axes[0][-1])
        ax.set(xscale="log", yscale="log", title=dataset, xlabel="tau", ylabel="W2 / potential gap")
        _log_x_ticks(ax, taus)
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=7)
    return save(fig, path)


def plot_bound(rows: list[dict], out_dir) -> list[Path]:
    """All figures of the bound checks for ``rows`` (from ``run_bound_checks``) into ``out_dir``."""
    out_dir = ensure_writable_dir(out_dir)
    frame = pd.DataFrame(rows)
    paths = []
    theorem_rows = frame[frame["tau"] == 0] if "tau" in frame else frame
    if "lhs" in theorem_rows and theorem_rows["lhs"].notna().any():
        paths.append(lhs_vs_rhs(theorem_rows, out_dir / "bound_lhs_vs_rhs.png"))
        for sweep in SWEEP_AXES:
            if (theorem_rows["sweep"] == sweep).any():
                paths.append(terms_vs_sweep(theorem_rows, sweep, out_dir / f"bound_terms_vs_{sweep}.png"))
        if (theorem_rows["sweep"] == "base").any():
            paths.append(theorem_a(theorem_rows, out_dir / "bound_theorem_a.png"))
    if "tau" in frame and (frame["sweep"] == "tau").any():
        paths.append(smoothing(frame, out_dir / "bound_smoothing.png"))
    return paths
