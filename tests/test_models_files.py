"""Models from files (dpmot_bench.models.load_denoiser): diffusers directories, NCSNv2 checkpoints with their
YAML, this toolkit's own checkpoints, and the files that are none of these.

Stand-ins are built here with random weights: a tiny diffusers UNet2DModel, NCSNv2 networks (the CIFAR-10
architecture at its published size, a small one for fast property checks, and the Deeper / Deepest
architectures), and a 5-step MLP trained on a data set that is not registered."""
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import yaml

from dpmot_bench import schedules
from dpmot_bench.data import Dataset, get_dataset
from dpmot_bench.errors import CorruptFileError, InputError
from dpmot_bench.models import (LoadedModel, NCSNv2Net, TrainConfig, get_denoiser, load_denoiser, parse_ncsnv2_config,
                                train_denoiser, unet_denoiser)
from dpmot_bench.models.training import load_checkpoint

F32 = torch.finfo(torch.float32).eps

# The model and data sections of the NCSNv2 code's configs/cifar10.yml (as published).
CIFAR10_YAML = """
data:
  dataset: "CIFAR10"
  image_size: 32
  channels: 3
  logit_transform: false
  uniform_dequantization: false
  gaussian_dequantization: false
  random_flip: true
  rescaled: false
  num_workers: 4
model:
  sigma_begin: 50
  num_classes: 232
  ema: true
  ema_rate: 0.999
  spec_norm: false
  sigma_dist: geometric
  sigma_end: 0.01
  normalization: InstanceNorm++
  nonlinearity: elu
  ngf: 128
"""


def one_line(err) -> bool:
    return "\n" not in str(err.value) and len(str(err.value)) > 0


# ------------------------------------------------------------------------------------------- diffusers

def tiny_unet(seed=0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    return unet.eval()


def save_pipeline(folder, prediction_type="epsilon", beta_schedule="linear"):
    from diffusers import DDPMPipeline, DDPMScheduler

    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type, clip_sample=False,
                              beta_schedule=beta_schedule)
    DDPMPipeline(unet, scheduler).save_pretrained(folder)
    return unet, scheduler


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "ddpm"
    unet, scheduler = save_pipeline(folder)
    return folder, unet, scheduler


def test_pipeline_directory_loads_and_agrees_with_the_adapter(pipeline):
    folder, unet, scheduler = pipeline
    model = load_denoiser(folder)
    assert isinstance(model, LoadedModel) and model.kind == "diffusers" and model.shape == (3, 8, 8)
    assert model.data_range == (-1.0, 1.0) and model.config["prediction_type"] == "epsilon"
    direct = unet_denoiser(unet, scheduler)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 192, generator=g)
    for sigma in (0.05, 0.7, torch.tensor(1.2), torch.tensor([0.02, 0.1, 0.5, 1.0, 2.0])):
        mine = model.denoiser(x, sigma)
        with torch.no_grad():
            ref = direct(x, sigma)
        assert mine.shape == x.shape and not mine.requires_grad
        torch.testing.assert_close(mine, ref, rtol=0, atol=16 * F32 * float(ref.abs().max()))
    images = model.denoiser(x.reshape(5, 3, 8, 8), 0.3)
    torch.testing.assert_close(images.reshape(5, -1), model.denoiser(x, 0.3), rtol=0, atol=0)


def test_unet_directory_with_scheduler_directory_gives_the_same(pipeline):
    folder, _, _ = pipeline
    whole = load_denoiser(folder)
    parts = load_denoiser(folder / "unet", scheduler=folder / "scheduler")
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(whole.denoiser(x, 0.4), parts.denoiser(x, 0.4))
    assert torch.equal(whole.sigmas, parts.sigmas)
    with pytest.raises(InputError, match="--scheduler DIR") as err:
        load_denoiser(folder / "unet")
    assert one_line(err)


def test_sigma_grid_is_the_schedule_read_from_the_file(tmp_path):
    _, scheduler = save_pipeline(tmp_path / "cos", beta_schedule="squaredcos_cap_v2")
    model = load_denoiser(tmp_path / "cos")
    abar = scheduler.alphas_cumprod.double()
    expected = torch.sqrt((1 - abar) / abar).flip(0)  # t = K-1 .. 0
    assert model.sigmas.dtype == torch.float64 and len(model.sigmas) == 100
    torch.testing.assert_close(model.sigmas, expected, rtol=1e-12, atol=0)
    assert bool((model.sigmas[1:] < model.sigmas[:-1]).all())
    assert model.sigma_max == pytest.approx(float(expected[0]), rel=1e-12)
    assert model.sigma_min == pytest.approx(float(expected[-1]), rel=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_every_prediction_type_matches_diffusers_own_x0_prediction(tmp_path, prediction_type):
    """D(x, sigma_t) with x = x_vp / sqrt(abar_t) is DDPMScheduler.step's pred_original_sample at step t."""
    unet, scheduler = save_pipeline(tmp_path / prediction_type, prediction_type=prediction_type)
    model = load_denoiser(tmp_path / prediction_type)
    assert model.config["prediction_type"] == prediction_type
    g = torch.Generator().manual_seed(3)
    x_vp = torch.randn(2, 3, 8, 8, generator=g)
    for t in (7, 63):
        with torch.no_grad():
            out = unet(x_vp, t).sample
        ref = scheduler.step(out, t, x_vp, generator=torch.Generator().manual_seed(0)).pred_original_sample
        abar = scheduler.alphas_cumprod[t].double()
        sigma = float(torch.sqrt((1 - abar) / abar))
        assert sigma == pytest.approx(float(model.sigmas[99 - t]), rel=1e-12)
        mine = model.denoiser((x_vp.double() / abar.sqrt()).float(), sigma)
        # both are (x_vp - sqrt(1 - abar) eps) / sqrt(abar) in float32, with the division by sqrt(abar) (up
        # to 1/0.36 here) amplifying the rounding of the terms
        scale = float(x_vp.abs().max() + out.abs().max()) / float(abar.sqrt())
        torch.testing.assert_close(mine, ref, rtol=0, atol=64 * F32 * scale)


def test_clip_sigmas_clips_into_the_range_keeps_the_zero_and_warns_once(pipeline):
    model = load_denoiser(pipeline[0])
    grid = torch.tensor([500.0, 1.0, 0.5, 1e-4, 0.0], dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clipped = model.clip_sigmas(grid)
        again = model.clip_sigmas(grid)
    assert len(caught) == 1 and f"{model.sigma_max:.4g}" in str(caught[0].message)
    assert torch.equal(clipped, again) and clipped.dtype == grid.dtype and len(clipped) == len(grid)
    assert clipped[0] == model.sigma_max and clipped[3] == model.sigma_min and clipped[-1] == 0
    assert torch.equal(clipped[1:3], grid[1:3])
    inside = load_denoiser(pipeline[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a grid inside the range (its bounds through float32) does not warn
        grid = torch.tensor([inside.sigma_max, 0.3, inside.sigma_min, 0.0]).float()
        assert torch.equal(inside.clip_sigmas(grid)[1:], grid[1:])


def test_directory_without_a_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptFileError, match="model_index.json") as err:
        load_denoiser(tmp_path / "empty")
    assert one_line(err)


def test_pipeline_with_missing_weights_is_refused(tmp_path):
    save_pipeline(tmp_path / "p")
    (tmp_path / "p" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CorruptFileError) as err:
        load_denoiser(tmp_path / "p")
    assert one_line(err)


# ---------------------------------------------------------------------------------------------- NCSNv2

def small_yaml(**changes) -> dict:
    """A small NCSNv2 config (ngf 8, 8x8 images, 6 levels) for fast checks; ``changes``: "section.key": value."""
    config = yaml.safe_load(CIFAR10_YAML)
    config["model"].update(ngf=8, num_classes=6, sigma_begin=3.0, sigma_end=0.05)
    config["data"].update(image_size=8)
    for key, value in changes.items():
        section, name = key.split(".")
        if value is None:
            config[section].pop(name, None)
        else:
            config[section][name] = value
    return config


def write_yaml(path, config: dict):
    path.write_text(yaml.safe_dump(config))
    return path


def random_net(config: dict, seed: int = 0) -> NCSNv2Net:
    """An NCSNv2 network with random weights (normalisation parameters spread so they matter)."""
    torch.manual_seed(seed)
    net = NCSNv2Net(parse_ncsnv2_config(config)[0])
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith(("alpha", "gamma", "beta")):
                param.add_(0.3 * torch.randn_like(param))
    return net.eval()


def save_ncsnv2(path, net: NCSNv2Net, ema: dict | None = None, drop=None, extra=None):
    """The reference runner's checkpoint: [module.-prefixed state dict, optimizer state, epoch, step, (ema)]."""
    state = {"module." + key: value.clone() for key, value in net.state_dict().items()}
    if drop:
        del state["module." + drop]
    if extra:
        state["module." + extra] = torch.zeros(3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4).state_dict()
    states = [state, optimizer, 7, 1234] + ([ema] if ema is not None else [])
    torch.save(states, path)
    return path


def ema_of(net: NCSNv2Net, seed: int = 1) -> dict:
    """An EMA state as EMAHelper.state_dict() holds it: parameter name -> tensor, no ``module.`` prefix, no
    buffers; the values differ from the model's."""
    g = torch.Generator().manual_seed(seed)
    return {name: p.detach() + 0.05 * torch.randn(p.shape, generator=g) for name, p in net.named_parameters()}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """The CIFAR-10 architecture at its published size (ngf 128, 232 levels), random weights and EMA."""
    folder = tmp_path_factory.mktemp("cifar")
    config = yaml.safe_load(CIFAR10_YAML)
    net = random_net(config)
    ema = ema_of(net)
    path = save_ncsnv2(folder / "checkpoint.pth", net, ema)
    return write_yaml(folder / "cifar10.yml", config), path, net, ema


def test_cifar10_checkpoint_loads_strictly_with_its_ema_weights(cifar):
    config_path, path, net, ema = cifar
    model = load_denoiser(path, config=config_path)
    assert model.kind == "ncsnv2" and model.shape == (3, 32, 32) and model.data_range == (0.0, 1.0)
    assert "NCSNv2" in model.description and "ngf 128" in model.description and "EMA" in model.description
    loaded = model.network
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    params = dict(loaded.named_parameters())
    assert set(params) == set(ema)
    for name, value in ema.items():  # the EMA shadow, not the raw weights
        assert torch.equal(params[name], value), name
    assert not torch.equal(params["begin_conv.weight"], net.begin_conv.weight)
    assert torch.equal(loaded.sigmas, net.sigmas)
    assert len(model.sigmas) == 232 and model.sigmas.dtype == torch.float64
    assert model.sigma_max == pytest.approx(50) and model.sigma_min == pytest.approx(0.01)


def test_cifar10_denoiser_is_x_plus_sigma_squared_score_at_its_levels(cifar):
    """D(x, sigma_i) = x + sigma_i^2 s(x, i), s the network's discrete call (output / sigmas[i])."""
    config_path, path, _, _ = cifar
    model = load_denoiser(path, config=config_path, micro_batch=2)  # the network sees the same batch of 2
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    levels = torch.tensor([0, 231])
    sigma = model.sigmas[levels]
    denoised = model.denoiser(x, sigma)
    with torch.no_grad():
        score = model.network(x, levels)
    ref = x + sigma.float().view(-1, 1, 1, 1) ** 2 * score
    # x + sigma F against x + sigma^2 (F / sigma): a few roundings of the size of x and of sigma F
    atol = 8 * F32 * float(x.abs().max() + (ref - x).abs().max())
    torch.testing.assert_close(denoised, ref, rtol=0, atol=atol)


def test_raw_weights_when_the_config_says_no_ema(cifar, tmp_path):
    config_path, path, net, _ = cifar
    config = yaml.safe_load(config_path.read_text())
    config["model"]["ema"] = False
    model = load_denoiser(path, config=config)  # a parsed dict works as well as a path
    assert "raw" in model.description
    assert torch.equal(model.network.begin_conv.weight, net.begin_conv.weight)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    config = small_yaml()
    net = random_net(config)
    path = save_ncsnv2(folder / "small.pth", net, ema_of(net))
    return write_yaml(folder / "small.yml", config), path, net


def test_small_model_properties(small):
    config_path, path, _ = small
    model = load_denoiser(path, config=config_path)
    # the levels are the reference get_sigmas: exp(linspace(log sigma_begin, log sigma_end, L)), descending
    torch.testing.assert_close(model.sigmas, schedules.geometric(3.0, 0.05, 6), rtol=1e-12, atol=0)
    assert model.sigma_max == pytest.approx(3.0, rel=1e-12) and model.sigma_min == pytest.approx(0.05, rel=1e-12)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(5, 3, 8, 8, generator=g)
    sigma = torch.tensor([0.05, 0.3, 1.0, 2.0, 3.0])
    out = model.denoiser(x, sigma)
    assert out.shape == x.shape and not out.requires_grad
    # flat rows, a batch prefix, and one level given three ways give the same bits
    assert torch.equal(model.denoiser(x.reshape(5, -1), sigma), out.reshape(5, -1))
    assert torch.equal(model.denoiser(x[:2], sigma[:2]), out[:2])
    assert torch.equal(model.denoiser(x, 0.3), model.denoiser(x, torch.tensor([0.3] * 5)))
    assert torch.equal(model.denoiser(x, torch.tensor(0.3)), model.denoiser(x, 0.3))
    # the network does not see the level: D(x, sigma) - x is proportional to sigma (sigma F(x)), and D = x at 0
    a, b = model.denoiser(x, 0.5) - x, model.denoiser(x, 2.0) - x
    torch.testing.assert_close(b, 4 * a, rtol=0, atol=8 * F32 * float(b.abs().max() + x.abs().max()))
    assert torch.equal(model.denoiser(x, 0.0), x)
    with pytest.raises(InputError, match="shape"):
        model.denoiser(torch.rand(2, 3, 16, 16), 1.0)


def test_input_scaling_of_unrescaled_and_rescaled_models():
    """Not rescaled: the network maps [0, 1] data to 2x - 1 itself; rescaled: it takes [-1, 1] data as is."""
    plain = random_net(small_yaml())
    rescaled = NCSNv2Net(parse_ncsnv2_config(small_yaml(**{"data.rescaled": True}))[0]).eval()
    rescaled.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(plain.unscaled(x), rescaled.unscaled(2 * x - 1), rtol=0, atol=0)
    assert rescaled.config.data_range == (-1.0, 1.0) and plain.config.data_range == (0.0, 1.0)


def test_missing_extra_or_misshapen_keys_are_refused_naming_the_key(small, tmp_path):
    config_path, _, net = small
    cases = {"missing": dict(drop="res2.0.conv1.weight"), "extra": dict(extra="res9.conv.weight")}
    for case, change in cases.items():
        path = save_ncsnv2(tmp_path / f"{case}.pth", net, ema_of(net), **change)
        with pytest.raises(CorruptFileError) as err:
            load_denoiser(path, config=config_path)
        assert one_line(err) and (change.get("drop") or change.get("extra")) in str(err.value), case
    bad_ema = ema_of(net)
    del bad_ema["end_conv.bias"]
    with pytest.raises(CorruptFileError, match="end_conv.bias") as err:
        load_denoiser(save_ncsnv2(tmp_path / "ema.pth", net, bad_ema), config=config_path)
    assert one_line(err)
    wider = write_yaml(tmp_path / "wider.yml", small_yaml(**{"model.ngf": 16}))
    with pytest.raises(CorruptFileError, match="shape") as err:
        load_denoiser(save_ncsnv2(tmp_path / "ok.pth", net, ema_of(net)), config=wider)
    assert one_line(err)


def test_config_errors_are_one_line(small, tmp_path):
    _, path, _ = small
    with pytest.raises(InputError, match="--model-config FILE") as err:
        load_denoiser(path)
    assert one_line(err)
    cases = {
        "model.ngf": ({"model.ngf": None}, "model.ngf"),
        "logit": ({"data.logit_transform": True}, "logit_transform"),
        "dataset": ({"data.dataset": "MNIST"}, "model.arch"),
        "arch": ({"model.arch": "ResNet"}, "ResNet"),
        "levels": ({"model.sigma_begin": 5.0}, "noise levels"),
        "norm": ({"model.normalization": "BatchNorm"}, "BatchNorm"),
        "size": ({"data.image_size": 7}, "image_size"),
    }
    for name, (change, needle) in cases.items():
        config = write_yaml(tmp_path / f"{name}.yml", small_yaml(**change))
        with pytest.raises(InputError, match=needle) as err:
            load_denoiser(path, config=config)
        assert one_line(err), name
    with pytest.raises(InputError, match="does not exist"):
        load_denoiser(path, config=tmp_path / "nope.yml")
    (tmp_path / "bad.yml").write_text("model: [unclosed")
    with pytest.raises(InputError, match="YAML") as err:
        load_denoiser(path, config=tmp_path / "bad.yml")
    assert one_line(err)


def test_ema_config_without_ema_state_is_refused(small, tmp_path):
    config_path, _, net = small
    path = save_ncsnv2(tmp_path / "noema.pth", net, ema=None)
    with pytest.raises(InputError, match="model.ema: false") as err:
        load_denoiser(path, config=config_path)
    assert one_line(err)
    model = load_denoiser(path, config=small_yaml(**{"model.ema": False}))
    assert torch.equal(model.network.end_conv.weight, net.end_conv.weight)


@pytest.mark.parametrize("dataset, arch", [("CELEBA", "NCSNv2"), ("LSUN", "NCSNv2Deeper"), ("FFHQ", "NCSNv2Deepest")])
def test_architecture_follows_the_reference_choice_by_dataset(dataset, arch, tmp_path):
    config = small_yaml(**{"data.dataset": dataset, "data.image_size": 16, "model.ngf": 4})
    parsed = parse_ncsnv2_config(config)[0]
    assert parsed.arch == arch
    net = random_net(config)
    keys = net.state_dict()
    ngf = 4
    # keys and shapes of the reference definitions (models/ncsnv2.py, models/layers.py)
    assert keys["sigmas"].shape == (6,) and keys["normalizer.beta"].shape == (ngf,)
    assert keys["res2.0.shortcut.conv.weight"].shape == (2 * ngf, ngf, 1, 1)  # ConvMeanPool 1x1 shortcut
    assert keys["res1.0.normalize1.alpha"].shape == (ngf,) and "res1.0.shortcut.weight" not in keys
    assert "refine1.msf.convs.0.weight" not in keys  # the deepest refine block has one input, no fusion
    last = {"NCSNv2": "refine4", "NCSNv2Deeper": "refine5", "NCSNv2Deepest": "refine5"}[arch]
    assert f"{last}.output_convs.3_2_conv.weight" in keys and f"{last}.output_convs.4_1_conv.weight" not in keys
    if arch == "NCSNv2":
        assert "res5.0.conv1.weight" not in keys and keys["res4.0.shortcut.weight"].shape == (2 * ngf, 2 * ngf, 3, 3)
    else:
        assert keys["res4.0.conv2.weight"].shape == (4 * ngf, 2 * ngf, 3, 3)  # dilated, 2 ngf -> 4 ngf
        assert keys["res5.1.conv1.weight"].shape == (4 * ngf, 4 * ngf, 3, 3)
        assert keys["refine2.msf.convs.1.weight"].shape == (2 * ngf, 4 * ngf, 3, 3)
        assert keys["res3.0.conv2.conv.weight"].shape == (2 * ngf, 2 * ngf, 3, 3)  # mean-pool down-sampling
    assert ("res31.1.conv2.weight" in keys) == (arch == "NCSNv2Deepest")
    assert ("refine31.msf.convs.1.weight" in keys) == (arch == "NCSNv2Deepest")
    path = save_ncsnv2(tmp_path / "c.pth", net, ema_of(net))
    model = load_denoiser(path, config=write_yaml(tmp_path / "c.yml", config))
    assert arch in model.description and model.shape == (3, 16, 16)
    x = torch.rand(2, 3 * 16 * 16, generator=torch.Generator().manual_seed(7))
    out = model.denoiser(x, 0.5)
    assert out.shape == x.shape and bool(torch.isfinite(out).all()) and not torch.equal(out, x)


def test_dpmot_checkpoint_given_as_ncsnv2_or_with_a_config_is_refused(dpmot_model):
    path = dpmot_model[1]
    with pytest.raises(InputError, match="dpmot-bench checkpoint") as err:
        load_denoiser(path, config=small_yaml())
    assert one_line(err)


# ----------------------------------------------------------------------------------------- own checkpoints

def custom_dataset(name="my-blobs", shape=(3,)):
    """A finite data set that is not registered: 200 rows in [0, 2]."""
    rng = np.random.default_rng(0)
    dim = math.prod(shape)
    rows = {split: (rng.uniform(0, 2, size=(n, dim)).astype(np.float32), np.zeros(n, dtype=np.int64))
            for split, n in (("train", 200), ("heldout", 50))}
    return Dataset(name, "uniform rows for a test", dim=dim, shape=shape, n_classes=1, splits=lambda s: rows[s],
                   value_range=(0.0, 2.0))


@pytest.fixture(scope="module")
def dpmot_model(tmp_path_factory):
    dataset = custom_dataset()
    path = tmp_path_factory.mktemp("own") / "own.pt"
    config = TrainConfig(width=8, depth=1, steps=5, batch_size=16)
    model, _ = train_denoiser(dataset, config, seed=0, progress=False, checkpoint=path)
    return model, path, dataset


def test_checkpoint_of_an_unregistered_dataset_saves_and_reloads(dpmot_model):
    trained, path, dataset = dpmot_model
    with pytest.raises(InputError):
        get_dataset(dataset.name)  # really not registered
    model = load_denoiser(path)
    assert model.kind == "dpmot" and model.shape == (3,) and model.data_range == (0.0, 2.0) and model.sigmas is None
    assert model.sigma_min < 0.002 and model.sigma_max > 80  # exp(-1 -+ 4 * 2): the samplers' default range
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref = trained(x, 0.4)
    torch.testing.assert_close(model.denoiser(x, 0.4), ref, rtol=0, atol=4 * F32 * float(ref.abs().max()))
    via_registry = get_denoiser(dataset, model=str(path))
    assert torch.equal(via_registry(x, 0.4), model.denoiser(x, 0.4))
    other_shape = custom_dataset(shape=(4,))
    with pytest.raises(InputError, match="shape") as err:
        get_denoiser(other_shape, model=str(path))
    assert one_line(err)


def test_checkpoints_without_a_stored_shape_still_load(dpmot_model, tmp_path):
    """Files of format version 1 written before shapes were stored: rebuilt from the registered data set."""
    state = load_checkpoint(dpmot_model[1])
    for key in ("shape", "value_range"):
        state.pop(key)
    state["dataset"] = "gmm-ring8"  # a registered one, of 2-D rows: the 3-D weights no longer fit
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CorruptFileError, match="weights do not fit") as err:
        load_denoiser(tmp_path / "old.pt")
    assert one_line(err)
    ring = get_dataset("gmm-ring8")
    net, _ = train_denoiser(ring, TrainConfig(width=8, depth=1, steps=5, batch_size=16, n_train=64), progress=False,
                            checkpoint=tmp_path / "ring.pt")
    state = load_checkpoint(tmp_path / "ring.pt")
    assert tuple(state["shape"]) == (2,)
    state.pop("shape")
    torch.save(state, tmp_path / "ring-old.pt")
    model = load_denoiser(tmp_path / "ring-old.pt")
    assert model.shape == (2,) and model.data_range is None
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(model.denoiser(x, 1.0), net(x, 1.0), rtol=0, atol=1e-6)
    state["dataset"] = "my-blobs"  # unregistered and no shape: cannot be rebuilt
    torch.save(state, tmp_path / "lost.pt")
    with pytest.raises(CorruptFileError) as err:
        load_denoiser(tmp_path / "lost.pt")
    assert one_line(err)


def test_damaged_own_checkpoint_is_refused(dpmot_model, tmp_path):
    state = load_checkpoint(dpmot_model[1])
    key = next(iter(state["model"]))
    state["model"][key] = torch.zeros(2, 2, 2)
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(CorruptFileError, match="damaged") as err:
        load_denoiser(tmp_path / "damaged.pt")
    assert one_line(err)
    state = load_checkpoint(dpmot_model[1])
    state["shape"] = [0, "x"]
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CorruptFileError, match="shape") as err:
        load_denoiser(tmp_path / "shape.pt")
    assert one_line(err)


# ---------------------------------------------------------------------------------------------- bad files

class Arbitrary:
    def __init__(self):
        self.payload = [1, 2, 3]


def test_files_that_are_no_model_are_refused_in_one_line(tmp_path, small):
    pickle.dump(Arbitrary(), open(tmp_path / "object.pkl", "wb"))
    (tmp_path / "notes.txt").write_text("not a model\n")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name in ("object.pkl", "notes.txt", "state_dict.pt", "list.pt", "missing.pt"):
        with pytest.raises(CorruptFileError) as err:
            load_denoiser(tmp_path / name)
        assert one_line(err) and name in str(err.value), name
    with pytest.raises(InputError, match="--scheduler"):
        load_denoiser(small[1], config=small[0], scheduler=tmp_path)
    with pytest.raises(InputError):
        load_denoiser(12)
