"""``dpmot report``: run a suite (resumable) and write ``index.md``, figures, ``results.csv``,
``results.json`` and ``claims.json`` into the output directory. Each file is written atomically and
``index.md`` last."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..bench.runner import LOCK_NAME, run_suite
from ..bench.suites import Suite
from ..data import get_dataset
from ..devices import as_device
from ..errors import CorruptFileError
from ..io import ensure_writable_dir, exclusive_lock, remove_stale_temps, write_json, write_text
from ..ot import native
from ..provenance import provenance
from ..render import markdown_table, with_ci
from ..stats import summarise
from ..threads import check_threads, cpu_threads
from . import figures, ot_section
from .claims import claims_table

SAMPLE_METRICS = ["w2", "mmd2", "max_weight_error", "spread_ratio", "fd", "kid_mean", "high_quality", "between_modes", "outliers", "modes_covered", "kl", "tv", "mmr",
                  "precision", "recall", "density", "coverage", "copy_rate_train", "copy_rate_targets",
                  "ratio_copy_rate_train", "ratio_copy_rate_targets", "baseline_copy_rate", "nn_train_median",
                  "nn_targets_median", "nfe_spent", "sample_seconds", "per_sample_ms"]


def _frame(rows: list[dict], task: str) -> pd.DataFrame:
    return pd.DataFrame([r for r in rows if r["task"] == task])


def _pivot(summary: pd.DataFrame, dataset: str, metric: str) -> pd.DataFrame:
    """Methods as rows, NFE as columns, ``mean ± ci`` cells."""
    part = with_ci(summary[summary.dataset == dataset], [metric])
    table = part.pivot(index="method", columns="nfe", values=metric)
    table.columns = [f"NFE {c}" for c in table.columns]
    return table.reset_index()


class Report:
    def __init__(self, suite: Suite, out: Path, rows: list[dict], seconds: float, device: str, user=None,
                 threads: int = 1, jobs: int = 1):
        self.suite, self.out, self.rows, self.seconds, self.device = suite, out, rows, seconds, device
        self.threads, self.jobs = threads, jobs
        self.user = user  # a UserData: the user's dataset and model (dpmot reproduce, report --data)
        self.fig_dir = out / "figures"
        self.work = out / "work"
        self.parts: list[str] = []
        self.samples = _frame(rows, "sample")
        self.gmm = {d: self.dataset(d).mixture is not None for d in suite.datasets}
        self.summary = (summarise(self.samples, ["dataset", "method", "nfe"], SAMPLE_METRICS)
                        if not self.samples.empty else pd.DataFrame())
        floors = _frame(rows, "floor")
        self.floors = dict(zip(floors.dataset, floors.floor)) if not floors.empty else {}

    def dataset(self, name: str):
        if self.user is not None and name == self.user.name:
            return self.user.dataset
        return get_dataset(name)

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, path: Path, caption: str) -> None:
        self.add(f"![{caption}](figures/{path.name})\n\n_{caption}_")

    # ------------------------------------------------------------------------------------ sections
    def header(self) -> None:
        s = self.suite
        record = provenance(device=self.device)
        command = (f"`{s.regenerate}`" if s.regenerate else
                   f"`dpmot report --suite {s.name} --out {self.out}` (`make report` for the quick suite)")
        self.add(f"# dpmot-bench report: suite `{s.name}`\n\n"
                 f"Regenerate with {command}. {s.description}.\n\n"
                 "All numbers below come from this run; nothing is copied from papers. Means are over seeds "
                 "with 95% Student-t confidence intervals (`mean ± half-width`). DPM-OT's one-off cost (latents + "
                 "OT fit) is reported separately from the per-sample cost; NFE counts denoiser calls actually "
                 "spent (asserted equal to the NFE asked).\n\n## Setup\n")
        if s.datasets:
            items = {"datasets": ", ".join(s.datasets), "samplers": ", ".join(s.samplers),
                     "NFE": ", ".join(map(str, s.nfes)), "seeds": ", ".join(map(str, s.seeds)),
                     "samples per cell": ", ".join(f"{d}: {s.samples_for(d)}" for d in s.datasets)}
        else:  # a UniBench-small suite alone
            bench = s.unibench
            items = {"datasets": ", ".join(bench.datasets), "NFE": ", ".join(map(str, sorted(bench.nfes))),
                     "seeds": ", ".join(map(str, bench.seeds or s.seeds)),
                     "samples per cell": f"{bench.prompts} prompts x {bench.samples} samples"}
        setup = pd.DataFrame({
            "item": [*items, "device", "wall time", "dpmot-bench", "torch", "assignment kernel", "git commit", "time (UTC)"],
            "value": [*items.values(), self.device, f"{self._compute_minutes():.1f} min of cell time ({self.seconds / 60:.1f} min "
                      f"in this invocation, {self.jobs} process(es) x {self.threads} CPU thread(s))", __version__, record["torch"],
                      native.status(), record["git_commit"], record["time_utc"]]})
        self.add(markdown_table(setup))
        if self.user is not None:
            exp = self.user.experiment
            space = ("InceptionV3 pool3 features (FID), with KID" if exp.features == "inception" else
                     "the raw rows (comparable within this report only; give Inception weights for FID)")
            reference = (f"the statistics in `{Path(exp.fid_stats).name}`" if exp.fid_stats else "the train split")
            self.add(f"Model: {self.user.choice.description}. Data: {self.user.dataset.description}. Quality: "
                     f"Frechet distance in {space} against {reference}, next to its floor (the held-out split "
                     "measured the same way); precision / recall / density / coverage (k = 3) in the same "
                     "features" + ("; mode-mixture ratio from the given classifier (lambda rule of the "
                                   "reference code)" if exp.classifier else "; no classifier given, so no "
                                   "mode-mixture ratio") + ".")
        elif s.datasets:
            self.add("Models: the exact denoiser for the Gaussian mixtures (score error exactly zero); for `digits` "
                     "a small UNet trained on the train split (`dpmot train`). Quality: W2 to fresh true samples "
                     "(GMMs; exact `ot.emd2`) and Frechet distance on the features of a digits classifier trained on "
                     "the train split (digits), each next to its floor: the same metric for true data.")

    def _compute_minutes(self) -> float:
        frame = pd.DataFrame(self.rows)
        return float(frame.groupby("cell")["wall_seconds"].first().sum()) / 60 if not frame.empty else 0.0

    def comparisons(self):
        """The run's paired comparisons (report/decide.py): reference statistics of the train features
        for FD, the mixtures' kernel energy for the MMD^2 margin."""
        from ..metrics import default_bandwidth, feature_statistics, mixture_kernel_constant
        from .decide import Comparisons

        reference, energy = {}, {}
        for d in self.suite.datasets:
            data = self.dataset(d)
            if data.mixture is not None:
                energy[d] = mixture_kernel_constant(data.mixture, default_bandwidth(data.mixture))
            elif self.user is not None and d == self.user.name:
                reference[d] = self.user.reference_statistics
            elif d == "digits":
                from ..metrics import get_digits_classifier

                import torch

                with torch.no_grad():
                    reference[d] = feature_statistics(get_digits_classifier().features(data.data("train")[0]))
        mixing = {d: "between_modes" if self.gmm[d] else "mmr" for d in self.suite.datasets}
        return Comparisons(self.work, self.samples, self.suite.seeds, reference, energy, mixing)

    def claims(self) -> None:
        if self.summary.empty:
            return
        fits = _frame(self.rows, "ot-fit")
        bound = _frame(self.rows, "bound")
        table = claims_table(self.summary, self.floors, self.gmm, fits, bound if not bound.empty else None,
                             nfe=self.suite.claim_nfe, reference_nfe=self.suite.reference_nfe,
                             comparisons=self.comparisons(), latent_weight_errors=self._latent_weight_errors())
        write_json(self.out / "claims.json", self._claims_record(table))
        decided_by = self._decided_by(table.attrs.get("tests", {}))
        self.add("## Paper claims\n\nEach verdict is computed from this run by the stated test; the DPM-OT paper's "
                 "own tables were not available, so its numbers are \"not available\" and are not compared. "
                 "Quality and mixing claims are paired comparisons (every arm ran on the same seeds and the same "
                 "source noise, row by row): the measurement gives the difference a - b with its 90% interval "
                 "(the one-sided test at alpha 0.05 it inverts), the margin, the p-value and the power; "
                 "*undecided* means this run cannot decide and says how many samples per cell would give 80% "
                 "power. How to read a verdict: README, \"Reading a verdict\"." + (decided_by[0] if decided_by
                                                                                   else "") + "\n")
        if decided_by:
            table[f"{self.suite.decided_by} suite"] = [decided_by[1](row) for row in table.itertuples()]
        self.add(markdown_table(table))

    def _latent_weight_errors(self) -> dict:
        """GMM dataset -> the largest mode-weight error of the default preset's N clean latents (the first N
        held-out rows, as :mod:`~dpmot_bench.ot.latents` takes them)."""
        from ..metrics.modes import per_mode_statistics

        errors = {}
        for d in self.suite.datasets:
            data = self.dataset(d)
            if data.mixture is not None:
                rows = data.data("heldout", self.suite.latents_for(d))[0]
                errors[d] = per_mode_statistics(rows, data.mixture)["max_abs_weight_error"]
        return errors

    def _claims_record(self, table: pd.DataFrame) -> dict:
        """claims.json: every claim's verdict and the records of its paired tests, with where they came from
        (what a smaller suite's report reads to point to this one's results)."""
        tests = table.attrs.get("tests", {})
        record = provenance(device=self.device)
        return {"suite": self.suite.name, "git_commit": record["git_commit"], "time_utc": record["time_utc"],
                "cell_minutes": self._compute_minutes(), "threads": self.threads, "jobs": self.jobs,
                "seeds": list(self.suite.seeds),
                "samples_per_cell": {d: self.suite.samples_for(d) for d in self.suite.datasets},
                "claims": [{"claim": row.claim, "verdict": row.verdict,
                            "tests": [{k: v for k, v in t.items() if not k.startswith("_")} for t in tests.get(row.claim, [])]}
                           for row in table.itertuples()]}

    def _decided_by(self, ours: dict):
        """(paragraph, row -> cell text) pointing to the results of ``suite.decided_by`` (its claims.json in
        the report folder beside this one), or None when the suite names none; ``ours``: claim -> this run's
        paired-test records."""
        name = self.suite.decided_by
        if name is None:
            return None
        path = self.out.parent / name / "claims.json"
        command = f"`dpmot report --suite {name} --out {path.parent}`"
        if not path.is_file():
            return (f" This run's undecided tests are the {name} suite's to decide ({command}); it has not been "
                    f"run beside this report (no `{path}`).", lambda row: "not run")
        try:
            other = json.loads(path.read_text())
            claims = {c["claim"]: c for c in other["claims"]}
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptFileError(f"{path} is not a claims file of a dpmot report ({error})") from None

        def result(t: dict, against: bool) -> str:
            name = f"{t['dataset']} {t['metric']}" + (f" against {t['b']}" if against and t.get("b") else "")
            if "estimate" not in t:
                return f"{name}: {t['verdict']}"
            return (f"{name}: {t['verdict']} ({t['estimate']:.3g} [{t['low']:.3g}, {t['high']:.3g}], n "
                    f"{t['n_per_cell']}/cell" + (f"; 80% power needs n {t['n_for_80']}" if t["verdict"] ==
                                                 "undecided" and t.get("n_for_80") else "") + ")")

        def cell(row) -> str:
            theirs = claims.get(row.claim)
            if theirs is None:
                return "not in that run"
            mine = ours.get(row.claim, [])
            # the same comparison, or (the best ODE sampler may differ: that run has more samplers) the same
            # dataset and metric when that run has one test of it
            by_pair: dict = {}
            for t in theirs["tests"]:
                by_pair.setdefault((t.get("dataset"), t.get("metric")), []).append(t)
            parts, used = [], set()
            for m in (m for m in mine if m.get("verdict") == "undecided"):
                pair = by_pair.get((m.get("dataset"), m.get("metric")), [])
                same = [t for t in pair if (t.get("a"), t.get("b")) == (m.get("a"), m.get("b"))]
                match = same[0] if same else pair[0] if len(pair) == 1 else None
                if match is None:
                    parts.append(f"{m['dataset']} {m['metric']}: not in that run")
                else:
                    used.add(id(match))
                    parts.append(result(match, match.get("b") != m.get("b")))
            text = theirs["verdict"] + (": where this run is undecided, " + "; ".join(parts) if parts else "")
            tested = {(m.get("dataset"), m.get("metric"), m.get("b")) for m in mine}
            beyond = [t for t in theirs["tests"] if id(t) not in used and t.get("verdict") in ("refuted", "undecided")
                      and (t.get("dataset"), t.get("metric"), t.get("b")) not in tested]
            if beyond:
                text += ("; " if parts else ": ") + "beyond this run's tests, " + "; ".join(result(t, True) for t in beyond)
            return text

        seeds, samples = other.get("seeds", []), other.get("samples_per_cell", {})
        return (f" Where this run is undecided, the **{name} suite** decides what it can: column \"{name} suite\", "
                f"from `{path}` ({len(seeds)} seeds; samples per cell "
                + ", ".join(f"{d}: {n}" for d, n in samples.items())
                + f"; {other.get('cell_minutes', float('nan')):.0f} min of cell time on {other.get('threads', '?')} "
                f"thread(s) of this machine; commit {str(other.get('git_commit', '?'))[:7]}, "
                f"{other.get('time_utc', '?')}; regenerate with {command}).", cell)

    def quality(self) -> None:
        if self.summary.empty:
            return
        self.add("## Quality against NFE\n")
        floors = pd.DataFrame({"dataset": list(self.floors), "floor": list(self.floors.values())})
        features = ("classifier" if self.user is None else
                    "Inception" if self.user.experiment.features == "inception" else "raw-row")
        for gmm, metric, label in ((True, "mmd2", "unbiased MMD^2 to the mixture (closed-form kernel means; 0 for "
                                                  "true samples)"),
                                   (True, "w2", "W2 to true samples"), (False, "fd", f"Frechet distance ({features} features)")):
            part = self.samples[[self.gmm[d] == gmm for d in self.samples.dataset]]
            if part.empty or metric not in part:
                continue
            unbiased = metric == "mmd2"  # 0 in expectation for true samples: no floor, and it can be < 0
            path = figures.metric_vs_nfe(part, metric, label, self.fig_dir / f"quality-{metric}.png",
                                         floor=None if unbiased else floors, log_y=not unbiased)
            self.figure(path, f"{label} against NFE (mean, 95% CI over seeds)"
                        + ("" if unbiased else "; dashed: true-data floor"))
            for d in sorted(part.dataset.unique()):
                self.add(f"**{d}**: {label}" + ("" if unbiased else f" (floor {self.floors.get(d, math.nan):.3g})") + "\n")
                self.add(markdown_table(_pivot(self.summary, d, metric)))
                if metric == "fd" and "kid_mean" in self.summary and self.summary.kid_mean.notna().any():
                    self.add(f"**{d}**: KID (unbiased polynomial-kernel MMD^2 in the same features, subsets as "
                             "torch-fidelity's)\n")
                    self.add(markdown_table(_pivot(self.summary, d, "kid_mean")))

    def mode_mixture(self) -> None:
        if self.summary.empty:
            return
        self.add("## Mode mixture\n\nGaussian mixtures: share of samples *between modes* (outside every mode's "
                 "3-std ball but within that radius of the segment joining the two nearest modes; PacGAN "
                 "convention extended to d dims by the chi-square quantile). Digits: mode-mixture ratio of the "
                 "reference code, the share of samples whose classifier gives >= 2 classes softmax >= 0.2.\n")
        for gmm, metric, label in ((True, "between_modes", "share between modes"), (False, "mmr", "MMR (lambda 0.2)")):
            part = self.samples[[self.gmm[d] == gmm for d in self.samples.dataset]]
            if part.empty or metric not in part:
                continue
            path = figures.metric_vs_nfe(part, metric, label, self.fig_dir / f"mixing-{metric}.png", log_y=False)
            self.figure(path, f"{label} against NFE")
            for d in sorted(part.dataset.unique()):
                self.add(f"**{d}**: {label}\n")
                self.add(markdown_table(_pivot(self.summary, d, metric)))
        gmm_part = self.summary[[self.gmm[d] for d in self.summary.dataset]]
        if not gmm_part.empty:
            nfe = self.suite.figure_nfe
            cols = ["dataset", "method", "high_quality", "modes_covered", "kl", "tv", "max_weight_error", "spread_ratio"]
            cols = [c for c in cols if c in gmm_part]
            self.add(f"Mode statistics at NFE {nfe} (high-quality share, modes covered, KL and TV of the "
                     "per-mode histogram from the true weights, the largest per-mode weight error, and the "
                     "within-mode spread as a ratio to the true spread: 1 for true samples):\n")
            self.add(markdown_table(with_ci(gmm_part[gmm_part.nfe == nfe][cols + [f"{c}_ci" for c in cols[2:]]],
                                            cols[2:])))
        mmr_cols = [c for c in self.samples.columns if c.startswith("mmr_")]
        if mmr_cols:
            part = self.samples[(self.samples.dataset == "digits") & (self.samples.nfe == self.suite.figure_nfe)]
            curve = part.groupby("method")[mmr_cols].mean()
            curve.columns = [c.removeprefix("mmr_") for c in curve.columns]
            self.add(f"Digits MMR over lambda at NFE {self.suite.figure_nfe} (mean over seeds):\n")
            self.add(markdown_table(curve.reset_index()))

    def memorisation(self) -> None:
        if self.summary.empty:
            return
        nfe = self.suite.figure_nfe
        part = self.summary[self.summary.nfe == nfe]
        cols = ["copy_rate_train", "copy_rate_targets", "ratio_copy_rate_targets", "baseline_copy_rate",
                "nn_train_median", "nn_targets_median"]
        self.add("## Memorisation and novelty\n\nNearest-neighbour distance of each sample to the training set "
                 "and (DPM-OT) to the OT targets, the latents it maps onto. A sample is a copy when its distance "
                 "is below the 1% quantile of held-out-to-train distances (so fresh true data scores ~1%: "
                 "`baseline_copy_rate`); `ratio_copy_rate` uses the ratio test d1 < d2 / 3 instead. "
                 f"At NFE {nfe}:\n")
        self.add(markdown_table(with_ci(part[["dataset", "method", *cols, *[f"{c}_ci" for c in cols]]], cols)))
        for d in self.suite.datasets:
            values = {}
            for path in sorted((self.work / "samples").glob(f"sample-{d}-*.npz")):
                with np.load(path, allow_pickle=False) as arrays:
                    name = path.stem.removeprefix(f"sample-{d}-")
                    values[f"{name} (to train)"] = arrays["nn_to_train"]
                    if "nn_to_targets" in arrays:
                        values[f"{name} (to OT targets)"] = arrays["nn_to_targets"]
            if values:
                values = {k: v for k, v in values.items() if k.startswith("dpm-ot") or "euler" in k or "heun (" in k}
                values["held-out data (to train)"] = self._heldout_nn(d)
                path = figures.histograms(values, "nearest-neighbour distance", f"{d}: NN distances at NFE {nfe}",
                                          self.fig_dir / f"nn-{d}.png", reference="held-out data (to train)")
                self.figure(path, f"{d}: nearest-neighbour distances of samples vs held-out data")

    def _heldout_nn(self, dataset: str) -> np.ndarray:
        from ..metrics import memorisation

        stored = self.work / "samples" / f"heldout-nn-{dataset}.npz"  # written by the floor cell
        if stored.exists():
            with np.load(stored, allow_pickle=False) as arrays:
                return arrays["nn_to_train"]

        if self.user is not None and dataset == self.user.name and self.user.experiment.features != "raw":
            return memorisation(self.user.features_of("heldout"), train=self.user.features_of("train"))["nn_to_train"]
        data = self.dataset(dataset)
        return memorisation(data.data("heldout")[0], train=data.data("train")[0])["nn_to_train"]

    def latent_count(self) -> None:
        curve = _frame(self.rows, "latent-count")
        if curve.empty:
            return
        self.add(f"## DPM-OT against its number of latents\n\nDPM-OT (default preset, tail NFE {self.suite.sweep_nfe}) "
                 "over the first N held-out latents. A map onto N latents can at best reproduce the N-point "
                 "latent measure; `mmd2_floor_n` is the unbiased MMD^2 a sampler emitting exact copies of the N "
                 "clean points would score in expectation (their empirical measure against the mixture). Where "
                 "DPM-OT's MMD^2 sits on that floor, the latent count limits it; below it, the tail sampler "
                 "spreads the samples beyond the stored points.\n")
        path = figures.latent_curve(curve, self.fig_dir / "latent-count.png")
        self.figure(path, "DPM-OT's MMD^2 against the number of latents N, and the finite-N floor")
        cols = ["mmd2", "mmd2_floor_n", "w2", "high_quality", "copy_rate_targets"]
        summary = summarise(curve, ["dataset", "n_latents"], [c for c in cols if c in curve])
        self.add(markdown_table(with_ci(summary, [c for c in cols if c in curve])))

    def sigma_star(self) -> None:
        sweep = _frame(self.rows, "sigma-star")
        if sweep.empty:
            return
        from ..samplers.dpmot import PRESETS, data_range

        defaults = []
        for dataset in sorted(sweep["dataset"].unique()):
            data = self.dataset(dataset)
            low, high = data_range(data)
            level = PRESETS["default"].sigma_star_for(data)
            defaults.append(f"{dataset} {level:.3g} (sigma_rel {level / (high - low):.3g})")
        self.add("## The sigma_star trade-off (novelty against quality)\n\nDPM-OT (default preset) with the "
                 "latent noise level sigma_star swept (`sigma_rel` = sigma_star / data range), tail NFE "
                 f"{self.suite.sweep_nfe}. The default preset's own sigma_star (3 x the median nearest-neighbour "
                 f"spacing of the held-out points / sqrt(d)): {'; '.join(defaults)}. Small sigma_star: the OT "
                 "jump lands next to stored data (quality of the data itself, but copies); large: more "
                 "novelty, more work left to the tail sampler.\n")
        sweep = sweep.assign(quality=[r["w2"] if self.gmm[r["dataset"]] else r["fd"] for _, r in sweep.iterrows()])
        path = figures.tradeoff(sweep, self.fig_dir / "sigma-star.png")
        self.figure(path, "quality (W2 / FD, left) and copy rate to the OT targets (right) against sigma_star")
        cols = ["quality", "copy_rate_targets", "copy_rate_train", "nn_targets_median"]
        summary = summarise(sweep, ["dataset", "sigma_rel", "sigma_star"], cols)
        self.add(markdown_table(with_ci(summary, cols)))

    def costs(self) -> None:
        fits = _frame(self.rows, "ot-fit")
        if not fits.empty:
            self.add("## Costs\n\nDPM-OT's one-off cost: fitting the semi-discrete OT map to the latents "
                     "(mass errors measured with an independent Monte-Carlo sample):\n")
            cols = [c for c in ["dataset", "method", "solver", "n_targets", "dim", "iterations", "fit_seconds",
                                "l1_mass_error", "max_rel_mass_error", "empty_cells"] if c in fits]
            self.add(markdown_table(fits[cols]))
        if not self.summary.empty:
            part = self.summary[self.summary.nfe == self.suite.figure_nfe]
            self.add(f"Per-sample cost at NFE {self.suite.figure_nfe} (sampling only, {self.device}):\n")
            self.add(markdown_table(with_ci(part[["dataset", "method", "nfe_spent", "per_sample_ms",
                                                  "per_sample_ms_ci"]], ["per_sample_ms"])))

    def samples_figures(self) -> None:
        nfe = self.suite.figure_nfe
        files = sorted((self.work / "samples").glob("sample-*.npz"))
        if not files:
            return
        self.add(f"## Samples at NFE {nfe}\n")
        for d in self.suite.datasets:
            samples = {}
            for path in files:
                if path.stem.startswith(f"sample-{d}-"):
                    with np.load(path, allow_pickle=False) as arrays:
                        samples[path.stem.removeprefix(f"sample-{d}-")] = arrays["x"]
            if not samples:
                continue
            order = sorted(samples, key=lambda m: (not m.startswith("dpm-ot"), m))
            samples = {m: samples[m] for m in order}
            data = self.dataset(d)
            if data.dim == 2:
                reference = data.sample(len(next(iter(samples.values()))), seed=99)[0].numpy()
                path = figures.scatter_grid(samples, reference, f"{d}: samples at NFE {nfe}",
                                            self.fig_dir / f"samples-{d}.png")
            elif len(data.shape) == 3 and data.value_range is not None:
                path = figures.image_grid({"held-out data": data.data("heldout", 16)[0].numpy(), **samples},
                                          self.fig_dir / f"samples-{d}.png", data.shape, data.value_range)
            else:
                continue
            self.figure(path, f"{d}: samples of every sampler at NFE {nfe}")
        for d in self.suite.datasets:
            map_path = self.work / "maps" / f"{d}-dpm-ot.npz"
            sample_path = self.work / "samples" / f"sample-{d}-dpm-ot.npz"
            if self.dataset(d).dim == 2 and map_path.exists() and sample_path.exists():
                from ..ot import SemiDiscreteOT

                with np.load(sample_path, allow_pickle=False) as arrays:
                    x = arrays["x"]
                path = figures.power_cells(SemiDiscreteOT.load(map_path), x, self.fig_dir / f"cells-{d}.png")
                self.figure(path, f"{d}: power cells of the fitted map in source space (left) and the latents "
                                  "with DPM-OT's final samples (right)")

    def training(self) -> None:
        loss = _frame(self.rows, "train-loss")
        if loss.empty:
            return
        table = loss.pivot_table(index=["dataset", "sigma"], columns="model", values="loss").reset_index()
        self.add("## Trained against exact denoisers\n\nEDM-weighted denoising loss of the trained network and of "
                 "the exact denoiser (its irreducible loss) on held-out draws:\n")
        self.add(markdown_table(table))

    def classifier(self) -> None:
        acc = _frame(self.rows, "classifier")
        if not acc.empty:
            self.add(f"Digits feature classifier (trained on the train split only): held-out accuracy "
                     f"{float(acc.heldout_accuracy.iloc[0]):.4f}.")

    def ot_engine(self) -> None:
        parts = {task: _frame(self.rows, task) for task in ("ot-kernel", "ot-solver", "ot-scale")}
        if all(p.empty for p in parts.values()):
            return
        self.add("## Semi-discrete OT engine\n")
        self.add(ot_section.report_section(parts["ot-kernel"], parts["ot-solver"], parts["ot-scale"], self.fig_dir))

    def bound(self) -> None:
        rows = _frame(self.rows, "bound")
        if rows.empty:
            return
        from ..theory import fit_rates, plot_bound, summarise_rows

        # The checks' own rows, without the harness's bookkeeping columns.
        rows = rows.drop(columns=["task", "method", "cell", "level", "wall_seconds", "torch", "git_commit",
                                  "device"], errors="ignore").to_dict("records")
        configs = pd.DataFrame(summarise_rows(rows))
        rates = pd.DataFrame(fit_rates(rows))
        self.add("## Error bound\n\nStatements, proofs and the list of rigorous versus estimated constants: "
                 "`theory/README.md`. **Theorem B** bounds DPM-OT's error at the end of the tail by "
                 "E_OT (cell-mass error of the map) + E_disc (tail discretisation) + E_den (denoiser error) + "
                 "E_lat (finitely many latents), each propagated along the tail; **Theorem A** is the follow-up "
                 "paper's two-term form (score-matching term + potential term) with constants derived for this "
                 "setting, plus the latent term that form leaves out. Left side: W2 of the generated samples to "
                 "the data at sigma_end (estimated against a reference sample).\n")
        main = configs[configs["tau"].isna() | (configs["tau"] == 0)] if "tau" in configs else configs
        cols = ["dataset", "model", "sweep", "n_latents", "sigma_star", "sampler", "nfe", "ot_iters", "lhs", "e_ot",
                "e_disc_path", "e_den_path", "e_lat", "rhs_bound", "ratio_bound", "holds_bound",
                "thmA_log10_rhs_rig", "thmA_holds_rig"]
        held = main["holds_bound"].dropna().astype(bool) if "holds_bound" in main else pd.Series([], dtype=bool)
        self.add(f"Theorem B holds in {int(held.sum())} of {len(held)} configurations (every seed). "
                 "`ratio_bound` = left / right side (tightness); `thmA_log10_rhs_rig` = log10 of Theorem A's "
                 "right side with rigorous constants: astronomically large for multimodal data, which "
                 "`theory/flow.md` (F4) proves unavoidable for any bound through the flow's Lipschitz constant.\n")
        self.add(markdown_table(main[[c for c in cols if c in main]]))
        if not rates.empty:
            self.add("Predicted against measured rates (log-log slopes with 95% CIs):\n")
            self.add(markdown_table(rates[[c for c in ("dataset", "model", "label", "slope", "slope_ci", "predicted",
                                                       "agrees") if c in rates]]))
        for path in plot_bound(rows, self.fig_dir):
            self.figure(path, f"error bound: {path.stem.replace('-', ' ')}")

    def unibench(self) -> None:
        rows = _frame(self.rows, "unibench")
        if not rows.empty and self.suite.unibench is not None:
            from .unibench import write_section

            write_section(self, rows)

    def write(self) -> Path:
        for section in (self.header, self.claims, self.quality, self.mode_mixture, self.memorisation,
                        self.latent_count, self.sigma_star, self.costs, self.samples_figures, self.unibench,
                        self.training, self.classifier, self.ot_engine, self.bound):
            section()
        frame = pd.DataFrame(self.rows)
        write_text(self.out / "results.csv", frame.to_csv(index=False))
        write_json(self.out / "results.json", {"suite": self.suite.name, "provenance": provenance(
            device=self.device, wall_seconds=self.seconds), "rows": self.rows})
        index = self.out / "index.md"
        write_text(index, "\n".join(self.parts))
        return index


def build_report(suite: Suite, out: str | Path, *, resume: bool = False, device="cpu", progress=True,
                 user=None, threads: int = 1, jobs: int = 1) -> Path:
    """Run ``suite`` into ``out`` and write the report there. Temp files that killed runs left anywhere
    under ``out`` are removed first (those of a live concurrent run are kept), so an interrupted run
    resumed with ``resume`` ends with exactly the files of an uninterrupted one. One run at a time per
    folder. ``threads`` and ``jobs``: as in :func:`~dpmot_bench.bench.runner.run_suite` (``threads`` also
    for the report's own statistics: bootstraps, figures)."""
    device = as_device(device)  # before anything is created
    check_threads(threads)
    check_threads(jobs, "jobs")
    out = ensure_writable_dir(Path(out))
    with exclusive_lock(out / "work" / LOCK_NAME, f"report folder {str(out)!r}", wait=False), cpu_threads(threads):
        remove_stale_temps(out)
        ensure_writable_dir(out / "figures")
        start = time.perf_counter()
        rows = run_suite(suite, out, resume=resume, device=device, progress=progress, user=user, threads=threads,
                         jobs=jobs)
        return Report(suite, out, rows, time.perf_counter() - start, str(device), user, threads, jobs).write()

