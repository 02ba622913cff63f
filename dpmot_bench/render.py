"""Rendering shared by every layer that writes results: markdown tables from pandas frames and
seaborn / matplotlib figures written as PNG through atomic writes. It imports only the core (io), so
bench/, theory/ and report/ can all use it without importing each other.

pandas' ``DataFrame.to_markdown`` needs the ``tabulate`` package, which is not a dependency; the table
helpers are the few lines it takes to print a pipe table with formatted numbers (and ``mean ± ci`` cells).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")
__all__ = ["plt", "sns", "save", "fmt", "with_ci", "markdown_table"]


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


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
