"""Guidance (samplers/guidance.py): off is exactly the conditional sampler; with the exact GMM denoiser and
an exact log-likelihood matcher the guidance gradient is the closed form; schedules act on the steps they
say; RMS clipping; refusals."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dpmot_bench import schedules
from dpmot_bench.data import GaussianMixture
from dpmot_bench.errors import InputError
from dpmot_bench.samplers.guidance import SCHEDULES, Schedule, cfg_denoiser, matcher_guided
from dpmot_bench.samplers.sampling import sample_dpmpp_2m

STD = 0.4
MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.5]], dtype=torch.float64)
MIX = GaussianMixture(MEANS, STD)
CLASS = 2


def log_posterior(x):
    """log p(c | x) at sigma = 0 (the exact matcher: the mixture's own class posterior, equal stds)."""
    logits = -((x[:, None, :] - MEANS) ** 2).sum(-1) / (2 * STD ** 2)
    return logits[:, CLASS] - torch.logsumexp(logits, 1)


def closed_form_grad(x):
    """grad_x log r_c(x) = (-(x - m_c) + sum_k r_k (x - m_k)) / s^2."""
    logits = -((x[:, None, :] - MEANS) ** 2).sum(-1) / (2 * STD ** 2)
    r = torch.softmax(logits, 1)
    return (-(x - MEANS[CLASS]) + (r[:, :, None] * (x[:, None, :] - MEANS)).sum(1)) / STD ** 2


def matcher_loss(x):
    return -log_posterior(x)


X = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.2
RANGE = (0.01, 5.0)


def test_guidance_off_is_exactly_the_conditional_sampler():
    sigmas = schedules.append_zero(schedules.karras(5.0, 0.01, 8))
    conditional, unconditional = MIX.denoise, GaussianMixture(MEANS * 0.5, STD).denoise
    off = matcher_guided(cfg_denoiser(conditional, unconditional, 1.0), matcher_loss, Schedule("none"), RANGE)
    zero = matcher_guided(cfg_denoiser(conditional, unconditional, 1.0), matcher_loss, Schedule("constant", 0.0), RANGE)
    x = 5.0 * X
    reference = sample_dpmpp_2m(conditional, x, sigmas)
    assert torch.equal(sample_dpmpp_2m(off, x, sigmas), reference)
    assert torch.equal(sample_dpmpp_2m(zero, x, sigmas), reference)
    assert cfg_denoiser(conditional, unconditional, 1.0) is conditional


def test_cfg_is_the_linear_extrapolation():
    conditional, unconditional = MIX.denoise, GaussianMixture(MEANS * 0.5, STD).denoise
    for w in (0.0, 2.5):
        got = cfg_denoiser(conditional, unconditional, w)(X, 0.7)
        torch.testing.assert_close(got, unconditional(X, 0.7) + w * (conditional(X, 0.7) - unconditional(X, 0.7)))


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_matcher_gradient_equals_the_closed_form(sigma):
    """Exact GMM denoiser, exact log-likelihood matcher: D_g - D_w = s sigma^2 grad log p(c | x_tilde)."""
    scale = 1.7
    for input, through, at in (("x_sigma", True, lambda x: x), ("x0", False, lambda x: MIX.denoise(x, sigma)),
                               ("blend", False, lambda x: (sigma / math.sqrt(1 + sigma ** 2)) * MIX.denoise(x, sigma)
                                + (1 - sigma / math.sqrt(1 + sigma ** 2)) * x / math.sqrt(1 + sigma ** 2))):
        guided = matcher_guided(MIX.denoise, matcher_loss, Schedule("constant", scale), RANGE, input=input,
                                through_denoiser=through)
        step = (guided(X, sigma) - MIX.denoise(X, sigma)) / (scale * sigma ** 2)
        # without the denoiser's Jacobian (d x_tilde / d x = I) the gradient is the closed form at x_tilde
        torch.testing.assert_close(step, closed_form_grad(at(X)), rtol=1e-9, atol=1e-9)


def test_gradient_through_the_denoiser_matches_finite_differences():
    """input x0 through the exact denoiser: g = J_D^T grad log p(c | D(x)), checked by central differences."""
    sigma, h = 0.6, 1e-6
    guided = matcher_guided(MIX.denoise, matcher_loss, Schedule("constant", 1.0), RANGE, input="x0")
    step = (guided(X, sigma) - MIX.denoise(X, sigma)) / sigma ** 2
    numeric = torch.zeros_like(X)
    for j in range(2):
        e = torch.zeros_like(X)
        e[:, j] = h
        numeric[:, j] = (log_posterior(MIX.denoise(X + e, sigma)) - log_posterior(MIX.denoise(X - e, sigma))) / (2 * h)
    torch.testing.assert_close(step, numeric, rtol=1e-5, atol=1e-6)


def test_rms_clipping_bounds_every_sample():
    guided = matcher_guided(MIX.denoise, matcher_loss, Schedule("constant", 1.0), RANGE, input="x_sigma", clip_rms=0.3)
    step = (guided(X, 0.5) - MIX.denoise(X, 0.5)) / 0.25
    rms = step.pow(2).mean(1).sqrt()
    raw = closed_form_grad(X).pow(2).mean(1).sqrt()
    assert bool((rms <= 0.3 * (1 + 1e-12)).all())
    torch.testing.assert_close(rms, raw.clamp(max=0.3))


@pytest.mark.parametrize("name, expected", [
    ("skip-noisiest", [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), ("late", [0] * 8 + [1, 1]), ("early", [1, 1] + [0] * 8),
    ("none", [0] * 10), ("constant", [1] * 10)])
def test_schedules_guide_the_steps_they_name(name, expected):
    sigmas = schedules.append_zero(schedules.geometric(5.0, 0.01, 10))
    assert Schedule(name, 1.0, 0.2).plan(sigmas).tolist() == expected


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(SCHEDULES), steps=st.integers(2, 40), scale=st.floats(0, 20), fraction=st.floats(0.05, 0.95))
def test_the_weight_at_a_grid_level_is_the_plan_of_its_step(name, steps, scale, fraction):
    """On a geometric grid the log positions are i / (steps - 1): at(sigma_i) equals plan()[i]."""
    schedule = Schedule(name, scale, fraction)
    sigmas = schedules.geometric(5.0, 0.01, steps)
    at = schedule.at(sigmas, 0.01, 5.0)
    plan = schedule.plan(schedules.append_zero(sigmas))
    if name in ("skip-noisiest", "late", "early"):  # thresholds: equal except where u sits on the edge
        edge = torch.isclose(torch.arange(steps, dtype=torch.float64) / (steps - 1),
                             torch.tensor(fraction if name != "late" else 1 - fraction, dtype=torch.float64))
        at, plan = at[~edge], plan[~edge]
    torch.testing.assert_close(at, plan, rtol=1e-9, atol=1e-9)
    shape = Schedule(name, 1.0, fraction).plan(schedules.append_zero(sigmas))
    assert bool(((shape >= 0) & (shape <= 1)).all())
    if name in ("ramp-up", "ramp-down"):
        diffs = shape.diff()
        assert bool((diffs >= 0).all()) if name == "ramp-up" else bool((diffs <= 0).all())
    if name == "cosine":
        assert shape[0] == pytest.approx(0, abs=1e-12) and shape[-1] == pytest.approx(0, abs=1e-12)


def test_bad_guidance_settings_are_refused():
    for bad in (dict(name="sometimes"), dict(scale=-1.0), dict(scale=math.inf), dict(fraction=0.0), dict(fraction=1.0)):
        with pytest.raises(InputError):
            Schedule(**{"name": "constant", **bad})
    with pytest.raises(InputError, match="guidance input"):
        matcher_guided(MIX.denoise, matcher_loss, Schedule(), RANGE, input="noise")
    with pytest.raises(InputError, match="clip_rms"):
        matcher_guided(MIX.denoise, matcher_loss, Schedule(), RANGE, clip_rms=0.0)
    with pytest.raises(InputError, match="sigma_range"):
        cfg_denoiser(MIX.denoise, MIX.denoise, Schedule())(X, 0.5)
