"""--model with a user's model file on a user's data: every sampler, DPM-OT included, runs on a tiny
randomly initialised diffusers UNet and spends the NFE asked; the data is mapped into the model's range."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from dpmot_bench.cli import main
from dpmot_bench.samplers.generate import SAMPLER_NAMES

from .test_models_files import save_pipeline


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("usermodel")
    save_pipeline(folder / "ddpm")
    images = np.random.default_rng(0).integers(0, 256, (80, 3, 8, 8), dtype=np.uint8)
    np.savez(folder / "images.npz", x=images)
    return folder


@pytest.mark.parametrize("sampler", sorted(SAMPLER_NAMES))
def test_every_sampler_runs_on_a_diffusers_pipeline_and_spends_the_nfe(files, tmp_path, capsys, sampler):
    nfe = 3
    args = ["sample", "--data", str(files / "images.npz"), "--model", str(files / "ddpm"), "--sampler", sampler,
            "--nfe", str(nfe), "--n", "6", "--out", str(tmp_path / "s.npz"), "--quiet"]
    if sampler.startswith("dpm-ot"):  # a small, quick fit over the 16 held-out latents
        args += ["--option", "solver=adam-mc", "--option", 'solver_options={"max_iter": 5}']
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the grid clipped into the DDPM's sigma range (tested elsewhere)
        code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["nfe_spent"] == nfe and summary["model_description"].startswith("diffusers DDPMPipeline")
    assert summary["value_range"] == [-1.0, 1.0]  # uint8 images mapped into diffusers' [-1, 1]
    with np.load(tmp_path / "s.npz", allow_pickle=False) as arrays:
        assert arrays["x"].shape == (6, 192) and np.isfinite(arrays["x"]).all()


def test_a_model_of_another_shape_is_refused_in_one_line(files, tmp_path, capsys):
    np.save(tmp_path / "rows.npy", np.zeros((20, 5), np.float32) + np.arange(5, dtype=np.float32))
    code = main(["sample", "--data", str(tmp_path / "rows.npy"), "--model", str(files / "ddpm"), "--sampler", "euler",
                 "--nfe", "2", "--n", "3", "--out", str(tmp_path / "s.npz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "shape (3, 8, 8)" in err and err.count("\n") == 1 and not (tmp_path / "s.npz").exists()


def test_model_config_without_model_is_refused(tmp_path, capsys):
    code = main(["sample", "--dataset", "gmm-ring8", "--model-config", "x.yml", "--sampler", "euler", "--nfe", "2",
                 "--n", "3", "--out", str(tmp_path / "s.npz"), "--quiet"])
    assert code == 2 and "give --model too" in capsys.readouterr().err
