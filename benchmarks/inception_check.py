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
``__path__`` is the wheel's ``torch_fidelity`` folder). pytorch-fid cannot be checked this way: its
``inception.py`` imports torchvision at the top and subclasses torchvision's ``InceptionA/C/E``.

    .venv/bin/python benchmarks/inception_check.py --torch-fidelity /tmp/tf/torch_fidelity-0.4.0-py3-none-any.whl

Measured 2026-12-06 (torch 2.13.0+cpu, torch-fidelity 0.4.0, one thread): pool3 features and the TF1 resize
bitwise equal to torch-fidelity's for 2-4 random uint8 images of 24, 32, 64, 299 and 400 pixels a side
(seeds 0-2); KID (20 subsets of 100, d = 64) within 7e-5 relative of torch-fidelity's (it sums float32
kernels, we float64); about 0.2-0.25 s per image either way.
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
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="input image side (resized to 299 by both)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = compare(args.torch_fidelity, args.n, args.size, args.seed, args.threads)
    result.update(compare_kid(args.torch_fidelity, seed=args.seed))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
