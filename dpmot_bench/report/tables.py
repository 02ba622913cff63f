"""Markdown tables from pandas frames.

pandas' ``DataFrame.to_markdown`` needs the ``tabulate`` package, which is not a dependency; this is the
few lines it takes to print a pipe table with formatted numbers (and ``mean ± ci`` cells).
"""
from __future__ import annotations

import math

import pandas as pd


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{max(digits, len(str(int(abs(value)))))}g}"  # no exponent for integer parts
    return str(value)


def with_ci(frame: pd.DataFrame, metrics: list[str], digits: int = 3) -> pd.DataFrame:
    """Replace each ``metric`` column by the text ``mean ± ci`` (using ``metric_ci``)."""
    out = frame.copy()
    for metric in metrics:
        if metric not in out:
            continue
        ci = out.get(f"{metric}_ci")
        out[metric] = [fmt(m, digits) + ("" if ci is None or pd.isna(c) else f" ± {fmt(c, 2)}")
                       for m, c in zip(out[metric], ci if ci is not None else [None] * len(out))]
        out = out.drop(columns=[f"{metric}_ci"], errors="ignore")
    return out


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame.empty:
        return "_(no rows)_\n"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(fmt(v, digits).replace("|", "\\|") for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
