"""Our FID InceptionV3 and KID against torch-fidelity's ``FeatureExtractorInceptionV3`` and KID.

No real weights file exists here, so both networks load one random state dict (``random_fid_inception``,
saved in the published files' key layout) and extract pool3 features of the same uint8 images; the script
prints the largest absolute and relative differences of the features and of the TF1 resize, the
seconds each took, and our KID against torch-fidelity's ``kid_features_to_metric`` on the same features
and seed (its module imported with a stub for the torchvision-bound ``torch_fidelity.utils``).
torch-fidelity is not installed (its package ``__init__`` imports torchvision, whose
wheels do not load with this torch): point ``--torch-fidelity`` at its wheel or unpacked wheel
(``pip download torch-fidelity --no-deps -d /tmp/tf``). Its ``feature_extractor_inceptionv3`` module itself
needs only torch, so it is imported without running the package ``__init__`` (a bare package object whose
``__path__`` is the wheel's ``torch_fidelity`` folder). pytorch-fid's ``inception.py`` imports torchvision
and subclasses its ``InceptionA/C/E``: with ``--torchvision`` and ``--pytorch-fid`` (their wheels, from
``pip download torchvision==0.28.0 pytorch-fid --no-deps``) it runs on torchvision's own pure-Python
``models/inception.py`` imported the same way (no C operators are loaded), and is compared too.

    .venv/bin/python benchmarks/inception_check.py --torch-fidelity /tmp/tf/torch_fidelity-0.4.0-py3-none-any.whl \
        --torchvision /tmp/tv/torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl \
        --pytorch-fid /tmp/pfid/pytorch_fid-0.3.0-py3-none-any.whl

Measured 2026-12-06 (torch 2.13.0+cpu, torch-fidelity 0.4.0, one thread): pool3 features and the TF1 resize
bitwise equal to torch-fidelity's for 2-4 random uint8 images of 24, 32, 64, 299 and 400 pixels a side
(seeds 0-2); KID (20 subsets of 100, d = 64) within 7e-5 relative of torch-fidelity's (it sums float32
kernels, we float64); about 0.2-0.25 s per image either way. pytorch-fid 0.3.0 on torchvision 0.28.0's
Inception3: its state-dict keys equal ours, its pool3 features (on ``rgb / 255``) are bitwise equal to
ours with ``preprocessing="pytorch-fid"``, and its wrapper module's state dict (``blocks.*``) loads
here and gives the same features bitwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch


def import_torch_fidelity_extractor(location: str | None):
    """torch-fidelity's ``feature_extractor_inceptionv3`` module and its ``interpolate_compat_tensorflow``,
    imported from an installed package or from ``location`` (a wheel file or a folder holding
    ``torch_fidelity/``) without the package ``__init__``. Raises ImportError when not found."""
    import importlib
    import importlib.util

    if location is None:
        spec = importlib.util.find_spec("torch_fidelity")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("torch_fidelity is not installed; pass its wheel with --torch-fidelity")
        package_dir = list(spec.submodule_search_locations)[0]
    else:
        root = Path(location)
        if not root.exists():
            raise ImportError(f"{location} does not exist")
        package_dir = str(root / "torch_fidelity")  # a wheel is a zip archive: zipimport reads it
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    if "torch_fidelity" not in sys.modules:
        package = types.ModuleType("torch_fidelity")
        package.__path__ = [package_dir]
        sys.modules["torch_fidelity"] = package
    return (importlib.import_module("torch_fidelity.feature_extractor_inceptionv3"),
            importlib.import_module("torch_fidelity.interpolate_compat_tensorflow"))


def import_torch_fidelity_kid(location: str | None):
    """torch-fidelity's ``metric_kid`` module. Its ``torch_fidelity.utils`` import (feature-extractor plumbing
    that needs torchvision) is replaced by a stub holding the four names it imports, unused by
    ``kid_features_to_metric``."""
    import importlib

    import_torch_fidelity_extractor(location)
    if "torch_fidelity.utils" not in sys.modules:
        stub = types.ModuleType("torch_fidelity.utils")
        for name in ("create_feature_extractor", "extract_featuresdict_from_input_id_cached",
                     "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
            setattr(stub, name, None)
        sys.modules["torch_fidelity.utils"] = stub
    return importlib.import_module("torch_fidelity.metric_kid")


def compare_kid(location: str | None, n: int = 300, d: int = 64, subsets: int = 20, subset_size: int = 100,
                seed: int = 0) -> dict:
    """Our KID against torch-fidelity's ``kid_features_to_metric`` on the same float32 features and seed."""
    from dpmot_bench.metrics.kid import kernel_inception_distance

    metric_kid = import_torch_fidelity_kid(location)
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator)
    b = torch.randn(n, d, generator=generator) * 1.1 + 0.05
    theirs = metric_kid.kid_features_to_metric(a, b, kid_subsets=subsets, kid_subset_size=subset_size,
                                               rng_seed=seed, verbose=False)
    ours = kernel_inception_distance(a, b, subsets=subsets, subset_size=subset_size, seed=seed)
    mean_t, std_t = theirs[metric_kid.KEY_METRIC_KID_MEAN], theirs[metric_kid.KEY_METRIC_KID_STD]
    return {"kid_mean_ours": ours["kid_mean"], "kid_mean_torch_fidelity": mean_t,
            "kid_std_ours": ours["kid_std"], "kid_std_torch_fidelity": std_t,
            "kid_mean_rel_diff": abs(ours["kid_mean"] - mean_t) / abs(mean_t),
            "kid_std_rel_diff": abs(ours["kid_std"] - std_t) / abs(std_t)}


def import_pytorch_fid_inception(torchvision_location: str, pytorch_fid_location: str):
    """pytorch-fid's ``inception`` module on torchvision's own pure-Python ``models/inception.py``, both from
    wheels (files or unpacked folders), without torchvision's package ``__init__`` (which loads its C
    operators, the part that fails with this torch): bare package objects for ``torchvision``,
    ``torchvision.models`` and ``torchvision.transforms`` and a stub ``transforms._presets`` (only used
    by torchvision's pretrained-weights metadata)."""
    import importlib

    def package(name: str, path: str, **attributes):
        module = types.ModuleType(name)
        module.__path__ = [path]
        module.__dict__.update(attributes)
        sys.modules[name] = module
        return module

    for location in (torchvision_location, pytorch_fid_location):
        if not Path(location).exists():
            raise ImportError(f"{location} does not exist")
    if "torchvision" not in sys.modules:
        root = str(Path(torchvision_location) / "torchvision")
        torchvision = package("torchvision", root, __version__="0.28.0")  # pytorch-fid: >= 0.6 -> init_weights=False
        torchvision.models = package("torchvision.models", root + "/models")
        package("torchvision.transforms", root + "/transforms")
        presets = types.ModuleType("torchvision.transforms._presets")
        presets.ImageClassification = object
        sys.modules["torchvision.transforms._presets"] = presets
        inception = importlib.import_module("torchvision.models.inception")
        torchvision.models.inception, torchvision.models.inception_v3 = inception, inception.inception_v3
    if pytorch_fid_location not in sys.path:
        sys.path.insert(0, pytorch_fid_location)
    return importlib.import_module("pytorch_fid.inception")


def compare_pytorch_fid(torchvision_location: str, pytorch_fid_location: str, n: int = 2, size: int = 32,
                        seed: int = 0) -> dict:
    """pytorch-fid's ``InceptionV3()`` (torchvision's Inception3 patched with its FID blocks, loading a random
    file in the published layout strictly) against ours with ``preprocessing="pytorch-fid"``, on
    ``rgb / 255`` as pytorch-fid's own image loader gives; and our loading of its wrapper's state dict."""
    from dpmot_bench.metrics.inception import InceptionFeatures
    from dpmot_bench.metrics.inception_net import random_fid_inception

    module = import_pytorch_fid_inception(torchvision_location, pytorch_fid_location)
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pt_inception-random.pth"
        torch.save(random_fid_inception(seed).state_dict(), path)
        module.load_state_dict_from_url = lambda url, progress=True: torch.load(path, weights_only=True)
        theirs_net = module.InceptionV3([3]).eval()  # fid_inception_v3(): Inception3(num_classes=1008), strict
        patched_keys = set(module.fid_inception_v3().state_dict())
        with torch.no_grad():
            theirs = theirs_net(rgb.float() / 255)[0].flatten(1)
        ours = InceptionFeatures(path, batch_size=n).from_uint8(rgb)  # auto: pt_inception* -> pytorch-fid
        wrapper_file = Path(folder) / "wrapper.pth"
        torch.save(theirs_net.state_dict(), wrapper_file)  # blocks.b.p.* layout, no fc
        from_wrapper = InceptionFeatures(wrapper_file, batch_size=n)
        ours_from_wrapper = from_wrapper.from_uint8(rgb)
    ours_keys = set(random_fid_inception(seed).state_dict())
    diff = (ours - theirs).abs()
    return {
        "pytorch_fid_features_max_abs_diff": float(diff.max()),
        "pytorch_fid_features_max_abs": float(theirs.abs().max()),
        "pytorch_fid_features_bitwise_equal": bool(torch.equal(ours, theirs)),
        "pytorch_fid_keys_equal": patched_keys == ours_keys,
        "pytorch_fid_wrapper_layout": from_wrapper.key_format,
        "pytorch_fid_wrapper_features_bitwise_equal": bool(torch.equal(ours_from_wrapper, theirs)),
    }


def compare(location: str | None, n: int = 4, size: int = 32, seed: int = 0, threads: int = 1) -> dict:
    from dpmot_bench.metrics.inception import InceptionFeatures
    from dpmot_bench.metrics.inception_net import random_fid_inception, resize_bilinear_tf1

    torch.set_num_threads(threads)
    extractor_module, interpolate_module = import_torch_fidelity_extractor(location)
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights-inception-random.pth"
        state = {k: v for k, v in random_fid_inception(seed).state_dict().items()
                 if not k.endswith("num_batches_tracked")}  # as torch-fidelity's converter writes it
        torch.save(state, path)
        theirs_net = extractor_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                                 feature_extractor_weights_path=str(path))
        ours_net = InceptionFeatures(path, batch_size=n, preprocessing="torch-fidelity")
        start = time.perf_counter()
        with torch.no_grad():
            theirs = theirs_net(rgb)[0]
        theirs_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ours = ours_net.from_uint8(rgb)
        ours_seconds = time.perf_counter() - start
    resized_ours = resize_bilinear_tf1(rgb.float())
    resized_theirs = interpolate_module.interpolate_bilinear_2d_like_tensorflow1x(
        rgb.float(), size=(299, 299), align_corners=False)
    diff = (ours - theirs).abs()
    return {
        "torch_fidelity": location or "installed",
        "images": [n, 3, size, size],
        "features_max_abs_diff": float(diff.max()),
        "features_max_rel_diff": float((diff / theirs.abs().clamp_min(1e-12)).max()),
        "features_max_abs": float(theirs.abs().max()),
        "features_bitwise_equal": bool(torch.equal(ours, theirs)),
        "resize_max_abs_diff": float((resized_ours - resized_theirs).abs().max()),
        "resize_bitwise_equal": bool(torch.equal(resized_ours, resized_theirs)),
        "seconds_ours": round(ours_seconds, 3),
        "seconds_torch_fidelity": round(theirs_seconds, 3),
        "threads": threads,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--torch-fidelity", help="torch-fidelity wheel or unpacked wheel (default: installed)")
    parser.add_argument("--torchvision", help="torchvision wheel or unpacked wheel (only its Python files are used)")
    parser.add_argument("--pytorch-fid", help="pytorch-fid wheel or unpacked wheel (with --torchvision)")
    parser.add_argument("--no-torch-fidelity", action="store_true", help="skip the torch-fidelity comparison")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="input image side (resized to 299 by both)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {}
    if not args.no_torch_fidelity:
        result.update(compare(args.torch_fidelity, args.n, args.size, args.seed, args.threads))
        result.update(compare_kid(args.torch_fidelity, seed=args.seed))
    if args.torchvision and args.pytorch_fid:
        result.update(compare_pytorch_fid(args.torchvision, args.pytorch_fid, min(args.n, 2), args.size, args.seed))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
