"""Sigma-space core: schedules, denoiser conversions and adapters, NFE counting, seeded noise, I/O."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from dpmot_bench import schedules
from dpmot_bench.data import get_dataset
from dpmot_bench.denoisers import (CountingDenoiser, EpsModelDenoiser, ScoreModel, ScoreModelDenoiser,
                                   VPEpsModel, eps_from_denoised, score_from_denoised)
from dpmot_bench.errors import InputError
from dpmot_bench.io import atomic_path, save_npz
from dpmot_bench.noise import BLOCK_ROWS, SampleNoise
from dpmot_bench.provenance import provenance


# ------------------------------------------------------------------------------------------ schedules
@given(n=st.integers(1, 300), lo=st.floats(-4, 1), span=st.floats(0, 4),
       rho=st.one_of(st.floats(1, 10), st.floats(1e-6, 1e6)))
def test_geometric_and_karras_are_monotone_with_exact_endpoints(n, lo, span, rho):
    sigma_min, sigma_max = 10.0 ** lo, 10.0 ** (lo + span)
    for sigmas in (schedules.geometric(sigma_max, sigma_min, n), schedules.karras(sigma_max, sigma_min, n, rho)):
        assert sigmas.shape == (n,)
        assert torch.all(sigmas[1:] <= sigmas[:-1]) and torch.all(torch.isfinite(sigmas))
        assert sigmas[0].item() == pytest.approx(sigma_max, rel=1e-12)
        if n > 1:
            assert sigmas[-1].item() == pytest.approx(sigma_min, rel=1e-12)
    if n > 2 and span > 0:
        ratios = schedules.geometric(sigma_max, sigma_min, n).log().diff()
        assert torch.allclose(ratios, ratios[0].expand_as(ratios), atol=1e-12)


def test_karras_matches_diffusers():
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(use_karras_sigmas=True)
    scheduler.set_timesteps(25)
    theirs = scheduler.sigmas[:-1].double()
    ours = schedules.karras(float(theirs[0]), float(theirs[-1]), 25, rho=7.0)
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_vp_discrete_linear_matches_diffusers_ddpm():
    from diffusers import DDPMScheduler

    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.double()
    ours = schedules.VPDiscrete.linear(1000)
    # diffusers works in float32: a cumulative product of 1000 factors carries <= 1000 roundings.
    assert torch.allclose(ours.alphas_cumprod, theirs, rtol=0, atol=1000 * torch.finfo(torch.float32).eps)
    k = torch.arange(1000, dtype=torch.float64)
    assert torch.allclose(ours.sigma(k), torch.sqrt((1 - ours.alphas_cumprod) / ours.alphas_cumprod))


VP_SCHEDULES = [schedules.VPLinear(), schedules.VPCosine()]


@pytest.mark.parametrize("schedule", VP_SCHEDULES, ids=["linear", "cosine"])
@given(t=st.floats(1e-3, 0.99))
def test_vp_time_sigma_round_trip(schedule, t):
    assert schedule.t(schedule.sigma(t)).item() == pytest.approx(t, rel=1e-9, abs=1e-12)


@given(t=st.floats(0, 999))
def test_vp_discrete_time_sigma_round_trip(t):
    schedule = schedules.VPDiscrete.linear()
    assert schedule.t(schedule.sigma(t)).item() == pytest.approx(t, abs=1e-7)


@pytest.mark.parametrize("schedule", VP_SCHEDULES + [schedules.VPDiscrete.linear()],
                         ids=["linear", "cosine", "discrete"])
def test_vp_grids_are_decreasing(schedule):
    sigmas = schedule.sigmas(50)
    assert sigmas.shape == (50,) and torch.all(sigmas.diff() < 0) and sigmas[-1] > 0


def test_vp_linear_sigma_matches_closed_form():
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    abar = torch.exp(-(0.1 * t + 0.5 * 19.9 * t ** 2))
    assert torch.allclose(schedules.VPLinear().sigma(t), torch.sqrt((1 - abar) / abar))


def test_schedule_bad_input():
    with pytest.raises(InputError):
        schedules.geometric(1.0, 2.0, 10)
    with pytest.raises(InputError):
        schedules.karras(10.0, -1.0, 10)
    with pytest.raises(InputError):
        schedules.geometric(10.0, 1.0, 0)
    with pytest.raises(InputError):
        schedules.VPDiscrete([0.5, 0.9])


# ---------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("schedule", VP_SCHEDULES + [schedules.VPDiscrete.linear()],
                         ids=["linear", "cosine", "discrete"])
@given(u=st.floats(0.02, 0.98), seed=st.integers(0, 2 ** 31))
def test_vp_eps_adapter_round_trip(schedule, u, seed):
    mixture = get_dataset("gmm-grid25").mixture
    grid = schedule.sigmas(100)
    sigma = float(grid[-1] + u * (grid[0] - grid[-1]))
    x = mixture.sample(32, seed)[0].double() + sigma * torch.randn(32, 2, dtype=torch.float64)
    eps_model = VPEpsModel(mixture.denoise, schedule)
    rewrapped = EpsModelDenoiser(eps_model, schedule)
    assert torch.allclose(rewrapped(x, sigma), mixture.denoise(x, sigma), rtol=1e-7, atol=1e-8 * (1 + sigma))
    # The eps model is the true noise predictor: x_vp = (x0 + sigma eps) / sqrt(1 + sigma^2).
    t = schedule.t(torch.tensor(sigma, dtype=torch.float64))
    x_vp = x / (1 + sigma ** 2) ** 0.5
    assert torch.allclose(eps_model(x_vp, t), eps_from_denoised(x, mixture.denoise(x, sigma), sigma),
                          rtol=1e-6, atol=1e-8)


def test_score_adapter_round_trip():
    mixture = get_dataset("gmm-ring8").mixture
    x = mixture.sample(16, 5)[0].double()
    sigma = torch.full((16,), 0.3, dtype=torch.float64)
    assert torch.allclose(ScoreModelDenoiser(ScoreModel(mixture.denoise))(x, sigma), mixture.denoise(x, sigma))
    assert torch.allclose(ScoreModel(mixture.denoise)(x, sigma), mixture.score(x, sigma))
    assert torch.allclose(score_from_denoised(x, mixture.denoise(x, 0.3), 0.3), mixture.score(x, 0.3))


def test_counting_denoiser_counts_calls_and_rows():
    counted = CountingDenoiser(get_dataset("gmm-ring8").mixture)
    calls = [3, 7, 1, 5]
    for n in calls:
        counted(torch.zeros(n, 2), 1.0)
    assert counted.nfe == len(calls) and counted.rows == sum(calls)
    counted.reset()
    assert counted.nfe == 0 and counted.rows == 0


# ------------------------------------------------------------------------------------ seeded noise
@given(seed=st.integers(0, 2 ** 40), start=st.integers(0, 3 * BLOCK_ROWS), n=st.integers(0, 2 * BLOCK_ROWS),
       cut=st.integers(0, 2 * BLOCK_ROWS), dim=st.integers(1, 5))
def test_noise_is_the_same_whatever_the_batching(seed, start, n, cut, dim):
    cut = min(cut, n)
    whole = SampleNoise(seed, n, start)
    draws = [whole.randn(dim), whole.rand(), whole.randn(dim)]
    first, second = SampleNoise(seed, cut, start), SampleNoise(seed, n - cut, start + cut)
    parts = [(first.randn(dim), second.randn(dim)), (first.rand(), second.rand()),
             (first.randn(dim), second.randn(dim))]
    for draw, (a, b) in zip(draws, parts):
        assert draw.shape[0] == n and torch.equal(draw, torch.cat([a, b]))
    big = SampleNoise(seed, start + n + 5)
    assert torch.equal(big.randn(dim)[start:start + n], draws[0])


def test_noise_streams_and_seeds_are_independent():
    a = SampleNoise(1, 2000).randn(4)
    assert not torch.equal(a, SampleNoise(2, 2000).randn(4))
    assert not torch.equal(a, SampleNoise(1, 2000, stream=(7,)).randn(4))
    # A standard normal: mean and variance within 5 standard errors.
    n = a.numel()
    assert abs(a.mean().item()) < 5 / n ** 0.5
    assert abs(a.var().item() - 1) < 5 * (2 / n) ** 0.5


def test_noise_dtype_and_device_do_not_change_values():
    a = SampleNoise(3, 10).randn(2)
    b = SampleNoise(3, 10, dtype=torch.float64).randn(2)
    assert a.dtype == torch.float32 and b.dtype == torch.float64 and torch.equal(a.double(), b)


def test_noise_bad_input():
    with pytest.raises(InputError):
        SampleNoise(-1, 10)
    with pytest.raises(InputError):
        SampleNoise(0, -1)


# ------------------------------------------------------------------------------- provenance and I/O
def test_provenance_records_what_reproduces_a_result():
    record = provenance(seed=3, device="cpu", dtype=torch.float32, note="x")
    for key in ("seed", "device", "dtype", "torch", "numpy", "dpmot_bench", "git_commit", "time_utc"):
        assert key in record
    assert record["seed"] == 3 and record["dtype"] == "float32" and record["note"] == "x"
    json.dumps(record)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    save_npz(target, a=np.arange(3))
    assert list(tmp_path.iterdir()) == [target]
    assert np.load(target, allow_pickle=False)["a"].tolist() == [0, 1, 2]


# --------------------------------------------------------------------------------------------- CLI
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dpmot_bench", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_datasets_lists_every_name():
    result = run_cli("datasets")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["gmm-grid25", "gmm-ring8", "gmm-hd", "digits"]
    listed = json.loads(run_cli("datasets", "--json").stdout)
    assert [d["name"] for d in listed] == names


@pytest.mark.parametrize("args", [["nosuch"], ["datasets", "--seed", "-1"], ["datasets", "--device", "cuda:99"],
                                  ["datasets", "--device", "banana"], ["datasets", "--bogus"]])
def test_cli_bad_input_is_one_line_and_status_2(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    import os

    from dpmot_bench.io import write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
