"""The OT engine's section of the report: tables and the convergence figure from the rows of
:mod:`dpmot_bench.bench.ot_bench` (which measures; this renders)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..bench.ot_bench import REFERENCE_ADAM, SAME_ACCURACY_SLACK, _accuracy, _curve, _seconds_to_l1, time_to_accuracy
from ..ot import DEFAULT_SOLVER, GaussianSource, chosen_solver
from ..render import markdown_table, plt, save, sns


def _pass_note(rows: list[dict], d: int) -> str:
    """Why newton-qmc needs the time it does in dimension d: the cost of one pass over its final sample."""
    row = next((r for r in _curve(rows, "newton-qmc", d) if r.get("final_pass_seconds") is not None), None)
    if row is None or pd.isna(row.get("final_pass_seconds")):
        return ""
    n, n_targets = int(row["final_samples"]), int(row["N"])
    return (f" One pass of cell counts over its final sample of {n} points takes {row['final_pass_seconds']:.1f} s "
            f"here, and every Newton step on it needs one; fewer points would not do: their l1 error as Monte "
            f"Carlo, sqrt(2 N / (pi n)), is already {math.sqrt(2 * n_targets / (math.pi * n)):.4f}, and "
            "quasi-Monte-Carlo points gain little on cell indicators in this dimension.")


def _same_accuracy(rows: list[dict], other: str, ours_name: str, d: int, best_l1: float,
                   slack: float = SAME_ACCURACY_SLACK) -> str:
    """``ours_name`` against ``other`` at one accuracy both reach: the first solver times at which each has
    l1 <= ``slack`` times other's best. Not other's best itself: a slow solver spends most of its time on
    the last few percent of its plateau, and measured there every ratio would look large."""
    level = slack * best_l1
    theirs, ours = _seconds_to_l1(rows, other, d, level), _seconds_to_l1(rows, ours_name, d, level)
    if ours is None:
        return f" {ours_name} does not reach l1 {level:.3g} ({slack:g} x {other}'s best) here."
    return (f" At l1 ≤ {level:.3g} ({slack:g} x {other}'s best), {other} is there after {theirs:.3g} s, {ours_name} "
            f"after {ours:.2f} s: **{theirs / ours:.1f}x** faster.")


def _kernel_markdown(kernel: pd.DataFrame) -> str:
    speed = kernel[kernel["method"].isin(["naive", "chunked", "fused", "scores-only"])]
    gemm = kernel[kernel["method"] == "square-gemm"]
    if speed.empty or gemm.empty:
        return ""
    table = speed.pivot_table(index="d", columns="method", values="gflops").reset_index()
    # The goals are the default kernel's: the fused one where it was built (and ran at that d), else chunked.
    fused = table["fused"] if "fused" in table else pd.Series(float("nan"), index=table.index)
    ours = fused.fillna(table["chunked"])
    table["kernel"] = fused.notna().map({True: "fused", False: "chunked"})
    table["fraction_of_gemm"] = ours / float(gemm["gflops"].iloc[0])
    table["speedup_vs_naive"] = ours / table["naive"]
    if "scores-only" in table:  # older result files lack it
        table["chunked_vs_scores_only"] = table["chunked"] / table["scores-only"]
        table["scores_only_vs_naive"] = table["scores-only"] / table["naive"]
    table["goal"] = ["≥ 80% of GEMM" if d >= 256 else "≥ 4x naive" if d <= 64 else "–" for d in table["d"]]
    table["met"] = [f >= 0.8 if d >= 256 else s >= 4 if d <= 64 else None
                    for d, f, s in zip(table["d"], table["fraction_of_gemm"], table["speedup_vs_naive"])]
    first = speed.iloc[0]
    text = (f"**Assignment kernel** (`benchmarks/ot_kernel.py`): M = {int(first['M'])} source points against "
            f"N = {int(first['N'])} targets, {int(first['threads'])} threads, device {first['device']}; useful "
            f"GFLOP/s = 2MNd / time; the square GEMM ({int(gemm['M'].iloc[0])}²) runs at "
            f"{float(gemm['gflops'].iloc[0]):.1f} GFLOP/s in the same run. `chunked` is the torch kernel (BLAS "
            "products into a reused buffer, then blocked reductions); `fused` the compiled kernel of "
            "`ot/native.py`, which writes no score matrix to memory and is the default where it is built; the goals "
            "and the speed-up are the default kernel's (column `kernel`).\n\n")
    if "scores-only" in table:
        text += ("`scores-only` is the chunked kernel's matrix products alone, without the argmax: the chunked "
                 "kernel cannot beat it, so `scores_only_vs_naive` bounds what it could gain over the naive "
                 "expression here (the fused kernel writes no score matrix and is not so bounded).\n\n")
    text += markdown_table(table.rename(columns={"naive": "naive GFLOP/s", "chunked": "chunked GFLOP/s",
                                                 "fused": "fused GFLOP/s", "scores-only": "scores-only GFLOP/s"}))
    memory = kernel[kernel["method"].astype(str).str.startswith("memory-")]
    if not memory.empty:
        mem = memory.pivot_table(index="M", columns="method", values=["peak_extra_mb", "score_buffer_mb"])
        mem.columns = [f"{method.removeprefix('memory-')} {value.removesuffix('_mb').replace('_', ' ')} (MB)"
                       for value, method in mem.columns]
        text += ("\nPeak extra resident memory against M (d = 16), measured (growth of the process's high-water "
                 "mark) and by construction (the score matrix held at once): the chunked kernel holds one "
                 "buffer whatever M is, the fused kernel none; the naive expression the whole M x N matrix.\n\n")
        text += markdown_table(mem.reset_index())
    return text + "\n"


def _verdicts(rows: list[dict], part: pd.DataFrame, d: int) -> str:
    """The verdict lines of dimension d: the default solver's choice there (``auto``: exact-2d in 2-D,
    newton-qmc above) against the goal and against every other solver."""
    ours_name = chosen_solver(DEFAULT_SOLVER, GaussianSource(int(d)))
    if ours_name not in part.index:
        ours_name = "newton-qmc"
    if ours_name not in part.index:
        return ""
    ours_row, text = part.loc[ours_name], ""
    others = part.index.drop(ours_name)
    if bool(ours_row["reached"]):
        ours = float(ours_row["seconds_to_goal"])
        text += (f"\n- d = {d}: {ours_name} reaches the accuracy goal in {ours:.2f} s: "
                 + ("**within** the 10 s goal." if ours <= 10 else "**not** within the 10 s goal."
                    + _pass_note(rows, d)))
        for other in others:
            if bool(part.loc[other, "reached"]):
                text += (f"\n- d = {d}: {ours_name} reaches the goal "
                         f"{float(part.loc[other, 'seconds_to_goal']) / ours:.1f}x faster than {other}.")
            elif not math.isfinite(float(part.loc[other, "best_l1"])):
                text += (f"\n- d = {d}: {other} diverged (non-finite dual potentials) at every logged point; "
                         f"{ours_name} needs {ours:.2f} s for the goal.")
            else:
                text += (f"\n- d = {d}: {other} never reaches the goal within its budget (best l1 "
                         f"{float(part.loc[other, 'best_l1']):.3g} after "
                         f"{float(part.loc[other, 'seconds_at_best_l1']):.3g} s); {ours_name} needs {ours:.2f} s "
                         "for the goal." + _same_accuracy(rows, other, ours_name, d, float(part.loc[other, "best_l1"])))
    else:
        text += (f"\n- d = {d}: {ours_name} does **not** reach the goal here (best l1 "
                 f"{float(ours_row['best_l1']):.3g}, max relative {float(ours_row['best_max_rel']):.3g}, after "
                 f"{float(ours_row['seconds_at_best_l1']):.3g} s).")
        for other in others:
            if math.isfinite(float(part.loc[other, "best_l1"])):
                text += _same_accuracy(rows, other, ours_name, d, float(part.loc[other, "best_l1"]))
    return text


def _solver_markdown(solver: pd.DataFrame, fig_dir: Path) -> str:

    if solver.empty:
        return ""
    rows = solver.to_dict("records")
    summary = pd.DataFrame(time_to_accuracy(rows))
    text = (f"**Solvers, time to accuracy** (`benchmarks/ot_solvers.py`, suite {solver['suite'].iloc[0]}): "
            f"N = {int(solver['N'].iloc[0])} Gaussian targets, Gaussian source, uniform weights, "
            f"d = {', '.join(str(d) for d in sorted(solver['d'].unique()))}; every solver's h measured the same "
            "way: exactly (power cells clipped against the Gaussian) in 2-D, else on an independent Monte-Carlo "
            "sample (its own l1 noise floor in the last column; that noise only adds to the error). Goal: "
            "l1 ≤ 0.01 and max relative error ≤ 10%. Solver time only (evaluation excluded).\n\n")
    text += markdown_table(summary)
    pot = solver[solver["solver"] == "pot-asgd"]
    if "pot_lr" in pot and not pot.empty:
        settings = pot.groupby("d")[["pot_reg", "pot_lr"]].first()
        text += (f"\nPOT's ASGD: a fixed sample of {int(pot['source_samples'].iloc[0])} source points, cost rows "
                 "shifted by their minimum (the same solution; POT's unstabilised exponential overflows otherwise), "
                 "the best learning rate of a grid (tuning time not counted): "
                 + ", ".join(f"d = {d}: reg {r.pot_reg:g}, lr {r.pot_lr:g}" for d, r in settings.iterrows()) + ".\n")
    if REFERENCE_ADAM in set(solver["solver"]):
        text += (f"\n`{REFERENCE_ADAM}` is adam-mc counting its cells as the reference code does (blockwise BLAS "
                 "products, then argmax: the chunked kernel); `adam-mc` runs on this toolkit's default kernel (the "
                 "fused one where built), which speeds up adam-mc, nothing but cell counts, more than newton-qmc.\n")
    for d in sorted(summary["d"].unique()):
        part = summary[summary["d"] == d].set_index("solver")
        text += _verdicts(rows, part, d)
    solver = solver.assign(l1=[_accuracy(r)[0] for r in rows])
    fig, axes = plt.subplots(1, solver["d"].nunique(), figsize=(5 * solver["d"].nunique(), 3.6), squeeze=False)
    for ax, (d, part) in zip(axes[0], solver.groupby("d")):
        sns.lineplot(part.sort_values("seconds"), x="seconds", y="l1", hue="solver", marker="o",
                     ax=ax, legend=ax is axes[0][-1], estimator=None, errorbar=None)
        ax.axhline(0.01, color="black", ls="--", lw=1)
        if "exact_l1_mass_error" not in part or part["exact_l1_mass_error"].isna().all():
            ax.axhline(float(part["l1_noise_floor"].iloc[0]), color="0.5", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", title=f"d = {d}, N = {int(part['N'].iloc[0])}", xlabel="solver seconds",
               ylabel="l1 cell-mass error")
    save(fig, Path(fig_dir) / "ot_solver_convergence.png")
    return text + ("\n\n![OT solver convergence](figures/ot_solver_convergence.png)\n\n"
                   "_Dashed: the goal l1 = 0.01; dotted (Monte-Carlo evaluation only): the evaluation sample's own noise floor._\n\n")


def _scale_markdown(scale: pd.DataFrame) -> str:
    passes = scale[scale["kind"] == "pass"].sort_values("N")
    text = ""
    if len(passes) >= 2:
        slope = float(np.polyfit(np.log(passes["N"]), np.log(passes["seconds"]), 1)[0])
        text += (f"**Scaling** (`benchmarks/ot_scale.py`): one solver pass over {int(passes['samples'].iloc[0])} "
                 f"source points at d = {int(passes['d'].iloc[0])}; log-log slope of time against N: "
                 f"**{slope:.2f}** (linear = 1).\n\n")
        text += markdown_table(passes[["N", "d", "samples", "seconds", "seconds_per_target"]])
    dry = scale[scale["kind"] == "cifar-dry-run"]
    if not dry.empty:
        row = dry.iloc[0]
        peak = row["peak_extra_mb"]
        text += (f"\nCIFAR-scale dry run: N = {int(row['N'])} random targets in d = {int(row['d'])} "
                 f"({row['targets_mb']:.0f} MB of targets), {int(row['samples'])} source points in "
                 f"{row['seconds']:.2f} s; peak extra memory "
                 f"{'not measurable here' if pd.isna(peak) else f'{peak:.0f} MB'} (goal: within 4 GB); one adam-mc "
                 f"iteration (10 N points) would take about {row['adam_mc_iteration_seconds_estimate']:.0f} s on "
                 "this machine.\n")
    argmax = scale[scale["kind"] == "float32-argmax"] if "kind" in scale else scale.iloc[:0]
    if not argmax.empty:
        row = argmax.iloc[0]
        text += (f"\nFloat32 assignments at d = {int(row['d'])} (N = {int(row['N'])} image-like targets in [0, 1], "
                 f"{int(row['M'])} source points, the moment-matched h): the fraction of points whose float32 argmax "
                 "differs from the float64 one, with the scores as given and centred (what the solvers use):\n\n")
        text += markdown_table(argmax[["source", "scores", "mean_abs_inner_product", "median_abs_score_error",
                                       "disagreement"]])
    solvers = scale[scale["kind"] == "d3072-solver"] if "kind" in scale else scale.iloc[:0]
    if not solvers.empty:
        text += (f"\nSolvers at d = 3072 (CIFAR-10's dimension; `d3072_solver_rows`): "
                 f"{int(solvers['iterations'].iloc[0])} iterations of each on {int(solvers['points_per_iteration'].min())}"
                 "-point stage samples, random and clustered targets; seconds per iteration (newton-qmc: its entropic "
                 "warm-up and its hard passes), per source point, peak extra memory, the independent check of the h "
                 "reached (after so few points this is where the fit stands, not a converged fit: its noise floor "
                 "beside it) and one default iteration extrapolated linearly in the points (newton-qmc: a pass over "
                 "256 N points; adam-mc: 10 N points).\n\n")
        text += markdown_table(solvers[["N", "targets", "solver", "seconds_per_entropic_iteration",
                                        "seconds_per_hard_iteration", "seconds_per_point", "peak_extra_mb",
                                        "check_l1_mass_error", "check_noise_floor", "default_iteration_seconds"]])
    memory = scale[scale["kind"] == "memory-vs-points"] if "kind" in scale else scale.iloc[:0]
    if not memory.empty:
        text += ("\nPeak extra memory of newton-qmc passes against the number of streamed source points (N = "
                 f"{int(memory['N'].iloc[0])} random targets, d = {int(memory['d'].iloc[0])}): bounded by the targets "
                 "and a fixed working set, flat in the points.\n\n")
        text += markdown_table(memory[["N", "d", "points", "iterations", "peak_extra_mb", "seconds"]])
    return text + "\n"


def report_section(kernel: pd.DataFrame, solver: pd.DataFrame, scale: pd.DataFrame, fig_dir: str | Path) -> str:
    """The report's markdown on the OT engine from the three benchmarks' rows (and its convergence figure
    in ``fig_dir``); parts without rows are left out."""
    parts = [_kernel_markdown(kernel) if not kernel.empty else "", _solver_markdown(solver, fig_dir),
             _scale_markdown(scale) if not scale.empty else ""]
    return "".join(parts) or "_(no OT benchmark rows)_\n"
