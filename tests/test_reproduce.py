"""dpmot reproduce end to end on a tiny stand-in of the paper's protocol (random 8x8x3 images, 64 latents, a
small NCSNv2 with random weights, a randomly initialised FID Inception), and its refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from dpmot_bench.cli import main
from dpmot_bench.metrics.inception_net import random_fid_inception
from dpmot_bench.report.reproduce import example_configs, load_config

from .test_models_files import ema_of, random_net, save_ncsnv2, small_yaml, write_yaml


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reproduce")
    rng = np.random.default_rng(0)
    np.savez(folder / "tiny.npz", train=rng.integers(0, 256, (48, 3, 8, 8), dtype=np.uint8),
             test=rng.integers(0, 256, (64, 3, 8, 8), dtype=np.uint8))
    config = small_yaml(**{"model.num_classes": 20, "model.sigma_begin": 2.0, "model.sigma_end": 0.01})
    config["sampling"] = {"step_lr": 0.000005}
    net = random_net(config)
    save_ncsnv2(folder / "ncsnv2.pth", net, ema_of(net))
    write_yaml(folder / "ncsnv2.yml", config)
    torch.save(random_fid_inception(seed=0).state_dict(), folder / "inception.pth")
    experiment = {
        "name": "tiny", "data": {"path": "tiny.npz", "value_range": [0, 255]},
        "model": {"path": "ncsnv2.pth", "config": "ncsnv2.yml"},
        "protocol": {"presets": ["paper", "default"], "baselines": ["langevin"], "nfe": [3], "seeds": [0],
                     "samples": 16, "latents": 64},
        "metrics": {"features": "inception", "inception_weights": "inception.pth", "kid": True},
        "device": "cpu", "out": "report"}
    (folder / "tiny.yml").write_text(yaml.safe_dump(experiment))
    return folder, experiment


@pytest.mark.slow
def test_reproduce_runs_the_protocol_and_writes_the_report(files, capsys):
    folder, _ = files
    assert main(["reproduce", str(folder / "tiny.yml"), "--quiet"]) == 0
    index = folder / "report" / "index.md"
    assert capsys.readouterr().out.strip() == str(index)
    text = index.read_text()
    assert "dpmot reproduce" in text and "NCSNv2" in text and "Inception" in text and "KID" in text
    results = json.loads((folder / "report" / "results.json").read_text())
    samples = [r for r in results["rows"] if r["task"] == "sample"]
    assert sorted(r["method"] for r in samples) == ["dpm-ot", "dpm-ot-paper", "langevin"]
    for row in samples:
        assert row["nfe_spent"] == 3 and np.isfinite(row["fd"]) and "kid_mean" in row
    fits = [r for r in results["rows"] if r["task"] == "ot-fit"]
    assert {r["method"] for r in fits} == {"dpm-ot", "dpm-ot-paper"} and all(r["n_targets"] == 64 for r in fits)
    # the paper preset runs on the model's own NCSNv2 levels: its latents sit at level L - K = 20 - 2
    paper = next(r for r in fits if r["method"] == "dpm-ot-paper")
    levels = np.exp(np.linspace(np.log(2.0), np.log(0.01), 20))
    assert paper["sigma_star"] == pytest.approx(levels[18], rel=1e-6)
    # resuming a finished run recomputes nothing and rewrites the same rows
    assert main(["reproduce", str(folder / "tiny.yml"), "--quiet", "--resume"]) == 0
    again = json.loads((folder / "report" / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]  # noqa: E731
    assert strip(again["rows"]) == strip(results["rows"])


@pytest.mark.parametrize("change, words", [
    ({"protocol": {"presets": ["fast"]}}, "unknown protocol.presets entry 'fast'"),
    ({"protocol": {"nfe": [0]}}, "protocol.nfe"),
    ({"protocol": {"samples": "many"}}, "protocol.samples"),
    ({"metrics": {"featurs": "raw"}}, "metrics has no key featurs"),
    ({"model": {"path": "missing.pth"}}, "does not exist"),
    ({"metrics": {"features": "inception", "inception_weights": None}}, "needs inception_weights"),
    ({"extra": 1}, "no section extra"),
])
def test_bad_experiment_files_exit_2_with_one_line_and_write_nothing(files, tmp_path, capsys, change, words):
    folder, experiment = files
    bad = json.loads(json.dumps(experiment))
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(bad.get(section), dict):
            bad[section].update(value)
        else:
            bad[section] = value
    bad["out"] = str(tmp_path / "out")
    for key in ("data", "model"):
        bad[key]["path"] = str(folder / bad[key]["path"]) if bad[key].get("path") not in (None,) else None
    bad["model"]["config"] = str(folder / "ncsnv2.yml")
    if bad["metrics"].get("inception_weights"):
        bad["metrics"]["inception_weights"] = str(folder / "inception.pth")
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(bad))
    code = main(["reproduce", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_model_file_that_is_not_one_exits_2_before_the_output_exists(files, tmp_path, capsys):
    folder, experiment = files
    (tmp_path / "fake.pth").write_bytes(b"not a checkpoint")
    bad = {**experiment, "model": {"path": str(tmp_path / "fake.pth"), "config": str(folder / "ncsnv2.yml")},
           "data": {"path": str(folder / "tiny.npz")}, "metrics": {"features": "raw"}, "out": str(tmp_path / "out")}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    assert main(["reproduce", str(tmp_path / "bad.yml"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "out").exists()
    (tmp_path / "syntax.yml").write_text("data: [unclosed")
    assert main(["reproduce", str(tmp_path / "syntax.yml")]) == 2 and "not valid YAML" in capsys.readouterr().err


def test_shipped_configs_name_the_reference_protocols():
    examples = example_configs()
    assert set(examples) >= {"cifar10-ncsnv2", "celeba-ncsnv2"}
    cifar = yaml.safe_load(examples["cifar10-ncsnv2"].read_text())
    assert cifar["protocol"]["nfe"] == [11] and cifar["protocol"]["latents"] == 10000
    assert cifar["protocol"]["samples"] == 40000 and cifar["metrics"]["features"] == "inception"
    celeba = yaml.safe_load(examples["celeba-ncsnv2"].read_text())
    assert celeba["protocol"]["nfe"] == [21]
    with pytest.raises(Exception, match="does not exist"):  # its files are the user's to bring
        load_config(examples["cifar10-ncsnv2"])
