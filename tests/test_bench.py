"""The benchmark harness and the report: crash safety, resume, statistics, claims, errors."""
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st
from scipy import stats

from dpmot_bench.bench.runner import expand, run_suite
from dpmot_bench.stats import mean_ci, summarise
from dpmot_bench.bench.store import Cell, ResultStore
from dpmot_bench.bench.suites import SUITES, Suite, get_suite
from dpmot_bench.errors import CorruptFileError, InputError, UnknownNameError
from dpmot_bench.report.claims import claims_table
from dpmot_bench.render import markdown_table, with_ci

from .test_ot_native import _fused_or_skip

# Cheap cells only (exact GMM denoiser, no OT fit): a run takes seconds.
BASELINE_SUITE = Suite("baselines", "test", datasets=("gmm-ring8",), samplers=("euler", "heun"), nfes=(1, 2, 5),
                       seeds=(0, 1, 2), n_samples={"gmm-ring8": 150}, floor_repeats=2)
TIMING = {"wall_seconds", "sample_seconds", "per_sample_ms", "git_commit"}


def comparable(rows):
    return sorted(json.dumps({k: v for k, v in row.items() if k not in TIMING}, sort_keys=True) for row in rows)


@given(values=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30), level=st.sampled_from([0.9, 0.95, 0.99]))
def test_mean_ci_is_the_student_t_interval(values, level):
    mean, half, n = mean_ci(values, level)
    low, high = stats.t.interval(level, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert n == len(values) and mean == pytest.approx(np.mean(values), abs=1e-9)
    if np.std(values) > 0:
        assert half == pytest.approx((high - low) / 2, rel=1e-9)


def test_summarise_groups_and_ignores_missing_values():
    frame = pd.DataFrame({"method": ["a", "a", "b", "b"], "w2": [1.0, 3.0, 2.0, np.nan]})
    out = summarise(frame, ["method"], ["w2", "absent"]).set_index("method")
    assert out.loc["a", "w2"] == 2.0 and out.loc["b", "w2"] == 2.0 and np.isnan(out.loc["b", "w2_ci"])
    assert "absent" not in out


def test_cell_keys_are_stable_and_distinct():
    cells = expand(SUITES["quick"])
    assert len({c.key for c in cells}) == len(cells)
    assert Cell.make("sample", "d", "m", 5, 0, n=3).key == Cell.make("sample", "d", "m", 5, 0, n=3).key
    quick = SUITES["quick"]
    samples = [c for c in cells if c.task == "sample"]
    assert len(samples) == len(quick.datasets) * len(quick.samplers) * len(quick.nfes) * len(quick.seeds)
    assert set(quick.nfes) == {1, 2, 5, 10, 20, 50} and len(quick.seeds) >= 3


def test_store_round_trip_and_corrupt_file(tmp_path):
    store = ResultStore(tmp_path)
    cell = Cell.make("sample", "gmm-ring8", "euler", 2, 0, n=10)
    store.write(cell, {"w2": 0.5})
    assert store.done(cell) and store.rows()[0]["w2"] == 0.5
    assert ResultStore(tmp_path, resume=True).done(cell)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "gmm-ring8-dpm-ot.npz").write_bytes(b"a map fitted by older code")
    assert not ResultStore(tmp_path, resume=False).done(cell)  # a fresh run starts clean ...
    assert not (tmp_path / "maps").exists()  # ... reusing no fitted map either
    store = ResultStore(tmp_path, resume=True)
    (store.cells / "broken.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="--resume"):
        store.rows()


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL a run mid-way, resume it, and compare with an uninterrupted run."""
    env = {**os.environ, "DPMOT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # The run kills itself inside its fifth sampling cell, after four have been written: no clock involved.
    script = textwrap.dedent("""
        import os, signal, sys
        from tests.test_bench import BASELINE_SUITE
        from dpmot_bench.bench import tasks
        from dpmot_bench.bench.runner import run_suite
        sample, calls = tasks.TASKS["sample"], []
        def killed_in_the_fifth(ctx, cell):
            calls.append(cell)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return sample(ctx, cell)
        tasks.TASKS["sample"] = killed_in_the_fifth
        run_suite(BASELINE_SUITE, sys.argv[1], progress=False)
    """)
    interrupted = tmp_path / "interrupted"
    subprocess.run([sys.executable, "-c", script, str(interrupted)], env=env,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    cells_dir = interrupted / "work" / "cells"
    finished = len(list(cells_dir.glob("*.json")))
    total = len(expand(BASELINE_SUITE))
    assert 4 <= finished < total, "the run must be killed mid-way for this test to mean anything"
    resumed = run_suite(BASELINE_SUITE, interrupted, resume=True, progress=False)
    uninterrupted = run_suite(BASELINE_SUITE, tmp_path / "clean", progress=False)
    assert len({r["cell"] for r in resumed}) == total == len(resumed)
    assert comparable(resumed) == comparable(uninterrupted)


def test_tiny_report_builds(tmp_path, monkeypatch):
    from dpmot_bench.report.build import build_report

    monkeypatch.setenv("DPMOT_CACHE", str(tmp_path / "cache"))
    suite = replace(BASELINE_SUITE, samplers=("dpm-ot", "euler"), nfes=(2, 5), seeds=(0, 1),
                    n_latents={"gmm-ring8": 60}, sweep_datasets=("gmm-ring8",), sweep_sigmas=(0.25,), sweep_nfe=5,
                    figure_nfe=5)
    index = build_report(suite, tmp_path / "report", device="cpu", progress=False)
    text = index.read_text()
    for heading in ("## Setup", "## Paper claims", "## Quality against NFE", "## Mode mixture",
                    "## Memorisation and novelty", "## The sigma_star trade-off", "## Costs"):
        assert heading in text
    for link in [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (index.parent / link).stat().st_size > 1000
    frame = pd.read_csv(index.parent / "results.csv")
    assert set(frame.task) >= {"floor", "ot-fit", "sample", "sigma-star"}
    assert (frame[frame.task == "sample"].nfe_spent == frame[frame.task == "sample"].nfe).all()
    assert json.loads((index.parent / "results.json").read_text())["provenance"]["torch"]


def test_the_ot_fit_row_of_a_reloaded_map_is_the_fitted_maps(tmp_path):
    # a run killed after saving a map but before recording its ot-fit cell reloads the map on resume (issue 19)
    import torch

    from dpmot_bench.bench.context import Context
    from dpmot_bench.bench.tasks import ot_fit_task

    suite = get_suite("tiny")
    cell = next(c for c in expand(suite) if c.task == "ot-fit")
    rows = [ot_fit_task(Context(suite, tmp_path, torch.device("cpu"), False), cell) for _ in range(2)]
    assert (tmp_path / "maps").is_dir() and rows[0]["solver"] in ("exact-2d", "newton-qmc", "adam-mc")
    assert {k: v for k, v in rows[0].items() if k != "fit_seconds"} == \
        {k: v for k, v in rows[1].items() if k != "fit_seconds"}


def test_claims_verdicts_follow_paired_tests_on_known_differences(tmp_path):
    """Synthetic paired per-sample files with a known answer: DPM-OT mixes far less than euler (supported),
    reaches euler@50's MMD^2 within the margin (supported); swapped, the claims are refuted; the threshold
    claims keep their rules."""
    from dpmot_bench.bench.context import paired_path
    from dpmot_bench.io import save_npz
    from dpmot_bench.report.decide import Comparisons

    rng = np.random.default_rng(0)
    seeds, n = (0, 1, 2), 400
    arms = {("dpm-ot", 10): (0.01, 0.0), ("euler", 10): (0.3, 0.05), ("euler", 50): (0.1, 0.0)}  # mixing, mmd2
    records = []
    for (method, nfe), (mix, mmd) in arms.items():
        for seed in seeds:
            save_npz(paired_path(tmp_path, "gmm-ring8", method, nfe, seed),
                     mixed=(rng.random(n) < mix).astype(float), mmd2=mmd + 0.001 * rng.standard_normal(n),
                     high_quality=np.ones(n))
            records.append({"dataset": "gmm-ring8", "method": method, "nfe": nfe, "seed": seed, "n": n,
                            "between_modes": mix, "mmd2": mmd, "w2": 0.2 + 0.3 * (method == "euler" and nfe == 10)
                            + 0.001 * seed, "high_quality": 1.0, "copy_rate_targets": 0.0, "baseline_copy_rate": 0.01})
    samples = pd.DataFrame(records)
    summary = summarise(samples, ["dataset", "method", "nfe"], ["between_modes", "mmd2", "w2", "high_quality",
                                                                  "copy_rate_targets", "baseline_copy_rate"])
    fits = pd.DataFrame([{"dataset": "gmm-ring8", "method": "dpm-ot", "n_targets": 10, "iterations": 5,
                          "fit_seconds": 1.0, "l1_mass_error": 0.5, "l1_noise_floor": 0.001, "max_rel_mass_error": 0.9}])
    comparisons = Comparisons(tmp_path, samples, seeds, kernel_energy={"gmm-ring8": 1.0},
                              mixing={"gmm-ring8": "between_modes"})
    table = claims_table(summary, {"gmm-ring8": 0.2}, {"gmm-ring8": True}, fits, None,
                         comparisons=comparisons).set_index("claim")
    verdicts = table["verdict"].to_dict()
    assert verdicts["Less mode mixture than fast samplers at equal NFE"] == "supported"
    assert verdicts["High-quality samples in about 10 NFE"] == "supported"  # MMD^2 and W2 both within 5%
    assert verdicts["The semi-discrete OT solver converges"] == "not supported"
    assert verdicts["An error bound guarantees stability"] == "not measurable here"
    assert "power" in table.columns and "margin" in table.loc["High-quality samples in about 10 NFE", "measurement"]
    # the same files with the arms' roles swapped: DPM-OT mixes more than euler -> refuted
    for seed in seeds:
        a, b = (paired_path(tmp_path, "gmm-ring8", m, 10, seed) for m in ("dpm-ot", "euler"))
        a.rename(tmp_path / "swap.npz"), b.rename(a), (tmp_path / "swap.npz").rename(b)
    swapped = summary.assign(between_modes=summary.between_modes.where(summary.nfe != 10, summary.between_modes[::-1].values))
    comparisons = Comparisons(tmp_path, samples, seeds, kernel_energy={"gmm-ring8": 1.0},
                              mixing={"gmm-ring8": "between_modes"})
    table = claims_table(swapped, {}, {"gmm-ring8": True}, fits, None, comparisons=comparisons).set_index("claim")
    assert table.loc["Less mode mixture than fast samplers at equal NFE", "verdict"] == "refuted"
    # without paired data the quality claims are not measurable, never guessed
    table = claims_table(summary, {}, {"gmm-ring8": True}, fits, None).set_index("claim")
    assert table.loc["High-quality samples in about 10 NFE", "verdict"] == "not measurable here"


def test_markdown_table_formats_ci():
    frame = pd.DataFrame({"method": ["a"], "w2": [0.123456], "w2_ci": [0.01]})
    text = markdown_table(with_ci(frame, ["w2"]))
    assert "| a | 0.123 ± 0.01 |" in text


def test_bad_suite_and_output_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="quick"):
        get_suite("nosuch")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(InputError, match="output directory"):
        ResultStore(blocked / "sub")
    for args in (["report", "--suite", "nosuch"], ["bench", "--suite", "nosuch"],
                 ["report", "--suite", "tiny", "--out", str(blocked / "sub")]):
        result = subprocess.run([sys.executable, "-m", "dpmot_bench", *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (blocked.parent / "sub").exists()


def test_solver_report_states_the_time_goal_and_its_cost(tmp_path):
    """The OT solver section of the report, on made-up rows: the first logged point within both error
    bounds decides the time to the goal; over 10 s it says so with the cost of one final-sample pass; a
    solver that never gets there is reported with its best error, and both are timed to 1.1 x that error."""
    from dpmot_bench.report.ot_section import _solver_markdown

    def row(solver, seconds, l1, max_rel, **extra):
        return {"solver": solver, "N": 1000, "d": 16, "iteration": 0, "seconds": seconds, "source_samples": 0,
                "threads": 2, "suite": "full", "l1_mass_error": l1, "max_rel_mass_error": max_rel,
                "empty_cells": 0, "eval_samples": 2**24, "l1_noise_floor": 0.0062, **extra}

    cost = {"final_samples": 8192000, "final_pass_seconds": 9.0}
    newton = [row("newton-qmc", 5.0, 0.03, 0.2, **cost), row("newton-qmc", 30.0, 0.009, 0.2, **cost),
              row("newton-qmc", 35.0, 0.0095, 0.05, **cost)]
    adam = [row("adam-mc", 20.0, 0.041, 0.2), row("adam-mc", 66.0, 0.038, 0.17)]
    text = _solver_markdown(pd.DataFrame(newton + adam), tmp_path)
    assert "reaches the accuracy goal in 35.00 s: **not** within the 10 s goal" in text
    assert "final sample of 8192000 points takes 9.0 s" in text
    # The same accuracy: 1.1 x adam's best l1, 0.0418, which adam reaches at 20 s (0.041), newton at 5 s.
    assert "adam-mc never reaches the goal" in text and "best l1 0.038 after 66 s" in text
    assert "At l1 ≤ 0.0418 (1.1 x adam-mc's best), adam-mc is there after 20 s, newton-qmc after 5.00 s: **4.0x**" in text
    assert "adam-mc-blas" not in text
    blas = [{**r, "solver": "adam-mc-blas", "seconds": 3 * r["seconds"]} for r in adam]
    text = _solver_markdown(pd.DataFrame(newton + adam + blas), tmp_path)
    assert "`adam-mc-blas` is adam-mc counting its cells as the reference code does" in text
    assert "adam-mc-blas is there after 60 s, newton-qmc after 5.00 s: **12.0x**" in text
    fast = [{**r, "seconds": r["seconds"] / 10} for r in newton]
    text = _solver_markdown(pd.DataFrame(fast + adam), tmp_path)
    assert "in 3.50 s: **within** the 10 s goal." in text and "final sample" not in text


def test_the_reference_adam_row_counts_cells_as_the_reference_code_does(monkeypatch):
    """``REFERENCE_ADAM`` runs adam-mc with the fused kernel off (blockwise BLAS products and argmax, as the
    reference code counts cells), and only that run: adam-mc itself keeps the default kernel."""
    import torch

    from dpmot_bench.bench import ot_bench
    from dpmot_bench.ot import GaussianSource, native
    from dpmot_bench.ot.problem import Problem

    _fused_or_skip()  # fails where the kernel should have built
    fused_calls = []
    top_k = native.top_k
    monkeypatch.setattr(native, "top_k", lambda *args: fused_calls.append(1) or top_k(*args))
    targets = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    problem = Problem(GaussianSource(16), targets, torch.full((64,), 1 / 64, dtype=torch.float64))
    snapshots = ot_bench._run_solver(ot_bench.REFERENCE_ADAM, problem, 60.0, {"max_iter": 3}, lambda state, log: True)
    assert [s[0] for s in snapshots] == [1, 2, 3] and not fused_calls
    ot_bench._run_solver("adam-mc", problem, 60.0, {"max_iter": 3}, lambda state, log: True)
    assert len(fused_calls) >= 3  # one pass per iteration at least
    assert native.applies(problem.scoring.targets, 1)  # the kernel is back on after the reference run


@given(seed=st.integers(0, 10**6), n_targets=st.integers(2, 12), reg=st.sampled_from([0.05, 0.2, 1.0]))
def test_pot_semi_dual_potentials_become_our_h(seed, n_targets, reg):
    """The conversion of POT's semi-dual v into h, checked with an independent entropic solution (POT's
    Sinkhorn on the same points): its plan's column scalings b_j give v_j = reg log(b_j / nu_j) up to a
    constant, and the converted h must give POT's plan as softmax((<x, y_j> + h_j) / reg) rows, whose column
    sums are the target weights."""
    import ot as pot
    import torch

    from dpmot_bench.bench.ot_bench import h_from_semi_dual
    from dpmot_bench.ot import kernel

    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(n_targets, 2))
    nu = rng.dirichlet(np.ones(n_targets))
    a = np.full(len(x), 1 / len(x))
    plan, log = pot.sinkhorn(a, nu, pot.dist(x, y) / 2, reg, method="sinkhorn_log", log=True,
                             numItermax=100_000, stopThr=1e-13)
    v = reg * (log["log_v"] - np.log(nu))
    h = h_from_semi_dual(v, y, nu, reg)
    rows = torch.softmax((torch.from_numpy(x) @ torch.from_numpy(y).T + h) / reg, dim=1).numpy()
    assert np.allclose(rows / len(x), plan, atol=1e-10)
    masses = kernel.soft_masses(torch.from_numpy(x), torch.from_numpy(y), h, reg).numpy() / len(x)
    assert np.allclose(masses, nu, atol=1e-8)


def test_cells_run_on_the_asked_thread_count_which_is_restored_after(tmp_path, monkeypatch):
    import torch

    from dpmot_bench.bench import runner

    seen = []
    monkeypatch.setattr(runner, "run_cell", lambda ctx, cell: seen.append(torch.get_num_threads()) or {"x": 1.0})
    before = torch.get_num_threads()
    cells = expand(get_suite("tiny"))[:3]
    for threads in (1, 3):
        run_suite(get_suite("tiny"), tmp_path / f"t{threads}", cells=cells, threads=threads, progress=False)
    assert seen == [1] * 3 + [3] * 3
    assert torch.get_num_threads() == before


def test_a_quick_report_points_each_undecided_test_to_the_full_suites_result(tmp_path, monkeypatch):
    import shutil

    from dpmot_bench.report.build import build_report
    from dpmot_bench.stats import one_sided_test

    monkeypatch.setenv("DPMOT_CACHE", str(tmp_path / "cache"))
    base = replace(BASELINE_SUITE, samplers=("dpm-ot", "euler"), nfes=(2, 5), seeds=(0, 1), n_samples={"gmm-ring8": 60},
                   n_latents={"gmm-ring8": 60}, claim_nfe=2, reference_nfe=5, figure_nfe=5)
    reports = tmp_path / "reports"
    build_report(replace(base, name="full"), reports / "full", progress=False)
    full = json.loads((reports / "full" / "claims.json").read_text())
    assert full["suite"] == "full" and full["seeds"] == [0, 1] and full["samples_per_cell"] == {"gmm-ring8": 60}
    tested = [c for c in full["claims"] if any("estimate" in t for t in c["tests"])]
    assert tested and all({"estimate", "low", "high", "verdict", "power", "n_per_cell"} <= set(t)
                          for c in tested for t in c["tests"] if "estimate" in t)

    # The quick run (the same cells, re-read) decides nothing; the full run, edited, decided one test.
    claim = tested[0]
    test = next(t for t in claim["tests"] if "estimate" in t)
    test.update(verdict="supported", estimate=-1.25, low=-2.5, high=-0.125)
    claim["verdict"] = "supported"
    # and measured a dataset this run does not have, where the claim fails
    claim["tests"].append({**test, "dataset": "gmm-hd", "verdict": "refuted", "estimate": 0.5, "low": 0.25, "high": 0.75})
    (reports / "full" / "claims.json").write_text(json.dumps(full))
    monkeypatch.setattr("dpmot_bench.report.decide.one_sided_test",
                        lambda *a, **k: replace(one_sided_test(*a, **k), verdict="undecided"))
    quick = replace(base, name="quick", decided_by="full")
    shutil.copytree(reports / "full" / "work", reports / "quick" / "work")
    text = build_report(quick, reports / "quick", resume=True, progress=False).read_text()
    table = text.split("## Paper claims")[1].split("\n## ")[0]
    assert "| full suite |" in table and str(reports / "full" / "claims.json") in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {claim['claim']} |"))
    assert (f"| supported: where this run is undecided, {test['dataset']} {test['metric']}: supported "
            f"(-1.25 [-2.5, -0.125], n 60/cell)") in row
    assert row.endswith(f"; beyond this run's tests, gmm-hd {test['metric']} against {test['b']}: refuted "
                        "(0.5 [0.25, 0.75], n 60/cell) |")

    (reports / "full" / "claims.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not a claims file"):
        build_report(quick, reports / "quick", resume=True, progress=False)
    shutil.rmtree(reports / "full")
    text = build_report(quick, reports / "quick", resume=True, progress=False).read_text()
    assert "it has not been run beside this report" in text


def test_two_worker_processes_give_the_rows_of_one(tmp_path, monkeypatch):
    # maps fitted in the first phase and read back by the other worker, seeds of a group in one worker,
    # sigma_star and latent-count maps fitted inside their groups: every row equal to a one-process run's
    monkeypatch.setenv("DPMOT_CACHE", str(tmp_path / "cache"))
    suite = replace(get_suite("tiny"), samplers=("dpm-ot", "dpm-ot-paper", "euler"))
    one = run_suite(suite, tmp_path / "one", progress=False)
    two = run_suite(suite, tmp_path / "two", progress=False, jobs=2)
    assert {r["task"] for r in two} >= {"ot-fit", "sample", "sigma-star", "latent-count"}
    untimed = lambda rows: comparable([{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows])  # noqa: E731
    assert untimed(two) == untimed(one)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "work").rglob("*.npz"))
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "work").rglob("*.npz"))
    for name in files:  # maps, per-sample values for the paired tests, sample sets: the same arrays
        with np.load(tmp_path / "one" / name) as a, np.load(tmp_path / "two" / name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta"), name
            if "meta" in a.files:  # a map's record: the same but for its fit time
                metas = [{k: v for k, v in json.loads(str(f["meta"])).items() if k != "fit_seconds"} for f in (a, b)]
                assert metas[0] == metas[1], name


def test_a_comparison_where_neither_arm_mixes_is_a_tie_left_out_of_the_verdict(tmp_path):
    from dpmot_bench.bench.context import paired_path
    from dpmot_bench.io import save_npz
    from dpmot_bench.report.decide import Comparisons, combine, decide, text

    rng = np.random.default_rng(1)
    records = []
    for method, mix in (("dpm-ot", 0.0), ("heun", 0.0), ("euler", 0.3)):
        for seed in (0, 1, 2):
            mixed = (rng.random(300) < mix).astype(float)
            save_npz(paired_path(tmp_path, "gmm-hd", method, 10, seed), mixed=mixed)
            records.append({"dataset": "gmm-hd", "method": method, "nfe": 10, "seed": seed, "n": 300,
                            "between_modes": mixed.mean()})
    comparisons = Comparisons(tmp_path, pd.DataFrame(records), (0, 1, 2), mixing={"gmm-hd": "between_modes"})
    tie = decide(comparisons, "gmm-hd", ("dpm-ot", 10), ("heun", 10), "mixed", "better")
    win = decide(comparisons, "gmm-hd", ("dpm-ot", 10), ("euler", 10), "mixed", "better")
    assert tie["verdict"] == "tie" and "tie" in text(tie) and win["verdict"] == "supported"
    assert combine([tie["verdict"], win["verdict"]]) == "supported"
    assert combine(["tie"]) == "not measurable here" and combine(["tie", "undecided"]) == "undecided"


def test_the_ot_section_shows_the_d3072_solver_and_memory_rows_when_a_full_run_has_them():
    from dpmot_bench.report.ot_section import _scale_markdown

    solver = {"kind": "d3072-solver", "N": 2000, "d": 3072, "targets": "random", "iterations": 3,
              "points_per_iteration": 8192, "seconds_per_entropic_iteration": 7.5, "seconds_per_hard_iteration": 4.5,
              "seconds_per_point": 6.7e-4, "peak_extra_mb": 600.0, "check_l1_mass_error": 1.2, "check_noise_floor": 0.39,
              "default_iteration_seconds": 344.0}
    rows = [{**solver, "solver": "newton-qmc"}, {**solver, "solver": "adam-mc", "seconds_per_entropic_iteration": np.nan},
            {"kind": "memory-vs-points", "N": 2000, "d": 3072, "points": 8192, "iterations": 2, "peak_extra_mb": 567.0,
             "seconds": 13.9}]
    text = _scale_markdown(pd.DataFrame(rows))
    assert "Solvers at d = 3072" in text and "| 2000 | random | adam-mc | – | 4.5 |" in text
    assert "flat in the points" in text and "| 2000 | 3072 | 8192 | 2 | 567 | 13.9 |" in text
    assert "Solvers at d = 3072" not in _scale_markdown(pd.DataFrame(rows[2:]))


@given(errors=st.lists(st.sampled_from([0.01, 0.0105, 0.02, 0.5, 1.0]), min_size=1, max_size=60),
       every=st.integers(1, 12), slack=st.sampled_from([1.0, 1.1, 1.5]))
def test_refined_snapshots_find_the_first_time_at_the_compared_accuracy(errors, every, slack):
    """A curve of l1 errors, one per snapshot, measured coarsely (every ``every``-th and the last): the
    measured set holds every coarse snapshot, and its first within ``slack`` x the best measured is the
    curve's first there (what measuring every snapshot finds), with no other snapshot measured after it."""
    from unittest import mock

    from dpmot_bench.bench import ot_bench

    calls = []

    def evaluate(problem, h, n_eval):
        calls.append(int(h))
        return {"exact_l1_mass_error": errors[int(h)], "exact_max_rel_mass_error": 0.0}

    snapshots = [(i, float(i), 0, np.array(i)) for i in range(len(errors))]
    coarse = [i % every == 0 or i == len(errors) - 1 for i in range(len(errors))]
    with mock.patch.object(ot_bench, "_evaluate", evaluate):
        measured = [snapshot[0] for snapshot, _ in ot_bench._refined(None, snapshots, coarse, 0, slack)]
    assert measured == sorted(measured) and len(calls) == len(set(calls)) == len(measured)
    assert {i for i, keep in enumerate(coarse) if keep} <= set(measured)
    level = slack * min(errors[i] for i in measured)
    first = next(i for i, e in enumerate(errors) if e <= level)
    assert next(i for i in measured if errors[i] <= level) == first
    assert all(coarse[i] for i in measured if i > first)


def test_the_profile_benchmark_names_functions_that_exist(monkeypatch):
    """``benchmarks/ot_profile.py`` attributes time by function name: each part's function is defined in its
    module (a renamed one read 0 s unnoticed), and a wrong name is refused."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ot_profile

    ot_profile.check_parts()
    monkeypatch.setattr(ot_profile, "PARTS", [*ot_profile.PARTS, ("entropic Hessian", "curvature.py", "on_points")])
    with pytest.raises(SystemExit, match="on_points"):
        ot_profile.check_parts()
