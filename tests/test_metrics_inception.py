"""The torch-only FID InceptionV3 (random weights of the right shapes: no real weights file exists here), its
weights-file checks, the two input pipelines, FID statistics files, KID and the TorchScript classifier."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics.pairwise import polynomial_kernel as sk_polynomial_kernel
from torch import nn

from dpmot_bench.errors import CorruptFileError, InputError, NonFiniteError, ShapeError, UnknownNameError
from dpmot_bench.metrics.classifier import TorchScriptClassifier
from dpmot_bench.metrics.frechet import feature_statistics
from dpmot_bench.metrics.inception import (InceptionFeatures, inception_statistics, load_fid_stats,
                                           save_fid_stats)
from dpmot_bench.metrics.inception_net import (PYTORCH_FID_BLOCKS, FIDInceptionV3, preprocess_pytorch_fid,
                                               preprocess_torch_fidelity, random_fid_inception,
                                               resize_bilinear_tf1)
from dpmot_bench.metrics.kid import kernel_inception_distance
from dpmot_bench.metrics.modes import mode_mixture_ratio

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
PT_NAME = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's release name
TF_NAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release name


@pytest.fixture(scope="module")
def net():
    return random_fid_inception(seed=0)


def torchvision_layout(net, batches=True):
    """The published files' layout; torch-fidelity's converter writes no num_batches_tracked."""
    return {k: v.clone() for k, v in net.state_dict().items() if batches or not k.endswith("num_batches_tracked")}


def pytorch_fid_module_layout(net):
    """What ``pytorch_fid.inception.InceptionV3().state_dict()`` looks like: blocks.b.p.*, no fc."""
    inverse = {name: block for block, name in PYTORCH_FID_BLOCKS.items()}
    out = {}
    for key, value in net.state_dict().items():
        module, rest = key.split(".", 1)
        if module != "fc":
            out[f"{inverse[module]}.{rest}"] = value.clone()
    return out


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    paths = {"pytorch-fid": folder / PT_NAME, "torch-fidelity": folder / TF_NAME,
             "other-name": folder / "my-inception.pth", "module": folder / "pytorch-fid-module.pth"}
    torch.save(torchvision_layout(net, batches=True), paths["pytorch-fid"])
    torch.save(torchvision_layout(net, batches=False), paths["torch-fidelity"])
    torch.save(torchvision_layout(net, batches=False), paths["other-name"])
    torch.save(pytorch_fid_module_layout(net), paths["module"])
    return paths


def images(n, size=16, channels=3, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------ weights files
@pytest.mark.parametrize("name, key_format, preprocessing", [
    ("pytorch-fid", "torchvision", "pytorch-fid"), ("torch-fidelity", "torchvision", "torch-fidelity"),
    ("other-name", "torchvision", "torch-fidelity"), ("module", "pytorch-fid-module", "pytorch-fid")])
def test_each_layout_loads_strictly_and_gives_pool3_features(net, files, name, key_format, preprocessing):
    extractor = InceptionFeatures(files[name], batch_size=2)
    assert (extractor.key_format, extractor.preprocessing) == (key_format, preprocessing)
    loaded = extractor.network.state_dict()
    expected = {k: v for k, v in net.state_dict().items() if key_format == "torchvision" or not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
    x = images(3)
    features = extractor(x)
    assert features.shape == (3, 2048) and features.dtype == torch.float32
    # the features are the network's pool3 on the library's pipeline of the PNG-quantised images
    pipeline = {"pytorch-fid": preprocess_pytorch_fid, "torch-fidelity": preprocess_torch_fidelity}[preprocessing]
    with torch.no_grad():
        direct = net(pipeline(InceptionFeatures.to_uint8_rgb(x)))
    torch.testing.assert_close(features, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))


def test_preprocessing_can_be_chosen_and_is_checked(files):
    x = images(2)
    forced = InceptionFeatures(files["pytorch-fid"], preprocessing="torch-fidelity")(x)
    auto = InceptionFeatures(files["torch-fidelity"])(x)
    assert torch.equal(forced, auto)  # same weights, same pipeline
    other = InceptionFeatures(files["torch-fidelity"], preprocessing="pytorch-fid")(x)
    assert not torch.allclose(other, auto)  # the two resizes differ on 16 x 16 inputs
    with pytest.raises(UnknownNameError, match="Inception preprocessing"):
        InceptionFeatures(files["torch-fidelity"], preprocessing="tf2")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size"):
            InceptionFeatures(files["torch-fidelity"], batch_size=bad)


def test_features_do_not_depend_on_the_batch_size(files):
    x = images(4, size=20, seed=3)
    extractor = InceptionFeatures(files["torch-fidelity"], batch_size=1)
    one = extractor(x)
    for batch_size in (3, 100):  # 3 + 1 and 4 at once
        extractor.batch_size = batch_size
        other = extractor(x)
        torch.testing.assert_close(other, one, rtol=1e-5, atol=1e-5 * float(one.abs().max()))


def test_grey_images_are_repeated_and_inputs_are_checked(files):
    extractor = InceptionFeatures(files["torch-fidelity"])
    grey = images(2, channels=1, seed=4)
    assert torch.equal(extractor(grey), extractor(grey.repeat(1, 3, 1, 1)))
    levels = torch.tensor([-1.0, 0.0, 1.0, 2.0, -0.5, 0.5, 0.25]).reshape(7, 1, 1, 1).expand(7, 1, 2, 2)
    assert InceptionFeatures.to_uint8_rgb(levels)[:, 0, 0, 0].tolist() == [0, 128, 255, 255, 64, 191, 159]
    for bad in (torch.zeros(2, 64), torch.zeros(2, 2, 8, 8), torch.zeros(0, 3, 8, 8), np.zeros((2, 3, 8, 8))):
        with pytest.raises(ShapeError):
            extractor(bad)
    with pytest.raises(NonFiniteError):
        extractor(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ShapeError, match="uint8"):
        extractor.from_uint8(torch.zeros(1, 3, 8, 8))


def one_line_error(path, match):
    with pytest.raises(CorruptFileError, match=match) as info:
        InceptionFeatures(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_wrong_missing_or_extra_keys_are_one_line_errors(net, tmp_path):
    # right shapes, one stored value each (expanded views save one element): small files, fast to write
    good = {k: torch.ones((), dtype=v.dtype).expand(v.shape) for k, v in torchvision_layout(net, False).items()}
    torch.save(good, tmp_path / "good.pth")
    assert InceptionFeatures(tmp_path / "good.pth").key_format == "torchvision"
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "Mixed_6c.branch7x7_2.conv.weight"},
                    r"lacks key 'Mixed_6c.branch7x7_2.conv.weight' \(expected shape \(160, 160, 1, 7\)"),
        "no fc": ({k: v for k, v in good.items() if not k.startswith("fc.")}, r"lacks key 'fc.weight'"),
        "extra": ({**good, "AuxLogits.fc.weight": torch.zeros(1000, 768)}, "unexpected key 'AuxLogits.fc.weight'"),
        "shape": ({**good, "Mixed_5b.branch1x1.conv.weight": torch.zeros(64, 192, 3, 3)},
                  r"'Mixed_5b.branch1x1.conv.weight' has shape \(64, 192, 3, 3\), .* expects \(64, 192, 1, 1\)"),
        "classes": ({**good, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)},
                    r"'fc.weight' has shape \(1000, 2048\), .* expects \(1008, 2048\)"),
        "not a tensor": ({**good, "Conv2d_1a_3x3.bn.running_var": [1.0] * 32}, "has shape list"),
        "nan": ({**good, "Conv2d_2a_3x3.bn.running_var": torch.full((32,), float("nan"))}, "finite floating-point"),
        "some batches": ({**good, "Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0)},
                         "num_batches_tracked entries: all or none"),
        "list": (list(good.values()), "holds a list, not a state dict"),
    }
    for name, (state, match) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        message = one_line_error(path, match)
        assert "pt_inception-2015-12-05-6726825d.pth" in message and "nothing is downloaded" in message, name


class NotTensors:  # a pickled Python object: torch.load(weights_only=True) refuses to build it
    def __init__(self):
        self.payload = {"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}


def test_pickles_garbage_and_missing_files_are_refused(tmp_path):
    pickled = tmp_path / "object.pth"
    torch.save(NotTensors(), pickled)
    one_line_error(pickled, "is not a readable tensor file .*never pickled objects")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": object.__new__(NotTensors)}))
    one_line_error(plain, "is not a readable tensor file")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a state dict")
    one_line_error(garbage, "Inception weights file .* is not a readable tensor file")
    message = one_line_error(tmp_path / "nope.pth", "does not exist")
    assert "mseitzer/pytorch-fid/releases" in message and "toshas/torch-fidelity/releases" in message
    assert "nothing is downloaded" in message
    one_line_error(tmp_path, "is a directory")


# ------------------------------------------------------------------------------------------ resizing
def tf1_resize_numpy(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Direct float64 rule: output (i, j) reads the input at (i * H / out_h, j * W / out_w), weighting the 4
    neighbours (last row / column clamped) by (1 - fy)(1 - fx), (1 - fy) fx, fy (1 - fx), fy fx."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        sy = i * h / out_h
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = j * w / out_w
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, :, i, j] = ((1 - fy) * (1 - fx) * x[:, :, y0, x0] + (1 - fy) * fx * x[:, :, y0, x1]
                               + fy * (1 - fx) * x[:, :, y1, x0] + fy * fx * x[:, :, y1, x1])
    return out


@pytest.mark.parametrize("shape, size", [((2, 3, 7, 5), (11, 13)), ((1, 3, 32, 32), (299, 299)),
                                         ((1, 2, 9, 12), (4, 5))])
def test_tf1_resize_against_the_direct_rule(shape, size):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
    ours = resize_bilinear_tf1(x, size)
    reference = tf1_resize_numpy(x.double().numpy(), *size)
    # float32 lerps of values <= 255: a few roundings of ~255 * 2^-24 each, plus src rounded to float32
    assert ours.shape == (shape[0], shape[1], *size) and ours.dtype == torch.float32
    assert np.abs(ours.double().numpy() - reference).max() < 255 * 2e-6


def test_tf1_resize_exact_cases_and_difference_from_half_pixel_bilinear():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 255
    assert torch.equal(resize_bilinear_tf1(x, (8, 8)), x)  # scale 1: the identity
    assert torch.equal(resize_bilinear_tf1(x, (4, 4)), x[:, :, ::2, ::2])  # src = 2 dst: every other pixel
    constant = torch.full((1, 3, 5, 5), 200.0)
    assert torch.equal(resize_bilinear_tf1(constant, (299, 299)), torch.full((1, 3, 299, 299), 200.0))
    half_pixel = F.interpolate(x, size=(29, 29), mode="bilinear", align_corners=False)
    assert float((resize_bilinear_tf1(x, (29, 29)) - half_pixel).abs().max()) > 1.0  # two different rules


def test_the_two_pipelines():
    rgb = torch.randint(0, 256, (2, 3, 10, 10), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    expected = F.interpolate(rgb.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(preprocess_pytorch_fid(rgb), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(preprocess_torch_fidelity(rgb), (resize_bilinear_tf1(rgb.float()) - 128) / 128,
                               rtol=0, atol=0)
    full = torch.randint(0, 256, (1, 3, 299, 299), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    # at 299 x 299 both resizes are the identity; the normalisations differ: 2 x / 255 - 1 vs (x - 128) / 128
    torch.testing.assert_close(preprocess_pytorch_fid(full), full.float() / 127.5 - 1, rtol=0, atol=1e-6)
    assert torch.equal(preprocess_torch_fidelity(full), (full.float() - 128) / 128)


# ------------------------------------------------------------------------------------------ blocks
def ref_conv(x, m):
    """BasicConv2d recomputed: conv, then (y - mean) / sqrt(var + 0.001) * gamma + beta, then max(., 0)."""
    conv, bn = m.conv, m.bn
    y = F.conv2d(x, conv.weight.double(), stride=conv.stride, padding=conv.padding)
    shape = (1, -1, 1, 1)
    y = (y - bn.running_mean.double().view(shape)) / torch.sqrt(bn.running_var.double().view(shape) + 0.001)
    return (y * bn.weight.double().view(shape) + bn.bias.double().view(shape)).clamp_min(0)


def ref_avg_pool_valid(x):
    """3x3 mean over the in-image pixels only: zero-padded window sums divided by the count of real pixels."""
    sums = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.ones(x.shape[1], 1, 3, 3, dtype=x.dtype), groups=x.shape[1])
    counts = F.conv2d(F.pad(torch.ones(1, 1, *x.shape[2:], dtype=x.dtype), (1, 1, 1, 1)),
                      torch.ones(1, 1, 3, 3, dtype=x.dtype))
    return sums / counts


def ref_max_pool(x, stride, pad):
    padded = F.pad(x, (pad,) * 4, value=-float("inf"))
    windows = padded.unfold(2, 3, stride).unfold(3, 3, stride)
    return windows.amax((-1, -2))


def ref_block(name, m, x):
    def seq(*names):
        y = x
        for part in names:
            y = ref_conv(y, getattr(m, part))
        return y
    if name.startswith("Mixed_5"):
        return torch.cat([seq("branch1x1"), seq("branch5x5_1", "branch5x5_2"),
                          seq("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          ref_conv(ref_avg_pool_valid(x), m.branch_pool)], 1)
    if name == "Mixed_6a":
        return torch.cat([seq("branch3x3"), seq("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          ref_max_pool(x, 2, 0)], 1)
    if name.startswith("Mixed_6"):
        return torch.cat([seq("branch1x1"), seq("branch7x7_1", "branch7x7_2", "branch7x7_3"),
                          seq(*[f"branch7x7dbl_{i}" for i in range(1, 6)]),
                          ref_conv(ref_avg_pool_valid(x), m.branch_pool)], 1)
    if name == "Mixed_7a":
        return torch.cat([seq("branch3x3_1", "branch3x3_2"), seq(*[f"branch7x7x3_{i}" for i in range(1, 5)]),
                          ref_max_pool(x, 2, 0)], 1)
    single, double = seq("branch3x3_1"), seq("branch3x3dbl_1", "branch3x3dbl_2")
    pooled = ref_avg_pool_valid(x) if name == "Mixed_7b" else ref_max_pool(x, 1, 1)  # the FID graph's max pool
    return torch.cat([seq("branch1x1"), ref_conv(single, m.branch3x3_2a), ref_conv(single, m.branch3x3_2b),
                      ref_conv(double, m.branch3x3dbl_3a), ref_conv(double, m.branch3x3dbl_3b),
                      ref_conv(pooled, m.branch_pool)], 1)


def test_every_block_against_a_direct_recomputation(net):
    """Each block's float32 output against the float64 recomputation from its weights (on the float32
    block's own input, so errors do not compound); then pool3 of the chained recomputation."""
    x = preprocess_torch_fidelity(torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(5),
                                                dtype=torch.uint8))
    ref = x.double()
    stem_ref = ref_max_pool(ref_conv(ref_conv(ref_conv(ref, net.Conv2d_1a_3x3), net.Conv2d_2a_3x3),
                                     net.Conv2d_2b_3x3), 2, 0)
    stem_ref = ref_max_pool(ref_conv(ref_conv(stem_ref, net.Conv2d_3b_1x1), net.Conv2d_4a_3x3), 2, 0)
    with torch.no_grad():
        h = net.stem(x)
        assert h.shape == (1, 192, 35, 35)
        torch.testing.assert_close(h.double(), stem_ref, rtol=1e-4, atol=1e-4 * float(stem_ref.abs().max()))
        chained = stem_ref
        sizes = {"Mixed_5b": 256, "Mixed_5c": 288, "Mixed_5d": 288, "Mixed_6a": 768, "Mixed_7a": 1280,
                 "Mixed_7b": 2048, "Mixed_7c": 2048}
        for name in FIDInceptionV3.MIXED:
            block = getattr(net, name)
            out = block(h)
            expected = ref_block(name, block, h.double())
            assert out.shape == expected.shape and out.shape[1] == sizes.get(name, 768), name
            torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()),
                                       msg=name)
            chained = ref_block(name, block, chained)
            h = out
        assert h.shape == (1, 2048, 8, 8)
        pool3 = net(x)
    torch.testing.assert_close(pool3.double(), chained.mean((2, 3)), rtol=1e-3,
                               atol=1e-4 * float(chained.abs().max()))


def test_fid_specific_pools_matter(net):
    """The A/C/E average pools ignore padding and Mixed_7c pools by max: recomputing with torchvision's
    choices (padded zeros counted, average in Mixed_7c) changes the output, so the tests above can tell."""
    x = torch.rand(1, 288, 35, 35, generator=torch.Generator().manual_seed(6))
    counted = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
    assert float((ref_avg_pool_valid(x.double()) - counted.double()).abs().max()) > 0.1
    h = torch.rand(1, 2048, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        fid_out = net.Mixed_7c(h).double()
    avg_out = ref_block("Mixed_7b", net.Mixed_7c, h.double())  # the same weights with the average pool
    assert float((fid_out - avg_out).abs().max()) > 1e-3 * float(fid_out.abs().max())


# ------------------------------------------------------------------------------------------ torch-fidelity
def torch_fidelity_location():
    location = os.environ.get("DPMOT_TORCH_FIDELITY")  # a torch-fidelity wheel or unpacked wheel
    if location:
        return location if Path(location).exists() else None
    import importlib.util
    return "installed" if importlib.util.find_spec("torch_fidelity") is not None else None


@pytest.mark.skipif(torch_fidelity_location() is None,
                    reason="torch-fidelity is not importable (its __init__ needs torchvision); set "
                           "DPMOT_TORCH_FIDELITY to its wheel (pip download torch-fidelity --no-deps) to run this")
def test_features_and_kid_equal_torch_fidelitys(tmp_path):
    location = torch_fidelity_location()
    out = tmp_path / "check.json"
    args = [sys.executable, str(ROOT / "benchmarks" / "inception_check.py"), "--n", "2", "--size", "24",
            "--json", str(out)] + ([] if location == "installed" else ["--torch-fidelity", location])
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    result = json.loads(out.read_text())
    assert result["resize_max_abs_diff"] <= 255 * 2e-6
    assert result["features_max_abs_diff"] <= 1e-5 * result["features_max_abs"]
    # KID: torch-fidelity sums float32 kernels (values ~1, 10^4 per mean: ~1e-7 * 10^2 rounding each)
    assert abs(result["kid_mean_ours"] - result["kid_mean_torch_fidelity"]) < 1e-5
    assert abs(result["kid_std_ours"] - result["kid_std_torch_fidelity"]) < 1e-5


PYTORCH_FID_WHEELS = [os.environ.get("DPMOT_TORCHVISION_WHEEL", ""), os.environ.get("DPMOT_PYTORCH_FID", "")]


@pytest.mark.skipif(not all(w and Path(w).exists() for w in PYTORCH_FID_WHEELS),
                    reason="pytorch-fid needs torchvision, which does not load with this torch; set "
                           "DPMOT_TORCHVISION_WHEEL and DPMOT_PYTORCH_FID to their wheels (pip download "
                           "torchvision==0.28.0 pytorch-fid --no-deps) to run it on torchvision's Python files")
def test_features_equal_pytorch_fids_on_the_same_weights(tmp_path):
    out = tmp_path / "check.json"
    args = [sys.executable, str(ROOT / "benchmarks" / "inception_check.py"), "--no-torch-fidelity", "--n", "2",
            "--size", "24", "--torchvision", PYTORCH_FID_WHEELS[0], "--pytorch-fid", PYTORCH_FID_WHEELS[1],
            "--json", str(out)]
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    result = json.loads(out.read_text())
    assert result["pytorch_fid_keys_equal"] and result["pytorch_fid_wrapper_layout"] == "pytorch-fid-module"
    assert result["pytorch_fid_features_max_abs_diff"] <= 1e-5 * result["pytorch_fid_features_max_abs"]
    assert result["pytorch_fid_wrapper_features_bitwise_equal"]


# ------------------------------------------------------------------------------------------ statistics
def test_statistics_and_their_file(tmp_path):
    feats = torch.randn(50, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    mu, sigma = inception_statistics(feats)
    np.testing.assert_allclose(mu, feats.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats.numpy(), rowvar=False), rtol=1e-10, atol=1e-14)
    assert all(np.array_equal(a, b) for a, b in zip((mu, sigma), feature_statistics(feats)))
    path = tmp_path / "ref.npz"
    save_fid_stats(path, mu, sigma, n=50, source="test")
    loaded_mu, loaded_sigma = load_fid_stats(path)
    assert np.array_equal(loaded_mu, mu) and np.array_equal(loaded_sigma, sigma)
    assert load_fid_stats(path, with_meta=True)[2] == {"n": 50, "source": "test"}
    with np.load(path) as f:  # pytorch-fid reads f["mu"][:], f["sigma"][:]
        assert np.array_equal(f["mu"][:], mu) and np.array_equal(f["sigma"][:], sigma)
    theirs = tmp_path / "pytorch_fid.npz"
    np.savez(theirs, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))  # a file written elsewhere
    other_mu, other_sigma, meta = load_fid_stats(theirs, with_meta=True)
    assert meta == {} and other_mu.dtype == np.float64 and np.allclose(other_sigma, sigma, rtol=1e-6)


def test_bad_statistics_files(tmp_path):
    mu, sigma = np.zeros(3), np.eye(3)
    asymmetric = np.eye(3)
    asymmetric[0, 1] = 0.5
    cases = {"no_sigma": ({"mu": mu}, "has no array 'sigma'"),
             "shape": ({"mu": mu, "sigma": np.eye(4)}, r"sigma must have shape \(3, 3\)"),
             "mu2d": ({"mu": np.zeros((3, 1)), "sigma": sigma}, r"mu must have shape \(d,\)"),
             "asym": ({"mu": mu, "sigma": asymmetric}, "must be symmetric"),
             "nan": ({"mu": np.array([0, np.nan, 0]), "sigma": sigma}, "NaN"),
             "object": ({"mu": np.array([{}], dtype=object), "sigma": sigma}, "not a readable .npz")}
    for name, (arrays, match) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(CorruptFileError, match=match):
            load_fid_stats(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="not a readable .npz"):
        load_fid_stats(garbage)
    single = tmp_path / "single.npy"
    np.save(single, mu)
    with pytest.raises(CorruptFileError, match="not a readable .npz"):
        load_fid_stats(single)
    with pytest.raises(CorruptFileError, match="does not exist"):
        load_fid_stats(tmp_path / "missing.npz")
    out = tmp_path / "out.npz"
    for bad_mu, bad_sigma, match in ((mu, np.eye(2), "shape"), (mu, asymmetric, "symmetric"),
                                     (np.array(["a", "b", "c"]), sigma, "real numbers")):
        with pytest.raises(InputError, match=match):
            save_fid_stats(out, bad_mu, bad_sigma)
    with pytest.raises(InputError, match="JSON"):
        save_fid_stats(out, mu, sigma, where=object())
    assert not out.exists() and not list(tmp_path.glob(".out.npz.*"))


# ------------------------------------------------------------------------------------------ KID
def kid_reference(a, b, subsets, m, seed, degree=3, gamma=None, coef0=1):
    """Subsets drawn by the same protocol; kernels from scikit-learn; the unbiased MMD^2 by masks."""
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (sk_polynomial_kernel(p, q, degree=degree, gamma=gamma, coef0=coef0)
                         for p, q in ((x, x), (y, y), (x, y)))
        off = ~np.eye(m, dtype=bool)
        values.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    return np.mean(values), np.std(values)


def test_kid_against_an_independent_computation():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(120, 10)), rng.normal(0.2, 1.1, size=(90, 10))
    result = kernel_inception_distance(a, b, subsets=7, subset_size=40, seed=3)
    mean, std = kid_reference(a, b, 7, 40, seed=3)
    assert result["subset_size"] == 40 and result["subsets"] == 7
    assert result["kid_mean"] == pytest.approx(mean, rel=1e-10) and result["kid_std"] == pytest.approx(std, rel=1e-8)
    other = kernel_inception_distance(a, b, subsets=3, subset_size=30, degree=2, gamma=0.5, coef0=0.3, seed=1)
    mean, std = kid_reference(a, b, 3, 30, seed=1, degree=2, gamma=0.5, coef0=0.3)
    assert other["kid_mean"] == pytest.approx(mean, rel=1e-10) and other["kid_std"] == pytest.approx(std, rel=1e-8)


def test_kid_linear_kernel_closed_form_and_subset_cap():
    """degree 1, gamma 1, coef0 0 on the full sets: MMD^2 = (|S_a|^2 - sum |a_i|^2) / (m (m - 1)) + (same
    for b) - 2 S_a . S_b / m^2 with S the row sums; every subset is the whole set, so kid_std = 0."""
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(25, 4)), rng.normal(1.0, 1.0, size=(25, 4))
    result = kernel_inception_distance(a, b, subsets=4, subset_size=1000, degree=1, gamma=1.0, coef0=0)
    m = 25
    sa, sb = a.sum(0), b.sum(0)
    exact = ((sa @ sa - (a * a).sum()) + (sb @ sb - (b * b).sum())) / (m * (m - 1)) - 2 * sa @ sb / m ** 2
    assert result["subset_size"] == 25
    assert result["kid_mean"] == pytest.approx(exact, rel=1e-10) and result["kid_std"] < 1e-12 * abs(exact)
    assert kernel_inception_distance(a[:10], b, subsets=2)["subset_size"] == 10  # capped by the smaller set


def test_kid_is_zero_within_its_error_for_one_distribution():
    """Unbiased: over R independent pairs of samples of one Gaussian, the mean KID is within 4 standard
    errors of 0; a shifted distribution is far above."""
    rng = np.random.default_rng(11)
    estimates = [kernel_inception_distance(rng.normal(size=(150, 8)), rng.normal(size=(150, 8)), subsets=5,
                                           subset_size=100, seed=r)["kid_mean"] for r in range(40)]
    mean, se = np.mean(estimates), np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert abs(mean) < 4 * se
    shifted = kernel_inception_distance(rng.normal(size=(150, 8)), rng.normal(0.5, 1, size=(150, 8)), subsets=20,
                                        subset_size=100)
    assert shifted["kid_mean"] > 4 * shifted["kid_std"] and shifted["kid_mean"] > 20 * se


def test_kid_bad_input():
    a = np.zeros((5, 3))
    with pytest.raises(ShapeError, match="same number of columns"):
        kernel_inception_distance(a, np.zeros((5, 4)))
    with pytest.raises(ShapeError):
        kernel_inception_distance(a[:1], a)
    for kwargs in ({"subsets": 0}, {"subset_size": 1}, {"degree": 0}, {"gamma": -1.0}, {"subsets": 2.5}):
        with pytest.raises(InputError):
            kernel_inception_distance(a, a, **kwargs)


# ------------------------------------------------------------------------------------------ TorchScript MMR
class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * 3.0


class BadOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)  # (n,) instead of (n, classes)


class NanOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3), float("nan"))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchscript")
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    paths = {}
    for name, module in (("tiny", model), ("bad", BadOutput()), ("nan", NanOutput())):
        paths[name] = folder / f"{name}.pt"
        torch.jit.script(module).save(str(paths[name]))
    return model, paths


def test_torchscript_classifier_probs_and_mode_mixture(scripted):
    model, paths = scripted
    x = images(37, size=8, channels=1, seed=12)
    classifier = TorchScriptClassifier(paths["tiny"], batch_size=10)
    probs = classifier.probs(x)
    with torch.no_grad():
        expected = torch.softmax(model(x), 1)
    assert probs.shape == (37, 4) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(probs.sum(1), torch.ones(37), rtol=0, atol=1e-6)
    torch.testing.assert_close(TorchScriptClassifier(paths["tiny"], batch_size=1).probs(x), probs,
                               rtol=1e-6, atol=1e-7)
    for lam in (0.1, 0.2, 0.3):  # mixed: at least two classes with softmax >= lam
        direct = float(((expected >= lam).sum(1) >= 2).double().mean())
        assert mode_mixture_ratio(probs, lam) == pytest.approx(direct, abs=1 / 37 + 1e-12)


def test_torchscript_classifier_refuses_bad_files_and_outputs(scripted, tmp_path):
    _, paths = scripted
    state = tmp_path / "state.pt"
    torch.save(TinyClassifier().state_dict(), state)
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"w": [1, 2]}))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01")
    for path, match in ((state, "is not a TorchScript archive"), (pickled, "is not a TorchScript archive"),
                        (garbage, "is not a TorchScript archive"), (tmp_path / "nope.pt", "does not exist"),
                        (tmp_path, "is a directory")):
        with pytest.raises(CorruptFileError, match=match) as info:
            TorchScriptClassifier(path)
        assert "\n" not in str(info.value)
    x = images(3, size=8, channels=1)
    with pytest.raises(ShapeError, match="must return logits of shape"):
        TorchScriptClassifier(paths["bad"]).probs(x)
    with pytest.raises(NonFiniteError):
        TorchScriptClassifier(paths["nan"]).probs(x)
    with pytest.raises(InputError, match="failed on images"):
        TorchScriptClassifier(paths["tiny"]).probs(images(2, size=5, channels=1))  # 25 values, not 64
    with pytest.raises(ShapeError):
        TorchScriptClassifier(paths["tiny"]).probs(torch.zeros(0, 64))
    with pytest.raises(InputError, match="batch_size"):
        TorchScriptClassifier(paths["tiny"], batch_size=0)
