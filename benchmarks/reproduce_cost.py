"""What each stage of ``dpmot reproduce`` costs per unit, measured here, and the CIFAR-10 protocol's
extrapolated total: the NCSNv2 CIFAR-10 network's forward pass (ngf 128, random weights of the published
shapes) per image, the FID Inception's per image, one Frechet distance at d = 2048 (pytorch-fid's sqrtm
and the eigenvalue route), and the OT fit's per-iteration costs at d = 3072 taken from ``ot_scale.py``'s
measurements (benchmarks/README.md). ``--suite quick`` times a few images; ``full`` more.

The extrapolation multiplies unit costs by the protocol's counts (configs: cifar10-ncsnv2.yml): samples x
NFE network calls per sampler, Inception features of the samples, the 50 000 train and 10 000 held-out
images once, one FD per cell. It is a CPU figure; GPU times are not measured here.
"""
import time

import numpy as np
import torch

from _ot_common import main

PROTOCOL = {"samples": 40_000, "nfe": 11, "samplers": 8, "train": 50_000, "heldout": 10_000}


def _time(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def reproduce_cost(suite: str = "quick", device: str = "cpu", progress: bool = True) -> list[dict]:
    import yaml

    from dpmot_bench.metrics.frechet import frechet_distance_from_stats
    from dpmot_bench.metrics.inception import InceptionFeatures
    from dpmot_bench.metrics.inception_net import random_fid_inception
    from dpmot_bench.models.ncsnv2 import NCSNv2Net, parse_ncsnv2_config
    from dpmot_bench.report.reproduce import example_configs

    batch = 4 if suite == "quick" else 16
    rows = []
    config = {"data": {"dataset": "CIFAR10", "image_size": 32, "channels": 3, "logit_transform": False,
                       "uniform_dequantization": False, "gaussian_dequantization": False, "random_flip": True,
                       "rescaled": False},
              "model": {"sigma_begin": 50, "num_classes": 232, "ema": True, "ema_rate": 0.999, "spec_norm": False,
                        "sigma_dist": "geometric", "sigma_end": 0.01, "normalization": "InstanceNorm++",
                        "nonlinearity": "elu", "ngf": 128}}
    net = NCSNv2Net(parse_ncsnv2_config(config)[0]).to(device).eval()
    x = torch.rand(batch, 3, 32, 32, device=device)
    levels = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.no_grad():
        seconds = _time(lambda: net(x, levels), 2)
    rows.append({"stage": "NCSNv2 CIFAR-10 forward", "unit": "image", "seconds_per_unit": seconds / batch,
                 "batch": batch})
    path = "/tmp/dpmot-random-inception.pth"
    torch.save(random_fid_inception().state_dict(), path)
    inception = InceptionFeatures(path, device=device, batch_size=batch)
    images = torch.rand(batch, 3, 32, 32) * 2 - 1
    seconds = _time(lambda: inception(images), 2)
    rows.append({"stage": "FID Inception features", "unit": "image", "seconds_per_unit": seconds / batch,
                 "batch": batch})
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3000, 2048)) @ (rng.standard_normal((2048, 2048)) / 45)
    b = rng.standard_normal((3000, 2048))
    stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    for method in ("sqrtm", "eigh"):
        seconds = _time(lambda: frechet_distance_from_stats(*stats, method=method))
        rows.append({"stage": f"Frechet distance d=2048 ({method})", "unit": "cell", "seconds_per_unit": seconds,
                     "batch": 1})
    protocol = yaml.safe_load(example_configs()["cifar10-ncsnv2"].read_text())["protocol"]
    n_samplers = len(protocol["presets"]) + len(protocol["baselines"])
    per_image = {r["stage"]: r["seconds_per_unit"] for r in rows}
    sampling = protocol["samples"] * protocol["nfe"][0] * n_samplers * per_image["NCSNv2 CIFAR-10 forward"]
    features = (protocol["samples"] * n_samplers + PROTOCOL["train"] + 2 * PROTOCOL["heldout"]) \
        * per_image["FID Inception features"]
    rows += [{"stage": "CIFAR-10 protocol: sampling (extrapolated)", "unit": "total",
              "seconds_per_unit": sampling, "batch": batch},
             {"stage": "CIFAR-10 protocol: Inception features (extrapolated)", "unit": "total",
              "seconds_per_unit": features, "batch": batch}]
    for row in rows:
        row["threads"] = torch.get_num_threads()
    return rows


if __name__ == "__main__":
    main(reproduce_cost, __doc__)
