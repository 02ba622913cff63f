"""Paired, powered decisions for the claims table.

Every arm of a comparison ran on the same seeds, and row i of every arm's samples comes from the same
source noise (``SampleNoise(seed, ., i)``), so arms are compared as paired differences ``a - b``
(:func:`~dpmot_bench.stats.paired_difference`): per-sample values (MMD^2 contributions, mode and mixing
indicators) by the hierarchical paired bootstrap over seeds and samples, whole-sample statistics (the
Frechet distance of the samples' features to the train features) by the same bootstrap with the
statistic recomputed, per-seed scalars (W2) by the paired t interval. Tests (alpha = 0.05, one-sided,
reported with the two-sided 90% interval they invert):

- "reaches" (quality at fewer NFE): non-inferiority, ``a - b < margin``;
- "better" / "less mixing": superiority, ``a - b < 0``;
- margins: 5% of the reference arm's value (W2, FD), and for the unbiased MMD^2 (which is 0 for true
  samples, so a relative margin would be 0) 5% of ``E k(y, y')`` under the mixture, the squared norm of
  its kernel mean embedding: a discrepancy of 5% of the distribution's own kernel energy.

Verdicts: supported, refuted (the interval lies on the other side), undecided (it straddles the boundary:
this run cannot decide); and for superiority where every sample of both arms scores 0 (neither mixes a
single sample), tie: there is nothing to improve on, and the claim's verdict leaves it out. ``power``
is the chance the test says "supported" if the two arms were in truth equal (non-inferiority; for
superiority at an effect of one margin), and ``n_for_80%`` the samples per cell that would give 80%
power at the measured standard error (se proportional to 1/sqrt(n)).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from ..bench.context import paired_path
from ..stats import one_sided_test, paired_difference, power

ALPHA, MARGIN, N_BOOT = 0.05, 0.05, 400


def _arm(work: Path, dataset: str, method: str, nfe: int, seeds, key: str) -> list[np.ndarray] | None:
    """Per-seed per-sample arrays ``key`` of one arm, or None if any seed's file lacks it."""
    arrays = []
    for seed in seeds:
        path = paired_path(work, dataset, method, nfe, seed)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                return None
            arrays.append(archive[key].astype(np.float64))
    return arrays


class Comparisons:
    """Paired differences between arms of one run (cached), from ``work/paired`` and the sample rows."""

    def __init__(self, work: Path, samples, seeds, reference_stats=None, kernel_energy=None, mixing=None):
        self.work, self.samples, self.seeds = work, samples, tuple(seeds)
        self.mixing = mixing or {}  # dataset -> the summary column of its mixing share (between_modes, mmr)
        self.reference_stats = reference_stats or {}  # dataset -> (mu, cov) of the train features (FD)
        self.kernel_energy = kernel_energy or {}  # dataset -> E k(y, y') of its mixture (MMD^2 margin)
        self._cache: dict = {}

    def difference(self, dataset: str, a: tuple[str, int], b: tuple[str, int], metric: str):
        key = (dataset, a, b, metric)
        if key not in self._cache:
            self._cache[key] = self._difference(dataset, a, b, metric)
        return self._cache[key]

    def _difference(self, dataset, a, b, metric):
        if metric == "w2":  # a per-seed scalar
            values = []
            for method, nfe in (a, b):
                part = self.samples[(self.samples.dataset == dataset) & (self.samples.method == method)
                                    & (self.samples.nfe == nfe)].set_index("seed")
                if metric not in part or not set(self.seeds) <= set(part.index):
                    return None
                values.append(part.loc[list(self.seeds), metric].to_numpy(dtype=float))
            return paired_difference(*values)
        key = "features" if metric == "fd" else metric
        arms = [_arm(self.work, dataset, method, nfe, self.seeds, key) for method, nfe in (a, b)]
        if any(arm is None for arm in arms):
            return None
        if metric == "fd":
            if dataset not in self.reference_stats:
                return None
            from ..metrics import feature_statistics, frechet_distance_from_stats

            mu, cov = self.reference_stats[dataset]

            def fd(rows):
                return frechet_distance_from_stats(*feature_statistics(rows), mu, cov, method="eigh")
            return paired_difference(arms[0], arms[1], statistic=fd, n_boot=N_BOOT)
        return paired_difference(arms[0], arms[1], n_boot=2000)

    def reference_value(self, dataset: str, arm: tuple[str, int], metric: str) -> float | None:
        part = self.samples[(self.samples.dataset == dataset) & (self.samples.method == arm[0])
                            & (self.samples.nfe == arm[1])]
        if metric not in part or part[metric].isna().all():
            return None
        return float(part[metric].mean())

    def margin(self, dataset: str, reference: tuple[str, int], metric: str) -> float | None:
        if metric == "mmd2":
            energy = self.kernel_energy.get(dataset)
            return None if energy is None else MARGIN * energy
        column = {"mixed": self.mixing.get(dataset)}.get(metric, metric)
        value = None if column is None else self.reference_value(dataset, reference, column)
        return None if value is None else MARGIN * abs(value)

    def n_per_cell(self, dataset: str) -> int | None:
        part = self.samples[self.samples.dataset == dataset]
        return int(part["n"].iloc[0]) if "n" in part and len(part) else None


def decide(comparisons: Comparisons, dataset: str, a: tuple[str, int], b: tuple[str, int], metric: str,
           kind: str) -> dict | None:
    """One test: ``kind`` "reaches" (non-inferiority within the margin) or "better" (superiority)."""
    diff = comparisons.difference(dataset, a, b, metric)
    margin = comparisons.margin(dataset, b, metric)
    if diff is None or margin is None or not math.isfinite(diff.se) or (kind == "reaches" and not margin > 0):
        return None
    n = comparisons.n_per_cell(dataset)
    record = {"dataset": dataset, "a": f"{a[0]}@{a[1]}", "b": f"{b[0]}@{b[1]}", "metric": metric, "kind": kind,
              "margin": margin, "n_per_cell": n, "method": diff.method}
    if kind == "better" and margin == 0 and diff.estimate == 0 and diff.se == 0:
        # every sample of both arms scores 0 (e.g. neither arm mixes a single sample): nothing to improve on,
        # no test to run; "tie" is left out of the claim's verdict and shown as such
        return {**record, "estimate": 0.0, "low": 0.0, "high": 0.0, "verdict": "tie", "p_value": math.nan,
                "power": math.nan, "n_for_80": None}
    # reaches: the claim a - b < margin, powered at a true difference 0; better: a - b < 0, powered at a
    # true improvement of one margin (the same formula: the distance from the truth to the boundary)
    test = one_sided_test(diff, "less", -margin if kind == "reaches" else 0.0, alpha=ALPHA)
    if margin > 0:
        test_power = power(margin, diff.se, ALPHA) if diff.se > 0 else 1.0
    else:
        test_power = math.nan  # nothing to improve on (the reference's share is 0)
    z = scipy_stats.norm.ppf(1 - ALPHA) + scipy_stats.norm.ppf(0.8)
    needed = None if n is None or diff.se == 0 or not margin > 0 else math.ceil(n * (z * diff.se / margin) ** 2)
    return {**record, "estimate": diff.estimate, "low": test.low, "high": test.high, "verdict": test.verdict,
            "p_value": test.p_value, "power": test_power, "n_for_80": needed}


def text(result: dict) -> str:
    """``metric a - b = est [low, high] (margin m; p, power)`` for the claims table."""
    if result["verdict"] == "tie":
        return (f"{result['dataset']}: {result['metric']} {result['a']} - {result['b']} = 0 on every sample of "
                "both arms: tie (nothing to improve on; left out of the verdict)")
    return (f"{result['dataset']}: {result['metric']} {result['a']} - {result['b']} = {result['estimate']:.3g} "
            f"[{result['low']:.3g}, {result['high']:.3g}] (margin {result['margin']:.3g}; p {result['p_value']:.2g}; "
            f"power {result['power']:.2f}" + (f"; n for 80% power {result['n_for_80']}" if result.get("n_for_80")
                                              and result["verdict"] == "undecided" else "") + f"): {result['verdict']}")


def combine(verdicts: list[str]) -> str:
    """A claim over datasets / comparisons: supported if all are, refuted if all are, undecided if any
    is and none is refuted, else mixed. Ties (both arms identically 0) are left out."""
    verdicts = [v for v in verdicts if v != "tie"]
    if not verdicts:
        return "not measurable here"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "refuted" for v in verdicts):
        return "refuted"
    if "refuted" not in verdicts:
        return "undecided"
    return "mixed"
