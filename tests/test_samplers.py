"""The baseline samplers, their grids and NFE plans, diffusers' schedulers, and generate()."""
import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dpmot_bench import schedules
from dpmot_bench.data import GaussianMixture, get_dataset
from dpmot_bench.denoisers import CountingDenoiser
from dpmot_bench.errors import InputError, ShapeError, UnknownNameError
from dpmot_bench.noise import SampleNoise
from dpmot_bench.samplers import (DIFFUSERS_SAMPLERS, METHODS, SAMPLER_NAMES, generate, make_scheduler, plan,
                                  run_scheduler, sample_ancestral, sample_dpmpp_2m, sample_dpmpp_3m, sample_euler,
                                  sample_heun, sample_langevin, sigma_grid)
from dpmot_bench.samplers.external import eps_model_for

NFE_GRID = (1, 2, 5, 10, 20, 50)
EPS32 = torch.finfo(torch.float32).eps


def gaussian_denoiser(s: float):
    """Exact denoiser of N(0, s^2): ``D(x, sigma) = x s^2 / (s^2 + sigma^2)`` (float64-safe)."""
    return lambda x, sigma: x * s ** 2 / (s ** 2 + torch.as_tensor(sigma, dtype=x.dtype) ** 2)


def run_plan(method, nfe, denoiser, n=8, dim=2, seed=0, **options):
    fn, sigmas, method_options = plan(method, nfe, **options)
    noise = SampleNoise(seed, n)
    return fn(denoiser, float(sigmas[0]) * noise.randn(dim), sigmas, noise=noise, **method_options)


# ------------------------------------------------------------------------------------------- NFE
@given(method=st.sampled_from(sorted(METHODS)), nfe=st.integers(1, 60), steps_per_level=st.integers(1, 6))
def test_plan_spends_exactly_the_nfe_asked(method, nfe, steps_per_level):
    counted = CountingDenoiser(gaussian_denoiser(1.0))
    options = {"steps_per_level": steps_per_level} if method == "langevin" else {}
    run_plan(method, nfe, counted, **options)
    assert counted.calls == nfe


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES if not s.startswith("dpm-ot")])
def test_generate_spends_exactly_the_nfe_asked(sampler):
    ring = get_dataset("gmm-ring8")
    for nfe in NFE_GRID:
        counted = CountingDenoiser(ring.mixture.denoise)
        result = generate(ring, sampler, nfe, n=5, seed=0, denoiser=counted, batch_size=3)
        assert result.nfe_spent == nfe
        assert counted.calls == 2 * nfe  # two batches (3 + 2 rows), each spending nfe calls
        assert result.x.shape == (5, 2) and result.x.dtype == torch.float32 and result.index is None
        assert bool(torch.isfinite(result.x).all())


# ------------------------------------------------------------------------------------------- grids
@given(kind=st.sampled_from(["karras", "geometric", "vp"]), n=st.integers(1, 40),
       sigma_min=st.floats(1e-3, 1.0), ratio=st.floats(1.5, 1e4))
def test_sigma_grids_are_decreasing_and_end_at_zero(kind, n, sigma_min, ratio):
    sigma_max = sigma_min * ratio
    if kind == "vp" and sigma_max > 150:  # VP-linear's sigma(t = 1) = 152.9
        with pytest.raises(InputError, match="vp grid"):
            sigma_grid(kind, n, sigma_max, sigma_min)
        return
    grid = sigma_grid(kind, n, sigma_max, sigma_min)
    assert grid.shape == (n + 1,) and grid.dtype == torch.float64 and grid[-1] == 0
    assert bool((grid[1:] < grid[:-1]).all())
    assert math.isclose(grid[0], sigma_max, rel_tol=1e-9)
    if n > 1:
        assert math.isclose(grid[-2], sigma_min, rel_tol=1e-9)
    if kind == "vp" and n > 2:  # uniform in the VP time t
        t = schedules.VPLinear().t(grid[:-1])
        assert torch.allclose(t.diff(), t.diff()[0].expand(n - 1), rtol=1e-6)


# ------------------------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("sampler, order", [(sample_euler, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)])
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_convergence_order_on_a_gaussian(sampler, order, s):
    """Data N(0, s^2) with its exact denoiser: the probability-flow ODE dx/dsigma = x sigma / (s^2 + sigma^2)
    integrates to x(sigma) = x(sigma_0) sqrt((s^2 + sigma^2) / (s^2 + sigma_0^2)), so x_0 = x s / sqrt(s^2 +
    sigma_0^2). The error of an order-p method on n geometric steps is C n^-p (1 + O(1/n)): the slope of
    log error against log n, fitted on n = 32, 64, 128, is -p up to that O(1/n) term (measured < 0.1 here;
    asserted within 0.15). (DPM-Solver++(3M), whose first-order warm-up makes it second order overall with
    irregular pre-asymptotic errors, is checked against diffusers instead.)
    The final jump from sigma_min = 1e-3 to 0 adds a floor of ~ sigma_min^2 / s^2 |x_0| << every error here."""
    x_T = torch.linspace(-30, 30, 7, dtype=torch.float64)[:, None]
    exact = x_T * s / math.sqrt(s ** 2 + 10.0 ** 2)
    steps = np.array([32, 64, 128])
    errors = [float((sampler(gaussian_denoiser(s), x_T, sigma_grid("geometric", n, 10.0, 1e-3)) - exact).abs().max())
              for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.15, (errors, slope)


# ------------------------------------------------------------------------------------------- samples approach the data
def _w2(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(ot.emd2([], [], ot.dist(a.double().numpy(), b.double().numpy())))


def test_ode_samples_approach_the_data():
    """With the exact denoiser and many steps, W2(samples, reference) must be as small as W2(true sample,
    reference) for an independent true sample of the same size. The null distribution of that W2 (mean mu,
    std sd) is estimated from m = 6 true pairs; the mean over k = 3 sampler seeds must be at most
    mu + 3 sd sqrt(1/k + 1/m) (a one-sided z-test, ~0.1% false alarms). The same check must reject a
    3-step Euler sampler (the test has power)."""
    grid = get_dataset("gmm-grid25")
    n, m, k = 400, 6, 3
    reference = [grid.sample(n, seed=1000 + i)[0] for i in range(max(m, k))]
    null = np.array([_w2(grid.sample(n, seed=2000 + i)[0], reference[i]) for i in range(m)])

    def passes(method, nfe):
        w2 = [_w2(run_plan(method, nfe, grid.mixture.denoise, n=n, seed=i), reference[i]) for i in range(k)]
        return np.mean(w2) <= null.mean() + 3 * null.std(ddof=1) * math.sqrt(1 / k + 1 / m)

    for method, nfe in [("euler", 200), ("heun", 101), ("dpmpp-2m", 60), ("dpmpp-3m", 60)]:
        assert passes(method, nfe), method
    assert not passes("euler", 3)


def test_langevin_reaches_its_stationary_law():
    """Langevin at one level sigma on N(0, s^2) data is the AR(1) chain x' = (1 - a/v) x + sqrt(2a) z with
    v = s^2 + sigma^2, whose stationary variance is v / (1 - a / (2v)); the final denoise multiplies by
    s^2 / v. From 4000 samples the variance estimate has relative std sqrt(2 / 3999) = 2.2%: assert 4 std."""
    s, sigma, a = 1.0, 0.5, 0.4
    v = s ** 2 + sigma ** 2
    n = 4000
    noise = SampleNoise(3, n, dtype=torch.float64)
    x = sample_langevin(gaussian_denoiser(s), torch.zeros(n, 1, dtype=torch.float64), [sigma, 0.0],
                        noise=noise, step_lr=a, steps_per_level=60)
    expected = (s ** 2 / v) ** 2 * v / (1 - a / (2 * v))
    assert abs(float(x.var()) / expected - 1) < 4 * math.sqrt(2 / (n - 1))


# ------------------------------------------------------------------------------------------- ours vs diffusers
# A smooth, non-linear model: two overlapping Gaussians (float64 exact denoiser).
MODEL = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), 0.8)


def _tolerance(grid, x) -> float:
    """diffusers steps in float32: each step adds a few ulps of |x| (scale 1 + max|x_0|), amplified by
    sigma_k / sigma_{k+1} where a step divides by the next level (Heun's corrector); 8 ulps per step."""
    g = [float(s) for s in grid]
    amplification = sum(1 + a / b for a, b in zip(g, g[1:]) if b > 0) + 1
    return 8 * EPS32 * (1 + float(x.abs().max())) * amplification


def _ve_grid(scheduler, timesteps):
    abar = scheduler.alphas_cumprod.double()[torch.as_tensor(timesteps).long()]
    return torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("steps", [4, 10, 25])
def test_euler_and_ancestral_equal_diffusers_ddim(steps):
    """Euler == DDIM (eta 0) and ancestral == DDIM (eta 1) on DDIM's own grid (trailing spacing; steps
    dividing 1000 so that its prev_timestep bookkeeping lands on the next timestep), same initial point and
    same step noise."""
    scheduler = make_scheduler("diffusers-ddim")
    scheduler.set_timesteps(steps)
    grid = _ve_grid(scheduler, scheduler.timesteps)
    z = SampleNoise(0, 64).randn(2)
    x_ve = z * float(math.sqrt(1 + grid[0] ** 2))
    for eta, ours in [(0.0, sample_euler(MODEL, x_ve, grid)),
                      (1.0, sample_ancestral(MODEL, x_ve, grid, noise=SampleNoise(1, 64), eta=1.0))]:
        scheduler.set_timesteps(steps)
        theirs = run_scheduler(scheduler, eps_model_for(scheduler, MODEL), z, noise=SampleNoise(1, 64), eta=eta)
        assert (ours - theirs).abs().max() <= _tolerance(grid, ours), eta


@pytest.mark.parametrize("steps", [3, 10, 14, 15, 20])
@pytest.mark.parametrize("order", [2, 3])
def test_dpmpp_equals_diffusers_dpmsolver(steps, order):
    """Our DPM-Solver++(2M/3M) with its defaults == diffusers' DPMSolverMultistepScheduler on its grid, on
    both sides of diffusers' 15-step threshold for lowering the order of the last steps."""
    scheduler = make_scheduler("diffusers-dpmpp-2m", solver_order=order)
    scheduler.set_timesteps(steps)
    grid = scheduler.sigmas.double()
    z = SampleNoise(0, 64).randn(2)
    theirs = run_scheduler(scheduler, eps_model_for(scheduler, MODEL), z)
    x_ve = z * float(math.sqrt(1 + grid[0] ** 2))
    ours = (sample_dpmpp_2m(MODEL, x_ve, grid) if order == 2 else
            sample_dpmpp_3m(MODEL, x_ve, grid))
    assert (ours - theirs).abs().max() <= _tolerance(grid, ours)


@pytest.mark.parametrize("steps", [3, 8, 20])
def test_heun_equals_diffusers_heun(steps):
    """EDM Heun == HeunDiscreteScheduler on integer timesteps (where diffusers' linear sigma interpolation
    and our model's log-linear one agree), both in VE form."""
    timesteps = np.linspace(999, 0, steps).round()
    scheduler = make_scheduler("diffusers-heun")
    scheduler.set_timesteps(timesteps=timesteps)
    grid = _ve_grid(scheduler, timesteps)
    x = SampleNoise(0, 64).randn(2) * float(scheduler.init_noise_sigma)
    theirs = run_scheduler(scheduler, eps_model_for(scheduler, MODEL), x)
    ours = sample_heun(MODEL, x, grid)
    assert (ours - theirs).abs().max() <= _tolerance(grid, ours)


# ------------------------------------------------------------------------------------------- determinism
@given(sampler=st.sampled_from(["euler", "heun", "ancestral", "langevin", "dpmpp-3m", "diffusers-ddim",
                                "diffusers-unipc"]),
       n=st.integers(1, 30), batch_size=st.integers(1, 30), nfe=st.sampled_from([1, 2, 5]))
def test_rows_depend_only_on_seed_and_index(sampler, n, batch_size, nfe):
    """Row i depends only on (seed, i). Everything is row-wise except BLAS blocking in the denoiser's float64
    products (1e-16 relative), which can change at most the last float32 bit: 4 ulps of the scale."""
    ring = get_dataset("gmm-ring8")
    full = generate(ring, sampler, nfe, 30, 7, ring.mixture.denoise, batch_size=30).x
    part = generate(ring, sampler, nfe, n, 7, ring.mixture.denoise, batch_size=batch_size).x
    assert (part - full[:n]).abs().max() <= 4 * EPS32 * (1 + float(full.abs().max()))
    other_seed = generate(ring, sampler, nfe, n, 8, ring.mixture.denoise).x
    assert not torch.equal(other_seed, part) or nfe == 1 and sampler in ("euler", "heun", "langevin")


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_precise_errors():
    ring = get_dataset("gmm-ring8")
    D = ring.mixture.denoise
    with pytest.raises(UnknownNameError, match="unknown sampler 'eulr'"):
        generate(ring, "eulr", 5, 4, 0, D)
    for nfe in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="nfe must be an integer >= 1"):
            generate(ring, "euler", nfe, 4, 0, D)
    for n in (0, 10 ** 12, 2.0):
        with pytest.raises(InputError, match=r"n must be an integer in \[1, 1000000000\]"):
            generate(ring, "euler", 5, n, 0, D)
    with pytest.raises(InputError, match="nfe must be at most 100000"):
        generate(ring, "euler", 10 ** 9, 4, 0, D)
    with pytest.raises(InputError, match="batch_size"):
        generate(ring, "euler", 5, 4, 0, D, batch_size=0)
    with pytest.raises(InputError, match="euler has no option eta"):
        generate(ring, "euler", 5, 4, 0, D, eta=0.5)
    with pytest.raises(InputError, match="DPM-OT samplers only"):
        generate(ring, "euler", 5, 4, 0, D, ot_map=object())
    with pytest.raises(InputError, match="option grid must be one of karras, geometric, vp"):
        generate(ring, "euler", 5, 4, 0, D, grid="cosine")
    with pytest.raises(InputError, match="diffusers-unipc has no option solver_orderr"):
        generate(ring, "diffusers-unipc", 5, 4, 0, D, solver_orderr=3)
    with pytest.raises(ShapeError, match=r"the denoiser must return an estimate of x's shape \(4, 2\)"):
        generate(ring, "euler", 5, 4, 0, lambda x, sigma: x[:, :1])
    x = torch.zeros(3, 2)
    for bad_grid in ([1.0, 0.5], [1.0, 2.0, 0.0], [1.0, float("nan"), 0.0], [0.0]):
        with pytest.raises(InputError, match="sigma grid"):
            sample_euler(D, x, bad_grid)
    with pytest.raises(InputError, match="stochastic"):
        sample_ancestral(D, x, [1.0, 0.0])
    with pytest.raises(InputError, match="NaN"):
        sample_euler(D, torch.full((3, 2), float("nan")), [1.0, 0.0])
    with pytest.raises(InputError, match="steps_per_level"):
        sample_langevin(D, x, [2.0, 1.0, 0.0], noise=SampleNoise(0, 3), step_lr=0.1, steps_per_level=[1])
    with pytest.raises(InputError, match="step_lr"):
        sample_langevin(D, x, [1.0, 0.0], noise=SampleNoise(0, 3), step_lr=-1.0)


def test_sampler_names_are_stable_and_described():
    required = {"euler", "heun", "dpmpp-2m", "ancestral", "langevin", "dpm-ot", "dpm-ot-paper", *DIFFUSERS_SAMPLERS}
    assert required <= set(SAMPLER_NAMES) and all(SAMPLER_NAMES.values())
