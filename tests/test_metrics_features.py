"""Feature extractors: the digits classifier (trained once into a temporary cache) and the InceptionV3
plumbing (with stand-in extractors: torch-fidelity is not installable here)."""
import fcntl
import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from dpmot_bench.data import get_dataset
from dpmot_bench.errors import CorruptFileError, InputError, NonFiniteError, ShapeError
from dpmot_bench.metrics import InceptionFeatures, frechet_distance, get_digits_classifier, mode_mixture_ratio
from dpmot_bench.metrics.classifier import DEFAULT_CONFIG, classifier_cache_path, train_digits_classifier

TINY = {"epochs": 1, "width": 4, "features": 16}  # seconds to train: for cache and determinism checks


@pytest.fixture(scope="module")
def cache(tmp_path_factory, monkeypatch_module):
    """One cache directory per test run, shared by the pytest-xdist workers of that run."""
    run_dir = tmp_path_factory.getbasetemp()
    path = (run_dir.parent if os.environ.get("PYTEST_XDIST_WORKER") else run_dir) / "dpmot-cache"
    path.mkdir(exist_ok=True)
    monkeypatch_module.setenv("DPMOT_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def classifier(cache):
    with open(cache / "classifier.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains, the others wait and load its cache entry
        return get_digits_classifier()


def test_classifier_is_accurate_on_the_heldout_split(classifier):
    x, y = get_dataset("digits").data("heldout")
    assert classifier.heldout_accuracy >= 0.97
    assert classifier.heldout_accuracy == float((classifier.probs(x).argmax(1) == y).double().mean())


def test_classifier_outputs(classifier):
    x, _ = get_dataset("digits").data("heldout", 50)
    probs, feats = classifier.probs(x), classifier.features(x)
    assert probs.shape == (50, 10) and feats.shape == (50, DEFAULT_CONFIG["features"])
    assert torch.allclose(probs.sum(1), torch.ones(50), atol=1e-6)  # float32 softmax rounding
    assert torch.equal(classifier.probs(x.reshape(50, 1, 8, 8)), probs)
    assert torch.equal(classifier.probs(x.numpy()), probs)
    # Clean digits are confidently classified: the mixture rule flags few (an upper bound, not a tuned value:
    # a mixed sample needs two classes >= 0.2, i.e. a top probability <= 0.8; accuracy 97% leaves room).
    assert mode_mixture_ratio(classifier.probs(get_dataset("digits").data("heldout")[0])) <= 0.1


def test_classifier_features_separate_data_from_noise(classifier):
    train, heldout = (classifier.features(get_dataset("digits").data(s)[0]) for s in ("train", "heldout"))
    noise = classifier.features(torch.rand(450, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert frechet_distance(train, heldout) < frechet_distance(train, noise) / 10


def test_classifier_cache_reloads_identically(classifier, cache):
    again = get_digits_classifier()
    assert again.training_seconds is None  # loaded, not trained
    assert again.heldout_accuracy == classifier.heldout_accuracy
    for a, b in zip(classifier.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert classifier_cache_path().parent == cache / "classifiers" and classifier_cache_path().is_file()
    assert classifier_cache_path(TINY) != classifier_cache_path()


def test_training_is_deterministic_and_leaves_global_state_alone():
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    first = train_digits_classifier(TINY)
    second = train_digits_classifier(TINY)
    assert torch.equal(torch.get_rng_state(), rng_state) and torch.get_num_threads() == threads
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    other = train_digits_classifier({**TINY, "seed": 1})
    assert not torch.equal(first.head[1].weight, other.head[1].weight)


def test_corrupt_cache_entry_is_retrained(cache):
    model = get_digits_classifier(config=TINY)
    classifier_cache_path(TINY).write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = get_digits_classifier(config=TINY)
    assert again.training_seconds is not None
    assert torch.equal(again.head[1].weight, model.head[1].weight)
    assert get_digits_classifier(config=TINY).training_seconds is None  # the rewritten entry loads


def test_classifier_bad_input(classifier):
    with pytest.raises(ShapeError):
        classifier.probs(torch.zeros(5, 63))
    with pytest.raises(ShapeError):
        classifier.probs(torch.zeros(5, 1, 7, 7))
    with pytest.raises(ShapeError):
        classifier.features(torch.zeros(0, 64))
    with pytest.raises(NonFiniteError):
        classifier.probs(torch.full((2, 64), float("nan")))
    with pytest.raises(InputError, match="unknown classifier config"):
        get_digits_classifier(config={"epoch": 3})


# ------------------------------------------------------------------------------------------ Inception
def test_missing_or_corrupt_weights_file(tmp_path):
    with pytest.raises(CorruptFileError, match="does not exist"):
        InceptionFeatures(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a state dict")
    with pytest.raises(CorruptFileError, match="Inception weights file .* is not a readable tensor file"):
        InceptionFeatures(garbage)


def test_cli_fid_agrees_with_the_library_and_rejects_bad_input(classifier, tmp_path, capsys):
    from dpmot_bench.cli import main

    digits = get_dataset("digits")
    heldout, train = digits.data("heldout")[0], digits.data("train")[0]
    samples = tmp_path / "heldout.npz"
    np.savez(samples, x=heldout.numpy())
    assert main(["fid", "--samples", str(samples), "--dataset", "digits", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = frechet_distance(classifier.features(heldout), classifier.features(train))
    assert result["fd"] == pytest.approx(expected, rel=1e-9)
    assert (result["n_samples"], result["n_reference"]) == (450, 1347)

    flat2d = tmp_path / "ring.npz"
    np.savez(flat2d, x=np.zeros((10, 2), dtype=np.float32))
    for args in (["--samples", str(tmp_path / "missing.npz"), "--dataset", "digits"],
                 ["--samples", str(samples), "--dataset", "digits", "--features", "inception"],
                 ["--samples", str(samples)],
                 ["--samples", str(flat2d), "--dataset", "digits"],
                 ["--samples", str(samples), "--dataset", "nope"]):
        assert main(["fid", *args, "--quiet"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
