"""Per-configuration summaries (mean and 95% CI over seeds) and the fitted rates of the bound checks."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..render import fmt
from ..stats import summarise
from .rates import fit_slope

CONFIG_FIELDS = ["dataset", "model", "shift", "n_latents", "sigma_star", "sampler", "nfe", "ot_solver", "ot_iters", "tau",
                 "sweep"]
HOLDS = ["holds_terms", "holds_bound", "thmA_holds_rig", "thmA_holds_est", "holds_smoothing", "holds_den_est",
         "holds_disc_est"]


def summarise_rows(rows: list[dict]) -> list[dict]:
    """One record per configuration: every numeric column's mean and ``<col>_ci`` (95% Student-t half
    width over seeds), ``n_seeds``, and each ``holds_*`` as true only if it held for every seed (None when
    not applicable)."""
    frame = pd.DataFrame(rows)
    skip = set(CONFIG_FIELDS) | set(HOLDS) | {"seed"}
    metrics = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    table = summarise(frame, CONFIG_FIELDS, metrics)
    for column in HOLDS:
        if column in frame:
            verdict = frame.groupby(CONFIG_FIELDS, sort=True, dropna=False)[column].agg(
                lambda v: None if v.isna().all() else bool(v.dropna().astype(bool).all()))
            table = table.merge(verdict.rename(column).reset_index(), on=CONFIG_FIELDS, how="left")
    records = table.to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]


# (sweep, y, x, predicted slope or None, tolerance, which rows) per data-set family; see theory/bound.md.
def _predictions(dataset: str) -> list[tuple]:
    lat = {"gaussian": (-0.5, 0.15), "gmm-hd": (-0.16, 0.1)}.get(dataset, (-0.25, 0.07))
    return [
        ("n_latents", "e_lat", "n_latents", *lat, "E_lat vs N (B2, R1)"),
        ("n_latents", "e_lat_lower", "n_latents", -0.25 if dataset != "gaussian" else None, 0.03,
         "R1 lower bound vs N"),
        ("sigma_star", "e_lat", "sigma_star", 0.0, 0.07, "E_lat vs sigma_star (B2: independent)"),
        ("ot_iters", "e_ot", "tv", 0.5, 0.15, "E_OT vs TV (Cor. OT2)"),
        ("ot_iters", "tv", "ot_iters", None, 0.0, "TV vs OT iterations (solver-specific)"),
        ("ot_iters", "e_ot", "ot_iters", "half-tv", 0.15, "E_OT vs OT iterations (1/2 x TV's slope)"),
        ("shift", "e_den", "shift", 1.0, 0.1, "E_den vs |delta| (B1)"),
        ("shift", "sqrt_j_sm", "shift", 1.0, 0.01, "J_SM^1/2 vs |delta| (B1)"),
        ("tau", "smooth_gap_ot", "tau", 0.5, 0.15, "L2 gap smooth vs hard map vs tau (OT5)"),
        ("tau", "smooth_l1_ot", "tau", 1.0, 0.2, "L1 gap smooth vs hard map vs tau (OT5)"),
    ]


NFE_ORDER = {"euler": 1, "heun": 2, "dpmpp-2m": 2}


def fit_rates(rows: list[dict]) -> list[dict]:
    """Fitted log-log slopes of each term against its sweep variable, with the predicted slope and whether
    they agree (``|slope - predicted| <= CI half-width + tolerance``; the tolerance covers logarithmic
    factors and pre-asymptotic curvature and is stated per rate). Small-tau and large-NFE halves only,
    where the predictions are asymptotic."""
    frame = pd.DataFrame(rows)
    if "j_sm" in frame:
        frame["sqrt_j_sm"] = np.sqrt(frame["j_sm"].astype(float))
    out = []
    for (dataset, model), group in frame.groupby(["dataset", "model"], sort=True):
        tv_slope = None
        for sweep, y, x, predicted, tol, label in _predictions(dataset):
            part = group[group["sweep"].isin([sweep, "base"])] if sweep != "tau" else group[group["sweep"] == "tau"]
            if (part["sweep"] == sweep).sum() == 0 or y not in part or x not in part:
                continue
            if sweep == "tau":
                part = part[part["tau"] <= part["tau"].median()]
            fit = fit_slope(part[x].astype(float), part[y].astype(float))
            if (sweep, y, x) == ("ot_iters", "tv", "ot_iters"):
                tv_slope = fit
            if predicted == "half-tv":
                predicted = None if tv_slope is None or math.isnan(tv_slope["slope"]) else tv_slope["slope"] / 2
            out.append(_rate_record(dataset, model, sweep, y, x, label, fit, predicted, tol))
        nfe = group[group["sweep"].isin(["nfe", "base"])]
        for sampler, part in nfe.groupby("sampler"):
            part = part[part["nfe_counted"] >= part["nfe_counted"].median()]
            fit = fit_slope(part["nfe_counted"].astype(float), part["e_disc_path"].astype(float))
            out.append(_rate_record(dataset, model, "nfe", "e_disc_path", "nfe", f"E_disc vs NFE, {sampler} (F6)",
                                    fit, -NFE_ORDER.get(sampler, math.nan), 0.3, sampler=sampler))
    return [record for record in out if record is not None]


def _rate_record(dataset, model, sweep, y, x, label, fit, predicted, tol, sampler=None) -> dict | None:
    if math.isnan(fit["slope"]):
        return None  # fewer than two distinct sweep values: no rate to report
    agrees = None
    if predicted is not None:
        ci = 0.0 if math.isnan(fit["slope_ci"]) else fit["slope_ci"]
        agrees = bool(abs(fit["slope"] - predicted) <= ci + tol)
    return {"dataset": dataset, "model": model, "sweep": sweep, "quantity": y, "against": x, "sampler": sampler,
            "label": label, "slope": fit["slope"], "slope_ci": fit["slope_ci"], "points": fit["points"],
            "predicted": predicted, "tolerance": tol, "agrees": agrees}


def finite_json(value):
    """``value`` with every NaN / infinite float replaced by None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def format_report(result: dict) -> str:
    """Plain-text tables: one line per configuration (means over seeds) and one per fitted rate."""
    lines = []
    for r in result["configurations"]:
        line = {"dataset": r["dataset"], "model": r["model"], "sweep": r["sweep"], "N": r["n_latents"],
                "sigma*": r["sigma_star"], "sampler": r["sampler"], "nfe": r["nfe"], "solver": r["ot_solver"],
                "iters": r["ot_iters"],
                "tau": r["tau"]}
        if r.get("tau"):
            line.update({"lhs": "smoothing:", "E_OT": r.get("smooth_gap_ot"), "rhs(B)": r.get("smooth_bound_ot"),
                         "holds(B)": r.get("holds_smoothing")})
        else:
            line.update({"lhs": r.get("lhs"), "E_OT": r.get("e_ot"), "E_disc": r.get("e_disc_path"),
                         "E_den": r.get("e_den_path"), "E_lat": r.get("e_lat"), "rhs(B)": r.get("rhs_bound"),
                         "holds(B)": r.get("holds_bound"), "lhs/rhs(B)": r.get("ratio_bound"),
                         "log10 rhs(A)": r.get("thmA_log10_rhs_rig"), "holds(A)": r.get("thmA_holds_rig")})
        lines.append({k: fmt(v) for k, v in line.items()})
    table = pd.DataFrame(lines).fillna("")
    rates = pd.DataFrame([{"dataset": r["dataset"], "model": r["model"], "rate": r["label"],
                           "slope": f"{fmt(r['slope'])} +- {fmt(r['slope_ci'])}",
                           "predicted": f"{fmt(r['predicted'])} (tol {r['tolerance']:g})",
                           "agrees": fmt(r["agrees"])} for r in result["rates"]])
    return ("Theorem B (E_* pathwise terms, rhs = sum of their bounds) and Theorem A (rigorous constants); "
            "means over seeds; smoothing rows: gap and OT5 bound\n" + table.to_string(index=False)
            + "\n\nRates (log-log slopes, 95% CI)\n" + (rates.to_string(index=False) if len(rates) else "none"))
