"""The fitted-map estimator: API, file format, bad input, the reference solver's mechanics,
checkpoint/resume after SIGKILL, two processes with gloo, and the ``dpmot fit-ot`` command."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from dpmot_bench.errors import CorruptFileError, InputError, NonFiniteError, ShapeError, UnknownNameError
from dpmot_bench.io import save_npz
from dpmot_bench.ot import GaussianSource, SemiDiscreteOT, UniformSource
from dpmot_bench.ot.files import load_checkpoint


def _targets(n=20, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fitted():
    return SemiDiscreteOT(GaussianSource(2), solver="newton-qmc", n_samples=2**13).fit(_targets())


def test_fit_returns_self_with_fitted_state(fitted):
    assert fitted.h_.shape == (20,) and fitted.h_.dtype == torch.float64
    assert fitted.targets_.dtype == torch.float32 and torch.allclose(fitted.weights_.sum(), torch.tensor(1.0,
                                                                                                      dtype=torch.float64))
    assert fitted.n_iter_ == len(fitted.history_) and fitted.solver_stopped_ and fitted.n_source_samples_ > 0
    keys = {"iteration", "samples", "l1_mass_error", "max_rel_mass_error", "empty_cells", "seconds"}
    assert all(keys <= set(row) for row in fitted.history_)
    assert [row["iteration"] for row in fitted.history_] == list(range(fitted.n_iter_))
    assert abs(float(fitted.h_.mean())) < 1e-9  # centred (the gauge)


def test_transport_modes(fitted):
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    index = fitted.assign(x)
    assert torch.equal(fitted.transport(x), fitted.targets_[index])
    smooth = fitted.transport(x, mode="smooth", tau=1e-6)
    # tau = 1e-6 leaves weight < 20 exp(-gap / tau) on the other targets: rows with gaps > 1e-4 agree.
    scores = x @ fitted.targets_.T + fitted.h_.float()
    gaps = scores.topk(2, dim=1).values.diff(dim=1).neg()[:, 0]
    assert torch.allclose(smooth[gaps > 1e-4], fitted.targets_[index][gaps > 1e-4], atol=1e-5)
    assert fitted.potential(x).shape == (500,)
    with pytest.raises(UnknownNameError):
        fitted.transport(x, mode="soft")
    with pytest.raises(InputError):
        fitted.transport(x, mode="smooth", tau=0.0)
    with pytest.raises(ShapeError):
        fitted.assign(torch.randn(5, 3))


def test_cell_masses_are_an_independent_monte_carlo_estimate(fitted):
    masses = fitted.cell_masses(2**16, seed=5)
    assert masses.dtype == torch.float64 and float(masses.sum()) == pytest.approx(1.0)
    again = fitted.cell_masses(2**16, seed=5)
    assert torch.equal(masses, again)
    assert not torch.equal(masses, fitted.cell_masses(2**16, seed=6))
    errors = fitted.mass_errors(2**16, seed=5)
    assert set(errors) >= {"l1_mass_error", "max_rel_mass_error", "empty_cells", "l1_noise_floor"}


def test_save_and_load_round_trip(fitted, tmp_path):
    path = tmp_path / "map.npz"
    fitted.save(path, dataset="toy", sigma_star=0.5)
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        assert archive["targets"].dtype == np.float32 and archive["h"].shape == (20,)
    assert {"source", "sigma_star", "dataset", "seed", "solver", "version"} <= set(meta)
    assert meta["source"] == {"kind": "gaussian", "mean": 0.0, "std": 1.0} and meta["sigma_star"] == 0.5
    loaded = SemiDiscreteOT.load(path)
    assert torch.equal(loaded.h_, fitted.h_) and loaded.source == fitted.source
    x = torch.randn(300, 2)
    assert torch.equal(loaded.assign(x), fitted.assign(x))


def test_corrupt_or_foreign_files_are_refused(tmp_path, fitted):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    foreign = tmp_path / "foreign.npz"
    save_npz(foreign, x=np.zeros(3))
    bad_meta = tmp_path / "bad_meta.npz"
    save_npz(bad_meta, targets=np.zeros((2, 2), np.float32), weights=np.full(2, 0.5), h=np.zeros(2),
             meta=np.array("{not json"))
    bad_weights = tmp_path / "bad_weights.npz"
    fitted.save(bad_weights)
    with np.load(bad_weights) as archive:
        arrays = dict(archive)
    arrays["weights"] = arrays["weights"] * 2
    save_npz(bad_weights, **arrays)
    for path in (garbage, foreign, bad_meta, bad_weights, tmp_path / "missing.npz"):
        with pytest.raises(CorruptFileError):
            SemiDiscreteOT.load(path)


@pytest.mark.parametrize("targets, weights, error", [
    (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), None, NonFiniteError),
    (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), None, NonFiniteError),
    (torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 2.0]]), None, InputError),  # duplicate rows
    (torch.tensor([[0.0, 1.0]]), None, ShapeError),  # N < 2
    (torch.zeros(3, 5), None, ShapeError),  # dimension mismatch with the source
    (torch.randn(3, 2), torch.tensor([0.5, 0.6, -0.1]), InputError),  # negative
    (torch.randn(3, 2), torch.tensor([0.5, 0.6, 0.1]), InputError),  # does not sum to 1
    (torch.randn(3, 2), torch.tensor([0.5, 0.5]), ShapeError),
    (torch.randn(3, 2), torch.tensor([0.5, 0.5, 0.0]), InputError),  # zero weight: an empty cell
])
def test_bad_targets_and_weights(targets, weights, error):
    with pytest.raises(error):
        SemiDiscreteOT(GaussianSource(2), max_iter=2).fit(targets, weights)


@pytest.mark.parametrize("params", [{"solver": "sinkhorn"}, {"lr": 0.1}, {"max_iter": 0}, {"seed": -1},
                                    {"source": "gaussian"}, {"solver": "adam-mc", "stop": "never"},
                                    {"solver": "adam-mc", "init": "random"},
                                    {"solver": "newton-qmc", "smoothing": 0.0}, {"smoothing": 0.25}])
def test_bad_parameters(params):
    params = {"source": GaussianSource(2), **params}
    with pytest.raises(InputError):
        SemiDiscreteOT(**params).fit(_targets())


def test_unfitted_map_says_so():
    with pytest.raises(InputError, match="not fitted"):
        SemiDiscreteOT(GaussianSource(2)).assign(torch.zeros(1, 2))


# ------------------------------------------------------------------------------------------ adam-mc
def test_adam_mc_follows_the_reference_schedule():
    """Samples double and lr decays by 0.8 on every stall (at most 3 times), the best h is kept, and the
    reference stop rule fires only under |g|_2 < grad_tol with no empty cell."""
    targets = _targets(15)
    fit = SemiDiscreteOT(UniformSource(2, -2, 2), solver="adam-mc", max_iter=400, patience=10).fit(targets)
    samples = [row["samples"] for row in fit.history_]
    lrs = [row["lr"] for row in fit.history_]
    assert samples[0] == 150 and sorted(set(samples)) == [150, 300, 600, 1200]
    assert all(lr == pytest.approx(0.1 * 0.8 ** round(math.log2(n / 150))) for n, lr in zip(samples, lrs))
    assert fit.n_iter_ == 400 and not fit.solver_stopped_  # grad_tol 8e-4 is below the noise floor
    best = min(fit.history_, key=lambda row: row["grad_norm"])
    assert fit.n_source_samples_ == sum(samples)
    # the kept h is the iterate with the smallest measured gradient: re-measuring on that iteration's
    # sample gives the same gradient norm
    from dpmot_bench.ot.problem import ADAM_KEY, Problem, sample_masses
    problem = Problem(fit.source, fit.targets_, fit.weights_, 0)
    masses = sample_masses(problem, problem.sample(best["samples"], (ADAM_KEY, best["iteration"])), fit.h_)
    assert float((masses - fit.weights_).norm()) == pytest.approx(best["grad_norm"], rel=1e-12)
    quick = SemiDiscreteOT(UniformSource(2, -2, 2), solver="adam-mc", grad_tol=10.0, max_iter=400).fit(targets)
    empty = [row["empty_cells"] for row in quick.history_]
    assert quick.solver_stopped_ and empty[-1] == 0 and all(e > 0 for e in empty[:-1])


# ------------------------------------------------------------------------------------------ resume, processes
FIT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from dpmot_bench.ot import GaussianSource, SemiDiscreteOT
    from dpmot_bench.ot.distributed import is_main_process, process_group
    torch.set_num_threads(1)
    solver, out, checkpoint, options = sys.argv[1], sys.argv[2], sys.argv[3] or None, json.loads(sys.argv[4])
    targets = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    with process_group("cpu") as device:
        fit = SemiDiscreteOT(GaussianSource(3), solver=solver, checkpoint=checkpoint, device=device,
                             **options).fit(targets)
        if is_main_process():
            np.save(out, fit.h_.numpy())
""")


def _script(tmp_path):
    path = tmp_path / "fit.py"
    path.write_text(FIT_SCRIPT)
    return path


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


@pytest.mark.parametrize("solver, options", [
    ("adam-mc", {"max_iter": 400, "n_samples": 20000, "checkpoint_every": 20}),
    ("newton-qmc", {"n_samples": 2**16, "checkpoint_every": 1, "first_samples": 2**12}),
], ids=["adam-mc", "newton-qmc"])
def test_a_fit_killed_and_resumed_ends_with_the_same_h(tmp_path, solver, options):
    script = _script(tmp_path)
    reference, resumed, checkpoint = tmp_path / "reference.npy", tmp_path / "resumed.npy", tmp_path / "ck.npz"
    args = [sys.executable, str(script), solver]
    subprocess.run([*args, str(reference), "", json.dumps(options)], check=True, env=_env(), timeout=300)
    process = subprocess.Popen([*args, str(resumed), str(checkpoint), json.dumps(options)], env=_env())
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the fit finished before it could be killed"
    state, _ = load_checkpoint(checkpoint, _fingerprint_of(checkpoint), torch.device("cpu"))
    assert not state["done"]
    subprocess.run([*args, str(resumed), str(checkpoint), json.dumps(options)], check=True, env=_env(), timeout=300)
    assert np.array_equal(np.load(resumed), np.load(reference))


def _fingerprint_of(path):
    with np.load(path) as archive:
        return json.loads(str(archive["meta"]))["fingerprint"]


@pytest.mark.parametrize("solver, options", [
    ("adam-mc", {"max_iter": 60, "n_samples": 40000}),  # 5 blocks of 8192 points per iteration
    ("newton-qmc", {"first_samples": 40000, "n_samples": 160000, "max_iter": 40}),  # a 5-block warm-up
], ids=["adam-mc", "newton-qmc"])
def test_two_gloo_processes_give_the_same_h_as_one(tmp_path, solver, options):
    """Counts are integers, the warm-up's softmax weights are summed in fixed point and its potential's
    block sums exactly (``distributed.exact_total``), so the runs see identical gradients and energies
    (before the fixed point, newton-qmc's h differed by 3e-15)."""
    script = _script(tmp_path)
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    subprocess.run([sys.executable, str(script), solver, str(one), "", json.dumps(options)], check=True,
                   env=_env(), timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), solver, str(two), "", json.dumps(options)], check=True, env=_env(), timeout=300,
                   capture_output=True)
    assert np.array_equal(np.load(one), np.load(two))


# ------------------------------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dpmot_bench", *args], capture_output=True, text=True,
                          timeout=300, env=_env())


def test_cli_fit_ot_writes_the_map_and_a_summary(tmp_path):
    out = tmp_path / "ring.npz"
    result = _cli("fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.2", "--n-targets", "40", "--source", "uniform",
                  "--eval-samples", "65536", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"n_targets", "dim", "iterations", "seconds", "l1_mass_error", "max_rel_mass_error", "empty_cells",
            "n_source_samples"} <= set(summary)
    assert summary["n_targets"] == 40 and summary["dim"] == 2
    loaded = SemiDiscreteOT.load(out)
    assert loaded.meta_["dataset"] == "gmm-ring8" and loaded.meta_["sigma_star"] == 0.2
    assert loaded.meta_["source"]["kind"] == "uniform"
    # the l1 error is re-measurable from the file alone, within the noise of two 2^16-point estimates
    errors = loaded.mass_errors(2**16, seed=11)
    assert abs(errors["l1_mass_error"] - summary["l1_mass_error"]) <= 4 * summary["l1_noise_floor"] + 0.01


def test_cli_fit_ot_under_torchrun_gives_the_same_map_as_one_process(tmp_path):
    # 2000 targets: adam-mc draws 10 N = 20000 points per iteration, 3 blocks shared out between the ranks.
    args = ["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.05", "--solver", "adam-mc", "--max-iter", "15",
            "--eval-samples", "65536", "--quiet"]
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    assert _cli(*args, "--out", str(one)).returncode == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "dpmot_bench", *args, "--out", str(two)], capture_output=True, text=True,
                            timeout=300, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"l1_mass_error"') == 1  # rank 0 alone prints the summary (and writes the file)
    assert np.array_equal(SemiDiscreteOT.load(one).h_.numpy(), SemiDiscreteOT.load(two).h_.numpy())


@pytest.mark.parametrize("args", [
    ["--dataset", "nope", "--sigma", "0.1"],
    ["--dataset", "gmm-ring8", "--sigma", "0.1", "--max-iter", "0"],
    ["--dataset", "gmm-ring8", "--sigma", "-1"],
    ["--dataset", "gmm-ring8", "--sigma", "0.1", "--solver", "sinkhorn"],
    ["--dataset", "gmm-ring8", "--sigma", "0.1", "--n-targets", "1"],
    ["--dataset", "gmm-ring8", "--sigma", "0.1", "--source-std", "0"],
    ["--dataset", "digits", "--sigma", "0.1", "--n-targets", "5000"],
])
def test_cli_fit_ot_bad_input_is_status_2_and_writes_nothing(tmp_path, capsys, args):
    from dpmot_bench.cli import main

    out = tmp_path / "out.npz"
    assert main(["fit-ot", *args, "--out", str(out), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.npz*"))


def test_cli_fit_ot_refuses_a_non_npz_output(tmp_path):
    result = _cli("fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--out", str(tmp_path / "x.txt"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
