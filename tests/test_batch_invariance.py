"""Samples with trained networks do not depend on the batch size (bitwise), through the CLI as the README
promises: `--batch-size` changes speed, never the numbers. Checked for every kind of sampler, on a digits
UNet and a gmm-ring8 MLP (briefly trained: the property is about arithmetic, not about quality)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from dpmot_bench.cli import main
from dpmot_bench.data import get_dataset
from dpmot_bench.denoisers import FixedBatchDenoiser
from dpmot_bench.models.training import default_config, train_denoiser


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, steps in (("digits", 3), ("gmm-ring8", 20)):
        dataset = get_dataset(name)
        config = replace(default_config(dataset), steps=steps)
        paths[name] = folder / f"{name}.pt"
        train_denoiser(dataset, config, seed=0, progress=False, checkpoint=paths[name])
    return paths


def _sample(tmp_path, dataset, model, sampler, batch_size, extra=()):
    out = tmp_path / f"{sampler}-{batch_size}.npz"
    code = main(["sample", "--quiet", "--dataset", dataset, "--sampler", sampler, "--nfe", "4", "--n", "45",
                 "--seed", "3", "--model", str(model), "--batch-size", str(batch_size), "--out", str(out), *extra])
    assert code == 0
    with np.load(out, allow_pickle=False) as f:
        return f["x"]


@pytest.mark.parametrize("dataset", ["digits", "gmm-ring8"])
@pytest.mark.parametrize("sampler, extra", [
    ("dpmpp-2m", ()), ("ancestral", ()), ("heun", ()), ("langevin", ()), ("diffusers-heun", ()),
    ("dpm-ot", ("--option", "n_latents=40", "--option", "solver=adam-mc",
                "--option", 'solver_options={"max_iter": 3}'))])
def test_trained_model_samples_do_not_depend_on_the_batch_size(checkpoints, tmp_path, dataset, sampler, extra):
    reference = _sample(tmp_path, dataset, checkpoints[dataset], sampler, 2048, extra)
    for batch_size in (1, 7, 64, 100):
        np.testing.assert_array_equal(_sample(tmp_path, dataset, checkpoints[dataset], sampler, batch_size, extra),
                                      reference, err_msg=f"batch size {batch_size}")


def test_without_the_fixed_micro_batches_the_property_fails(checkpoints):
    # the test above can fail: the raw network's outputs do change with the batch shape
    from dpmot_bench.models.training import model_from_checkpoint

    net = model_from_checkpoint(checkpoints["digits"])[0]
    x = torch.randn(100, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        alone = torch.cat([net(x[i:i + 1], 0.5) for i in range(100)])
        together = net(x, 0.5)
        fixed = FixedBatchDenoiser(net)
        assert not torch.equal(alone, together)
        assert torch.equal(torch.cat([fixed(x[i:i + 1], 0.5) for i in range(100)]), fixed(x, 0.5))


def test_fixed_batches_pass_per_row_levels():
    seen = []

    def denoiser(x, sigma):
        seen.append((x.shape[0], sigma if not isinstance(sigma, torch.Tensor) else tuple(sigma.shape)))
        return x * (sigma.reshape(-1, 1) if isinstance(sigma, torch.Tensor) else sigma)

    x, sigma = torch.randn(5, 2), torch.arange(1.0, 6.0)
    out = FixedBatchDenoiser(denoiser, rows=4)(x, sigma)
    assert torch.equal(out, x * sigma[:, None]) and seen == [(4, (4,)), (4, (4,))]
