"""The report's UniBench-small section (UPainting, bench/unibench.py): tables per dataset and prompt kind,
the schedule / guidance-input / NFE / DPM-OT studies, a claims table of paired tests, a figure of samples.

Paired tests: every arm ran on the same seeds, prompts and source noise, so ``a - b`` is estimated by the
hierarchical paired bootstrap (stats.paired_difference) whose top-level units are the (seed, prompt)
pairs (a UniBench claim is about prompts: the CI covers the prompt-to-prompt variation, not only the
sampling noise) and whose second level is the prompt's samples. Alignment differences are in shares
(0.05 = five percentage points); the FD claim uses the per-prompt FDs with seeds as the top level.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..bench.unibench import NONE, paired_file, prompts_of
from ..render import markdown_table, with_ci
from ..samplers.prompted import ARMS
from ..stats import equivalence_test, one_sided_test, paired_difference, power, summarise
from . import figures
from .decide import combine

METRICS = ["alignment", "ceiling", "fd", "fd_floor", "precision", "recall", "diversity", "mixed",
           "matcher_similarity", "ms_per_sample", "class_jaccard"]
KEYS = ["dataset", "kind", "sampler", "method", "schedule", "input", "nfe"]
ALPHA, MARGIN = 0.05, 0.05  # one-sided tests at 5%; "little change" = within 5 percentage points of alignment


class UniBenchSection:
    def __init__(self, rows: pd.DataFrame, work: Path, bench, seeds):
        self.rows, self.work, self.bench = rows, work, bench
        self.seeds = tuple(sorted(rows.seed.unique())) if not rows.empty else tuple(seeds)
        self.summary = summarise(rows, KEYS, METRICS)
        self.schedule, self.input = bench.schedules[0], bench.inputs[0]
        self.nfe = bench.nfes[0]

    # ------------------------------------------------------------------------------------- data
    def arm(self, dataset, kind, method, *, sampler="dpmpp-2m", schedule=None, input=None, nfe=None) -> dict:
        schedule = NONE if method == "text" else schedule or self.schedule
        input = NONE if method == "text" else input or self.input
        return {"dataset": dataset, "kind": kind, "sampler": sampler, "method": method, "schedule": schedule,
                "input": input, "nfe": nfe or self.nfe}

    def _arrays(self, fields: dict, key: str) -> list[np.ndarray] | None:
        """Per (seed, prompt) arrays of per-sample values (``key`` aligned / similarity / mixed), or per
        seed arrays of per-prompt values (``fd``); None when a seed's file is missing."""
        out = []
        for seed in self.seeds:
            path = paired_file(self.work, {**fields, "seed": seed})
            if not path.exists():
                return None
            with np.load(path, allow_pickle=False) as archive:
                values = archive[key].astype(np.float64)
            out.extend([values] if key == "fd" else list(values))
        return out

    def difference(self, a: dict, b: dict, key: str = "aligned"):
        arms = [self._arrays(f, key) for f in (a, b)]
        if any(x is None for x in arms) or len(arms[0]) < 2:
            return None
        return paired_difference(arms[0], arms[1], n_boot=2000)

    def has(self, fields: dict) -> bool:
        part = self.rows
        for k, v in fields.items():
            part = part[part[k] == v]
        return not part.empty

    # ------------------------------------------------------------------------------------- claims
    def _result(self, label: str, diff, test, effect: float) -> dict:
        se = diff.se
        return {"comparison": label, "estimate": diff.estimate, "low": test.low, "high": test.high,
                "p": test.p_value, "power": power(effect, se, ALPHA) if se > 0 else 1.0, "verdict": test.verdict}

    @staticmethod
    def _text(r: dict) -> str:
        return (f"{r['comparison']}: {r['estimate']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] (p {r['p']:.2g}; "
                f"power {r['power']:.2f}): {r['verdict']}")

    def claims(self) -> pd.DataFrame:
        datasets = sorted(self.rows.dataset.unique())
        kinds = [k for k in self.bench.kinds if k in set(self.rows.kind)]
        lines = []

        def add(claim, test_text, results, verdict=None):
            verdict = verdict or combine([r["verdict"] for r in results])
            lines.append({"claim": claim, "test": test_text,
                          "measured (a - b [90% CI])": "; ".join(self._text(r) for r in results) or "not run",
                          "verdict": verdict if results else "not measurable here"})

        # 1. the combination beats either alone on complex prompts (alignment)
        results = []
        for d in datasets:
            for kind in (k for k in kinds if k.startswith("complex")):
                for other in ("text", "matcher"):
                    diff = self.difference(self.arm(d, kind, "both"), self.arm(d, kind, other))
                    if diff is not None:
                        test = one_sided_test(diff, "greater", 0.0, alpha=ALPHA)
                        results.append(self._result(f"{d} {kind}: both - {other}", diff, test, MARGIN))
        add("On complex prompts, text conditioning + matcher guidance (UPainting) aligns better than either alone",
            "paired superiority of alignment, one-sided 5%, power at +5 points", results)
        # 2. little change on simple prompts
        results = []
        for d in datasets:
            if "simple" in kinds:
                diff = self.difference(self.arm(d, "simple", "both"), self.arm(d, "simple", "text"))
                if diff is not None:
                    test = equivalence_test(diff, MARGIN, alpha=ALPHA)
                    r = self._result(f"{d} simple: both - text", diff, test, 0.0)
                    r["power"] = power(0.0, diff.se, ALPHA, test="tost", margin=MARGIN) if diff.se > 0 else 1.0
                    results.append(r)
        add("On simple prompts the matcher changes little (the text-conditional model already aligns)",
            f"TOST equivalence within +-{MARGIN:g} of alignment, 5%", results)
        # 3. the schedule matters
        results, any_differs, all_equal = [], False, True
        for d in datasets:
            for kind in kinds:
                base = self.arm(d, kind, "both")
                others = [s for s in self.bench.schedules[1:] if self.has(self.arm(d, kind, "both", schedule=s))]
                tests = []
                for s in others:
                    diff = self.difference(base, self.arm(d, kind, "both", schedule=s))
                    if diff is None:
                        continue
                    p_two = min(1.0, 2 * min(diff.p_value(0.0, "less"), diff.p_value(0.0, "greater")))
                    tests.append((s, diff, p_two))
                # Holm over the schedules compared within one dataset and kind
                order = sorted(range(len(tests)), key=lambda i: tests[i][2])
                rejected = set()
                for rank, i in enumerate(order):
                    if tests[i][2] * (len(tests) - rank) < ALPHA:
                        rejected.add(i)
                    else:
                        break
                for i, (s, diff, p_two) in enumerate(tests):
                    equal = equivalence_test(diff, MARGIN, alpha=ALPHA).verdict == "supported"
                    any_differs |= i in rejected
                    all_equal &= equal
                    results.append({"comparison": f"{d} {kind}: {self.schedule} - {s}", "estimate": diff.estimate,
                                    "low": diff.interval(0.9)[0], "high": diff.interval(0.9)[1], "p": p_two,
                                    "power": power(MARGIN, diff.se, ALPHA / 2) if diff.se > 0 else 1.0,
                                    "verdict": "differs (Holm)" if i in rejected else
                                    "equivalent" if equal else "undecided"})
        verdict = ("supported" if any_differs else "refuted" if results and all_equal else "undecided")
        add("The guidance schedule matters (arm both, alignment)",
            f"two-sided paired tests of {self.schedule} against each other schedule, Holm-corrected 5%; refuted "
            f"if every one is equivalent within +-{MARGIN:g}", results, verdict)
        # 4. fidelity
        results = []
        for d in datasets:
            for kind in kinds:
                text_arm = self.arm(d, kind, "text")
                diff = self.difference(self.arm(d, kind, "both"), text_arm, "fd")
                if diff is not None:
                    test = one_sided_test(diff, "less", 0.0, alpha=ALPHA)
                    reference = float(np.mean(np.concatenate(self._arrays(text_arm, "fd"))))
                    results.append(self._result(f"{d} {kind}: FD both - text", diff, test, MARGIN * reference))
        add("The combination also improves fidelity (per-prompt FD in the evaluator's features, lower is better)",
            "paired superiority, one-sided 5% (bootstrap over seeds and prompts), power at 5% of the text arm's FD",
            results)
        # 5. DPM-OT composed
        results = []
        for d in datasets:
            for kind in kinds:
                for nfe in self.bench.dpmot_nfes:
                    a = self.arm(d, kind, "both", sampler="dpm-ot", nfe=nfe)
                    if not self.has(a):
                        continue
                    diff = self.difference(a, self.arm(d, kind, "both"))
                    if diff is not None:
                        test = one_sided_test(diff, "greater", -MARGIN, alpha=ALPHA)
                        r = self._result(f"{d} {kind}: DPM-OT@{nfe} - DPM-Solver++@{self.nfe}", diff, test, MARGIN)
                        results.append(r)
        add(f"Composed with DPM-OT (class-conditional map chosen by the matcher + guided tail), fewer NFE reach the "
            f"guided DPM-Solver++(2M) at NFE {self.nfe}",
            f"paired non-inferiority of alignment within {MARGIN:g}, one-sided 5%", results)
        lines.append({"claim": "The same on UniBench's Chinese prompts", "test": "-",
                      "measured (a - b [90% CI])": "no multilingual text encoder ships in a package this machine "
                                                   "can install; the Chinese half has no analogue",
                      "verdict": "not available"})
        return pd.DataFrame(lines)

    # ------------------------------------------------------------------------------------- tables
    def table(self, part: pd.DataFrame, keys: list[str], metrics: list[str]) -> str:
        metrics = [m for m in metrics if m in part and part[m].notna().any()]
        return markdown_table(with_ci(part[keys + metrics + [f"{m}_ci" for m in metrics]], metrics))

    def figure(self, fig_dir: Path, dataset, prompt_set) -> tuple[Path, str] | None:
        """Samples of the first seed for the first prompts of the complex kind (else the first kind), per arm."""
        kind = "complex" if "complex" in self.bench.kinds else self.bench.kinds[0]
        prompts = prompts_of(prompt_set, kind, self.bench.prompts)
        arms = [("text", "dpmpp-2m"), ("matcher", "dpmpp-2m"), ("both", "dpmpp-2m"), ("both", "dpm-ot")]
        panels = {}
        for method, sampler in arms:
            fields = {**self.arm(dataset.name, kind, method, sampler=sampler,
                                 nfe=self.nfe if sampler != "dpm-ot" else (self.bench.dpmot_nfes or (0,))[0]),
                      "seed": self.seeds[0]}
            path = self.work / "samples" / (paired_file(self.work, fields).stem + ".npz")
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as archive:
                x = archive["x"]
            label = method if sampler == "dpmpp-2m" else f"{method} + DPM-OT"
            for i, prompt in enumerate(prompts[:3]):
                panels[_label(prompt), label] = x[i]
        if not panels:
            return None
        order = {label: i for i, label in enumerate(dict.fromkeys(_label(p) for p in prompts))}
        panels = dict(sorted(panels.items(), key=lambda item: order[item[0][0]]))  # prompt by prompt, arms within
        out = fig_dir / f"unibench-{dataset.name}.png"
        if dataset.dim == 2:
            reference = dataset.sample(2000, seed=99)[0].numpy()
            means = dataset.mixture.means.numpy()
            targets = {_label(p): means[sorted(p.classes)] for p in prompts[:3]}
            path = figures.prompt_scatter(panels, reference, targets, f"{dataset.name}: samples per prompt (rows) "
                                          "and arm (columns); green rings: the prompt's classes", out)
        else:
            path = figures.image_grid({f"{p} | {a}": x for (p, a), x in panels.items()}, out, dataset.shape,
                                      dataset.value_range, per_method=12)
        return path, (f"{dataset.name}: UniBench-small samples for the first {kind} prompts, per arm (seed {self.seeds[0]}, NFE {self.nfe}; DPM-OT at its NFE)")


def _label(prompt) -> str:
    classes = ",".join(map(str, sorted(prompt.classes)))
    return f"'{prompt.text}' {{{classes}}}"


def write_section(report, rows: pd.DataFrame) -> None:
    """Add the UniBench-small section to a :class:`~dpmot_bench.report.build.Report`."""
    from ..data import get_prompt_set

    bench = report.suite.unibench
    section = UniBenchSection(rows, report.work, bench, report.suite.seeds)
    s = section.summary
    report.add(
        "## UPainting: UniBench-small\n\n"
        "UPainting's claim at this machine's scale (README, \"Text prompts and UPainting\"): a text-conditional "
        "denoiser on a frozen pretrained Transformer (all-MiniLM-L6-v2) trained on the train split's even rows "
        "with condition dropout; an image-text matcher trained contrastively on its odd rows, clean data only; "
        "three arms on the same seeds, prompts and source noise: **text** "
        f"(CFG w = {ARMS['text'].cfg:g}, no matcher), **matcher** (the unconditional model steered by the matcher "
        f"alone, s = {ARMS['matcher'].guidance:g}) and **both** (UPainting: CFG {ARMS['both'].cfg:g} + matcher "
        f"guidance {ARMS['both'].guidance:g}). The judge is an **evaluator** of another family and split (an RBF support-vector machine "
        "fitted on the held-out split, never used for guidance); its *ceiling* is its accuracy on the train "
        "split's real rows of the prompt's classes. Prompt kinds: *simple* (one class in plain words, training "
        "wordings), *complex* (compositional, training wordings), *complex-heldout* (wordings the generator and "
        "matcher never saw). `matcher_similarity` is biased: it is what matcher guidance maximises. An NFE is one "
        "call of the guided denoiser; CFG and the matcher's gradient cost more network work per call, which "
        "`ms_per_sample` shows. `fd`: per-prompt Frechet distance in the evaluator's features to the train rows "
        f"of the prompt's classes, beside `fd_floor`, real held-out rows measured the same way. {bench.prompts} "
        f"prompts x {bench.samples} samples per cell, seeds {', '.join(map(str, section.seeds))}."
        + ("" if bench.design == "factorial" else " This is a quick slice; the whole benchmark (every arm x schedule "
           "x input, NFE 5 / 10 / 20, both datasets, 3 seeds) is `dpmot report --suite upainting`, committed in "
           "`reports/upainting/`.") + "\n")
    report.add("### Claims\n\nEach test pairs arms over (seed, prompt) units (hierarchical bootstrap); "
               "verdicts as in the DPM-OT claims table.\n")
    report.add(markdown_table(section.claims()))
    keys = ["kind", "method", "schedule", "input"]
    main_metrics = ["alignment", "ceiling", "fd", "fd_floor", "precision", "recall", "diversity", "mixed",
                    "matcher_similarity", "ms_per_sample"]
    for d in sorted(s.dataset.unique()):
        part = s[(s.dataset == d) & (s.sampler == "dpmpp-2m") & (s.nfe == section.nfe)]
        default = part[((part.method == "text") & (part.schedule == NONE))
                       | ((part.schedule == section.schedule) & (part.input == section.input))]
        report.add(f"### {d}: arms at NFE {section.nfe} (DPM-Solver++(2M), schedule {section.schedule}, "
                   f"input {section.input})\n")
        report.add(section.table(default, keys, main_metrics))
        both = part[part.method != "text"]
        sched = both[(both.input == section.input) & (both.groupby(["kind", "method"]).schedule.transform("nunique") > 1)]
        if not sched.empty:
            report.add(f"**{d}: guidance schedules** (input {section.input}):\n")
            report.add(section.table(sched, keys, ["alignment", "fd", "mixed", "matcher_similarity"]))
        inp = both[(both.schedule == section.schedule) & (both.groupby(["kind", "method"]).input.transform("nunique") > 1)]
        if not inp.empty:
            report.add(f"**{d}: what the matcher sees** (x0: the clean estimate; x_sigma: the noisy sample; blend: "
                       f"UPainting's; schedule {section.schedule}):\n")
            report.add(section.table(inp, keys, ["alignment", "fd", "mixed", "matcher_similarity"]))
        nfes = s[(s.dataset == d) & (s.sampler == "dpmpp-2m") & (s.schedule.isin([NONE, section.schedule]))
                 & (s.input.isin([NONE, section.input]))]
        if nfes.nfe.nunique() > 1:
            report.add(f"**{d}: against NFE**:\n")
            report.add(section.table(nfes, ["kind", "method", "nfe"], ["alignment", "fd", "ms_per_sample"]))
        ot = s[(s.dataset == d) & (s.sampler == "dpm-ot")]
        if not ot.empty:
            report.add(f"**{d}: DPM-OT composed** (arm both; the OT jump lands on train-split latents of the classes "
                       "the matcher reads in the prompt, `class_jaccard` = overlap of those classes with the "
                       "prompt's true class set; then the guided DPM-Solver++(2M) tail from sigma_star):\n")
            report.add(section.table(ot, ["kind", "nfe"], ["alignment", "class_jaccard", "fd", "fd_floor", "mixed",
                                                            "ms_per_sample"]))
        made = section.figure(report.fig_dir, report.dataset(d), get_prompt_set(d))
        if made is not None:
            report.figure(*made)
