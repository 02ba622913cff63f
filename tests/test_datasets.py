"""The named datasets: shapes, labels, the fixed digits split, determinism, errors."""
import numpy as np
import pytest
import torch

from dpmot_bench.data import SPLITS, dataset_names, get_dataset
from dpmot_bench.data.digits import to_images
from dpmot_bench.errors import InputError, UnknownNameError


def test_required_names_exist():
    assert {"gmm-grid25", "gmm-ring8", "gmm-hd", "digits"} <= set(dataset_names())


@pytest.mark.parametrize("name", ["gmm-grid25", "gmm-ring8", "gmm-hd", "digits"])
def test_splits_are_fixed_flat_float32_with_labels(name):
    dataset = get_dataset(name)
    for split in SPLITS:
        x, y = dataset.data(split, 100)
        assert x.shape == (100, dataset.dim) and x.dtype == torch.float32 and y.shape == (100,)
        assert int(y.min()) >= 0 and int(y.max()) < dataset.n_classes
        again, _ = get_dataset(name).data(split, 100)
        assert torch.equal(x, again)
    train, _ = dataset.data("train", 100)
    heldout, _ = dataset.data("heldout", 100)
    assert torch.cdist(train, heldout).min() > 0  # train and held-out do not share rows


def test_gmm_modes_match_design():
    grid = get_dataset("gmm-grid25").mixture
    assert grid.n_components == 25 and set(grid.means.flatten().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert torch.allclose(grid.stds, torch.full((25,), 0.05, dtype=torch.float64))
    ring = get_dataset("gmm-ring8").mixture
    assert ring.n_components == 8 and torch.allclose(ring.means.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(ring.stds, torch.full((8,), 0.01, dtype=torch.float64))
    hd = get_dataset("gmm-hd").mixture
    assert hd.dim >= 16
    separation = torch.cdist(hd.means, hd.means) + torch.eye(hd.n_components) * 1e9
    assert separation.min() > 10 * hd.stds.max() * hd.dim ** 0.5 / 2


def test_digits_split_is_stratified_scaled_and_complete():
    dataset = get_dataset("digits")
    x_tr, y_tr = dataset.data("train")
    x_ho, y_ho = dataset.data("heldout")
    assert (len(y_tr), len(y_ho)) == (1347, 450)
    assert float(x_tr.min()) == -1.0 and float(x_tr.max()) == 1.0
    # Stratified: each class's held-out share is 25% up to rounding of one image.
    counts_tr = np.bincount(y_tr.numpy(), minlength=10)
    counts_ho = np.bincount(y_ho.numpy(), minlength=10)
    assert np.all(np.abs(counts_ho - 0.25 * (counts_tr + counts_ho)) <= 1)
    from sklearn.datasets import load_digits

    assert sorted(map(tuple, np.vstack([x_tr, x_ho]).tolist())) == sorted(
        map(tuple, (load_digits().data / 8 - 1).astype(np.float32).tolist()))
    assert to_images(x_tr[:3]).shape == (3, 1, 8, 8)


def test_dataset_errors():
    with pytest.raises(UnknownNameError, match="gmm-ring8"):
        get_dataset("cifar10")
    with pytest.raises(InputError, match="split"):
        get_dataset("gmm-ring8").data("test")
    with pytest.raises(InputError, match="450"):
        get_dataset("digits").data("heldout", 451)
    with pytest.raises(InputError, match="finite"):
        get_dataset("digits").sample(10, seed=0)


def test_fresh_samples_differ_from_the_fixed_splits():
    dataset = get_dataset("gmm-ring8")
    train, _ = dataset.data("train", 50)
    for seed in (0, 1, 2):
        fresh, _ = dataset.sample(50, seed=seed)
        assert not torch.equal(fresh, train)
