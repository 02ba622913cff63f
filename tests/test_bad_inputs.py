"""The bad inputs of issue 18, as a table: the CLI answers each with exit status 2 and one line naming the
cause, writes and creates nothing (directories included), and is quick; the library raises InputError."""
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dpmot_bench import resources, theory
from dpmot_bench.models import registry, training
from dpmot_bench.ot import solvers as ot_solvers
from dpmot_bench.samplers import SamplingPlan
from dpmot_bench.cli import main
from dpmot_bench.data import get_dataset
from dpmot_bench.errors import InputError
from dpmot_bench.noise import SampleNoise

S = ["sample", "--dataset", "gmm-ring8", "--n", "5", "--sampler", "euler", "--nfe", "3"]


def files(tmp_path):
    """Inputs the table refers to, built in tmp_path/in."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "d.npz").mkdir()
    (src / "d.pt").mkdir()
    with open(src / "plain.pkl", "wb") as f:
        pickle.dump({"a": object.__name__}, f)
    (src / "junk.bin").write_bytes(b"\x80\x04junk that is not a zip")
    np.savez(src / "empty.npz", x=np.zeros((0, 64), np.float32))
    np.savez(src / "scalar.npz", x=np.float32(3.0))
    np.savez(src / "complex.npz", x=(np.ones((5, 64)) + 1j).astype(np.complex64))
    np.savez(src / "ok.npz", x=np.zeros((5, 64), np.float32))
    meta = '{"format": "dpmot-ot", "source": {"kind": "gaussian", "mean": 0, "std": 1}, "sigma_star": 0.1, ' \
           '"dataset": "gmm-ring8", "seed": 0, "solver": "adam-mc", "version": "0", ' \
           '"schema": "dpmot-latents/2", "split": "heldout", "n_latents": 3, "latent_seed": 0, ' \
           '"latent_stream": [1, 1], "n_latents": 3, "data_range": [1.0]}'
    np.savez(src / "badrange.npz", targets=np.eye(3, 2, dtype=np.float32), weights=np.full(3, 1 / 3),
             h=np.zeros(3), meta=np.array(meta))
    return src


def cases(src, out):
    o = str(out / "new" / "o.npz")
    return [
        (S + ["--option", "sigma_max=abc", "--out", o], "option sigma_max must be a finite number"),
        (S + ["--option", "rho=NaN", "--out", o], "option rho must be a finite number"),
        (S[:-4] + ["--sampler", "ancestral", "--nfe", "3", "--option", "eta=[1,2]", "--out", o], "option eta must be"),
        (S + ["--option", "seed=7", "--out", o], "euler has no option seed"),
        (S[:-4] + ["--sampler", "dpm-ot", "--nfe", "3", "--ot", str(src / "badrange.npz"), "--out", o],
         "no valid data_range"),
        (S + ["--out", str(src / "d.npz")], "is a directory"),
        (["train", "--dataset", "gmm-ring8", "--steps", "5", "--out", str(src / "d.pt")], "is a directory"),
        (S + ["--model", str(src / "plain.pkl"), "--out", o], "is not a readable tensor file"),
        (S + ["--model", str(src / "d.pt"), "--out", o], "has neither model_index.json"),
        (S + ["--model", "", "--out", o], "--model is empty"),
        (["fid", "--samples", str(src / "ok.npz"), "--features", "inception", "--inception-weights",
          str(src / "plain.pkl"), "--dataset", "digits"], "is not a readable tensor file"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--solver", "nosuch", "--out", o], "unknown solver"),
        (["fid", "--samples", str(src / "empty.npz"), "--dataset", "digits"], "with n >= 2"),
        (["fid", "--samples", str(src / "scalar.npz"), "--dataset", "digits"], "with n >= 2"),
        (["fid", "--samples", str(src / "complex.npz"), "--dataset", "digits"], "must be real numbers"),
        (S[:2] + ["gmm-ring8", "--n", "1000000000000", "--sampler", "euler", "--nfe", "3", "--out", o],
         "n must be an integer in [1, 1000000000]"),
        (S[:2] + ["gmm-ring8", "--n", "90000000", "--sampler", "euler", "--nfe", "3", "--out", o],
         "GiB of memory"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--n-targets", "1000000000", "--out", o], "GiB of memory"),
        (S[:-2] + ["--nfe", "1000000000", "--out", o], "nfe must be at most 100000"),
        (["train", "--dataset", "gmm-ring8", "--steps", "1000000000000", "--out", str(out / "new" / "m.pt")],
         "GiB of memory"),
        (["check-bound", "--seeds", "1000000000"], "--seeds must be in [1, 1000]"),
        (["report", "--suite", "tiny", "--threads", "0", "--out", str(out / "new" / "R")],
         "--threads must be a positive integer, got 0"),
        (["bench", "--suite", "tiny", "--threads", "-2", "--out", str(out / "new" / "R")],
         "--threads must be a positive integer, got -2"),
        (["report", "--suite", "tiny", "--jobs", "0", "--out", str(out / "new" / "R")],
         "--jobs must be a positive integer, got 0"),
        (["report", "--suite", "quick", "--data", str(src / "ok.npz"), "--jobs", "2", "--out", str(out / "new" / "R")],
         "--jobs > 1 runs the embedded datasets only"),
        (S + ["--device", "mps", "--out", o], "mps"),
        (S + ["--device", "nosuch", "--out", o], "unknown device 'nosuch'"),
        (S + ["--device", "cpu:5", "--out", o], "there is one CPU device"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--source", "uniform", "--source-std", "3",
          "--out", o], "--source-std do(es) not apply to --source uniform"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--checkpoint", str(src / "ok.npz" / "sub" / "c.npz"),
          "--out", o], "is not a writable directory"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--checkpoint", str(src / "junk.bin"),
          "--n-targets", "10", "--out", o], "not an .npz (zip) archive"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "1e300", "--n-targets", "10", "--out", o],
         "overflows the float32 latents"),
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--eval-samples", str(10 ** 12), "--out", o],
         "--eval-samples must be an integer in [1, 2^36]"),
    ] + ([  # a folder where nothing can be created although its mode bits (and os.access, for root) say yes
        (["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", "--checkpoint", "/proc/c.npz", "--out", o],
         "'/proc' is not a writable directory"),
        (S + ["--out", "/proc/o.npz"], "'/proc' is not a writable directory"),
    ] if Path("/proc/self").is_dir() else [])


def test_bad_cli_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 2 ** 30)  # any machine: 1 GiB
    src, out = files(tmp_path), tmp_path / "out"
    out.mkdir()
    def expensive(*args, **kwargs):
        raise AssertionError("expensive work started before the input was refused")

    # refused before the work: fitting a map, training a model, drawing samples, running bound checks
    monkeypatch.setattr(ot_solvers, "SOLVERS", {name: dataclasses.replace(method, solve=expensive)
                                                for name, method in ot_solvers.SOLVERS.items()})
    monkeypatch.setattr(training, "train_denoiser", expensive)
    monkeypatch.setattr(registry, "train_denoiser", expensive)
    monkeypatch.setattr(SamplingPlan, "sample", expensive)
    monkeypatch.setattr(theory, "run_bound_checks", expensive)
    for args, words in cases(src, out):
        code = main([*args, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1, (args, err)
        assert not any(out.iterdir()), (args, list(out.rglob("*")))  # nothing written, no folder made


@pytest.mark.parametrize("call, words", [
    (lambda: SampleNoise(0, 5).randn(-1), "non-negative integers"),
    (lambda: __import__("dpmot_bench.ot", fromlist=["x"]).SemiDiscreteOT(
        __import__("dpmot_bench.ot", fromlist=["x"]).GaussianSource(2), solver="adam-mc", max_iter=2).fit(
        torch.randn(4, 2)).mass_errors(10 ** 12), r"n_samples must be an integer in \[1, 2\^36\]"),
    (lambda: SampleNoise(0, 2.5), "non-negative integers"),
    (lambda: get_dataset("gmm-ring8").mixture.denoise(torch.zeros(3, 2), torch.ones(4)), "one per row"),
    (lambda: __import__("dpmot_bench.metrics", fromlist=["x"]).high_quality_radius(3, 0), "dim must be"),
    (lambda: __import__("dpmot_bench.models", fromlist=["x"]).TrainConfig(width=2.5), "option width"),
    (lambda: get_dataset("gmm-ring8").data("train", 10 ** 10), "GiB of memory"),
    (lambda: __import__("dpmot_bench.metrics", fromlist=["x"]).sliced_w2(torch.zeros(5, 2), torch.zeros(5, 2),
                                                                          n_projections=10 ** 11), "GiB of memory"),
    (lambda: __import__("dpmot_bench.samplers", fromlist=["x"]).generate(
        "gmm-ring8", "euler", 3, 10 ** 10, 0, lambda x, s: x), "n must be an integer in"),
    (lambda: __import__("dpmot_bench.samplers", fromlist=["x"]).generate(
        "gmm-ring8", "euler", 3, 4, 0, lambda x, s: x, device="nosuch"), "unknown device"),
])
def test_bad_library_inputs_raise_input_error(call, words, monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 2 ** 30)
    with pytest.raises(InputError, match=words):
        call()


def _device_calls(tmp_path):
    from dpmot_bench.bench.runner import run_suite
    from dpmot_bench.bench.suites import get_suite
    from dpmot_bench.ot import GaussianSource, SemiDiscreteOT
    from dpmot_bench.report.build import build_report
    from dpmot_bench.samplers import generate

    ring = get_dataset("gmm-ring8")
    fitted = SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=2).fit(torch.randn(4, 2))
    fitted.save(tmp_path / "ot.npz")
    return {
        "generate": lambda device: generate(ring, "euler", 3, 4, 0, ring.mixture.denoise, device=device),
        "fit": lambda device: SemiDiscreteOT(GaussianSource(2), solver="adam-mc", max_iter=2,
                                             device=device).fit(torch.randn(4, 2)),
        "load": lambda device: SemiDiscreteOT.load(tmp_path / "ot.npz", device=device),
        "train": lambda device: training.train_denoiser(ring, training.TrainConfig(steps=2), device=device),
        "run_suite": lambda device: run_suite(get_suite("tiny"), tmp_path / "new" / "R", device=device),
        "build_report": lambda device: build_report(get_suite("tiny"), tmp_path / "new" / "R", device=device),
        "bound_checks": lambda device: theory.run_bound_checks("tiny", device=device),
    }


@pytest.mark.parametrize("entry", ["run_suite", "build_report"])
@pytest.mark.parametrize("threads", [0, 2.0, True, "2"])
def test_bad_thread_counts_are_refused_before_a_run_folder_is_made(entry, threads, tmp_path):
    from dpmot_bench.bench.runner import run_suite
    from dpmot_bench.bench.suites import get_suite
    from dpmot_bench.report.build import build_report

    with pytest.raises(InputError, match="threads must be a positive integer"):
        {"run_suite": run_suite, "build_report": build_report}[entry](get_suite("tiny"), tmp_path / "new", threads=threads)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("device, words", [("nosuch", "unknown device 'nosuch'"), ("cpu:5", "one CPU device")])
@pytest.mark.parametrize("entry", ["generate", "fit", "load", "train", "run_suite", "build_report", "bound_checks"])
def test_a_bad_device_is_an_input_error_at_each_library_entry_point(entry, device, words, tmp_path):
    # no stand-in for the memory estimate here: it must read the device through the one device check too
    with pytest.raises(InputError, match=words):
        _device_calls(tmp_path)[entry](device)
    assert not (tmp_path / "new").exists()  # refused before a run folder (or its lock) is created
