"""Means with confidence intervals over seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the half-width of a Student-t confidence interval (NaN half-width for one value)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), 0
    if len(values) == 1:
        return float(values[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half), len(values)


def summarise(frame: pd.DataFrame, by: list[str], metrics: list[str], level: float = 0.95) -> pd.DataFrame:
    """One row per group of ``by``: for each metric its mean and CI half-width (``<metric>_ci``)."""
    metrics = [m for m in metrics if m in frame.columns]
    records = []
    for keys, group in frame.groupby(by, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        record = dict(zip(by, keys))
        for metric in metrics:
            mean, half, n = mean_ci(group[metric].to_numpy(dtype=float), level)
            record[metric], record[f"{metric}_ci"] = mean, half
        record["n_seeds"] = len(group)
        records.append(record)
    return pd.DataFrame.from_records(records)
