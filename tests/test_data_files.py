"""A user's own data: arrays, .npy / .npz files and image folders give the same Dataset rows; bad files are
refused with one line; memory-mapped arrays stay mapped."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from dpmot_bench.cli import main
from dpmot_bench.data import from_array, from_path
from dpmot_bench.errors import CorruptFileError, InputError, NonFiniteError, ShapeError


def _images(n=30, channels=3, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def _folder(path, images):
    path.mkdir()
    for i, image in enumerate(images):
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(array).save(path / f"{i:04d}.png")
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_uint8_npz_float_npz_and_npy_give_the_same_rows(tmp_path, channels):
    images = _images(channels=channels)
    np.savez(tmp_path / "u8.npz", x=images)
    np.savez_compressed(tmp_path / "f.npz", x=images.astype(np.float32) / 255)
    np.save(tmp_path / "u8.npy", images)
    sets = [from_path(_folder(tmp_path / "imgs", images)), from_path(tmp_path / "u8.npz"),
            from_path(tmp_path / "f.npz", scale_to=(-1, 1)), from_path(tmp_path / "u8.npy")]
    for dataset in sets:
        assert dataset.shape == (channels, 8, 8) and dataset.dim == channels * 64
        assert dataset.value_range == (-1.0, 1.0)
        assert "values [0, 255]" in dataset.description or "values [0, 1]" in dataset.description
    for split in ("train", "heldout"):
        reference = sets[0].data(split)[0]
        for dataset in sets[1:]:
            # uint8 k maps to k / 127.5 - 1 and float k / 255 to the same value up to float32 rounding
            torch.testing.assert_close(dataset.data(split)[0], reference, atol=2e-7, rtol=0)
    rows = torch.cat([sets[1].data("train")[0], sets[1].data("heldout")[0]]).double()
    torch.testing.assert_close(rows, rows.mul(127.5).add(127.5).round().div(127.5).sub(1), atol=1e-6, rtol=0)
    pixels = rows.add(1).mul(127.5).round().to(torch.uint8).numpy()  # back to the file's integers
    assert sorted(map(bytes, pixels)) == sorted(map(bytes, images.reshape(len(images), -1)))  # a partition


def test_uncompressed_npz_and_npy_are_memory_mapped(tmp_path):
    np.savez(tmp_path / "a.npz", train=_images(), heldout=_images(10, seed=1))
    np.save(tmp_path / "b.npy", _images())
    for path in ("a.npz", "b.npy"):
        rows = from_path(tmp_path / path).splits("train")[0]
        inner = getattr(rows, "rows", rows)  # rescaled: an affine view of the file's rows
        assert isinstance(inner.array, np.memmap)


def test_given_splits_labels_and_class_folders(tmp_path):
    x, labels = _images(20), np.arange(20) % 4
    np.savez(tmp_path / "s.npz", train=x[:15], heldout=x[15:], train_labels=labels[:15], heldout_labels=labels[15:])
    dataset = from_path(tmp_path / "s.npz")
    assert dataset.size("train") == 15 and dataset.size("heldout") == 5 and dataset.n_classes == 4
    assert dataset.data("heldout")[1].tolist() == labels[15:].tolist()
    root = tmp_path / "classes"
    for i, image in enumerate(x):
        (root / "train" / f"c{labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(root / "train" / f"c{labels[i]}" / f"{i}.png")
    (root / "test" / "c1").mkdir(parents=True)
    Image.fromarray(x[0].transpose(1, 2, 0)).save(root / "test" / "c1" / "a.png")
    folders = from_path(root)
    assert folders.size("train") == 20 and folders.size("heldout") == 1 and folders.n_classes == 4
    assert folders.data("heldout")[1].tolist() == [1]


def test_seeded_split_is_a_fixed_function_of_the_seed(tmp_path):
    x = np.random.default_rng(3).standard_normal((50, 4)).astype(np.float32)
    a, b, c = from_array(x, split_seed=1), from_array(x, split_seed=1), from_array(x, split_seed=2)
    assert torch.equal(a.data("heldout")[0], b.data("heldout")[0])
    assert not torch.equal(a.data("heldout")[0], c.data("heldout")[0])
    assert a.size("heldout") == 10 and a.value_range == (float(x.min()), float(x.max()))
    assert a.fingerprint == b.fingerprint != c.fingerprint


@settings(max_examples=25, deadline=None)
@given(low=st.floats(-10, 10), width=st.floats(0.1, 10), n=st.integers(5, 40), d=st.integers(1, 6))
def test_rescaled_rows_are_the_affine_image_of_the_rows(low, width, n, d):
    x = np.random.default_rng(n * d).uniform(low, low + width, (n, d)).astype(np.float32)
    dataset = from_array(x, value_range=(low, low + width))
    mapped = dataset.rescaled(0.0, 1.0)
    for split in ("train", "heldout"):
        rows, target = dataset.data(split)[0].double(), mapped.data(split)[0].double()
        torch.testing.assert_close(target, (rows - low) / width, atol=1e-5 * (1 + abs(low) / width), rtol=1e-5)
    assert mapped.value_range == (0.0, 1.0)


def _write(path, text):
    path.write_text(text)
    return path


def _pickle(path):
    with open(path, "wb") as f:
        pickle.dump({"x": object()}, f)
    return path


@pytest.mark.parametrize("make, error, words", [
    (lambda p: np.save(p / "nan.npy", np.array([[0.0, np.nan], [1, 2], [3, 4], [5, 6], [7, 8]])) or p / "nan.npy",
     NonFiniteError, "NaN or infinity"),
    (lambda p: _pickle(p / "obj.npy"), CorruptFileError, "not a readable .npy"),
    (lambda p: np.savez(p / "keys.npz", y=np.zeros(3)) or p / "keys.npz", CorruptFileError, "expected x"),
    (lambda p: _write(p / "t.npz", "not a zip"), CorruptFileError, "not a readable .npz"),
    (lambda p: np.save(p / "flat.npy", np.zeros(5)) or p / "flat.npy", ShapeError, "at least one non-empty row"),
    (lambda p: np.save(p / "one.npy", np.zeros((1, 3))) or p / "one.npy", ShapeError, "too few"),
    (lambda p: np.savez(p / "lab.npz", x=np.zeros((5, 2)), labels=np.zeros(4)) or p / "lab.npz", ShapeError, "labels"),
    (lambda p: np.savez(p / "neg.npz", x=np.zeros((5, 2)), labels=-np.ones(5, int)) or p / "neg.npz", InputError, ">= 0"),
    (lambda p: p / "missing.npz", CorruptFileError, "does not exist"),
    (lambda p: _write(p / "x.csv", "1,2"), CorruptFileError, "neither"),
    (lambda p: (p / "empty").mkdir() or p / "empty", InputError, "no PNG or JPEG"),
])
def test_bad_data_files_are_refused_with_one_line(tmp_path, make, error, words):
    path = make(tmp_path)
    with pytest.raises(error, match=words) as info:
        from_path(path)
    assert "\n" not in str(info.value)


def test_mixed_image_sizes_and_out_of_range_values_are_refused(tmp_path):
    folder = _folder(tmp_path / "mixed", _images(3))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "9999.png")
    with pytest.raises(ShapeError, match="differ in size"):
        from_path(folder)
    with pytest.raises(InputError, match="outside value_range"):
        from_array(np.linspace(0, 2, 20).reshape(10, 2), value_range=(0, 1))


def test_cli_data_is_not_an_abbreviation_of_dataset_and_bad_data_exits_2(tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=np.full((10, 2), np.nan))
    out = tmp_path / "s.npz"
    code = main(["sample", "--data", str(tmp_path / "bad.npz"), "--sampler", "euler", "--nfe", "2", "--n", "4",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN" in err and err.count("\n") == 1 and not out.exists()
    with pytest.raises(SystemExit) as info:  # --datas is not --dataset / --data
        main(["sample", "--datas", "x", "--sampler", "euler", "--nfe", "2", "--n", "4", "--out", str(out)])
    assert info.value.code == 2
    code = main(["fit-ot", "--dataset", "gmm-ring8", "--value-range", "0", "1", "--sigma", "0.1", "--out",
                 str(tmp_path / "m.npz"), "--quiet"])
    assert code == 2 and "--value-range applies to --data" in capsys.readouterr().err


def test_cli_fit_ot_and_sample_on_a_user_array(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((200, 2)).astype(np.float32)
    np.save(tmp_path / "pts.npy", x)
    assert main(["fit-ot", "--data", str(tmp_path / "pts.npy"), "--sigma", "0.05", "--out",
                 str(tmp_path / "m.npz"), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "pts" and summary["n_targets"] == 40 and "value_range" in summary
    assert summary["l1_mass_error"] < 1e-6  # the exact 2-D solver
    assert main(["sample", "--data", str(tmp_path / "pts.npy"), "--sampler", "dpm-ot", "--ot", str(tmp_path / "m.npz"),
                 "--nfe", "3", "--n", "8", "--model", "exact", "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0
    with np.load(tmp_path / "s.npz") as arrays:
        assert arrays["x"].shape == (8, 2) and arrays["index"].max() < 40
