"""Exact Gaussian-mixture structure: denoiser, score, limits, sampling, and the empirical denoiser."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy.special import logsumexp

from dpmot_bench.data import GaussianMixture, empirical_denoiser, get_dataset
from dpmot_bench.data import gmm as gmm_module
from dpmot_bench.errors import InputError, NonFiniteError, ShapeError

GMM_NAMES = ["gmm-grid25", "gmm-ring8", "gmm-hd"]
log_sigmas = st.floats(min_value=-3.0, max_value=3.0)  # sigma from 1e-3 to 1e3


def independent_log_prob(mixture: GaussianMixture, sigma: float):
    """The marginal log-density built from torch.distributions, not from our code."""
    std = torch.sqrt(mixture.stds ** 2 + sigma ** 2)
    components = torch.distributions.Independent(torch.distributions.Normal(mixture.means, std[:, None]), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mixture.weights), components)


def noisy_points(mixture, sigma, seed, n=16, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    x0 = mixture.means[torch.randint(mixture.n_components, (n,), generator=gen)]
    return x0 + spread * (sigma + 0.3) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", GMM_NAMES)
@given(log_sigma=log_sigmas, seed=st.integers(0, 2 ** 31), spread=st.floats(0.1, 5.0))
def test_denoiser_is_tweedie_of_autograd_score(name, log_sigma, seed, spread):
    mixture = get_dataset(name).mixture
    sigma = 10.0 ** log_sigma
    x = noisy_points(mixture, sigma, seed, spread=spread).requires_grad_(True)
    (grad,) = torch.autograd.grad(independent_log_prob(mixture, sigma).log_prob(x).sum(), x)
    expected = x.detach() + sigma ** 2 * grad
    got = mixture.denoise(x.detach(), sigma)
    # float64 rounding of terms of size |x| and sigma^2 |grad|; nothing else may differ.
    scale = x.detach().abs() + sigma ** 2 * grad.abs() + 1.0
    assert torch.all((got - expected).abs() <= 1e-9 * scale)
    assert torch.allclose(mixture.score(x.detach(), sigma), grad, rtol=1e-7, atol=1e-9 / sigma ** 2)


@pytest.mark.parametrize("name", GMM_NAMES)
@given(log_sigma=st.floats(-6, -3), seed=st.integers(0, 2 ** 31))
def test_denoiser_at_small_sigma_returns_x(name, log_sigma, seed):
    # D(x) - x = sum_k r_k (sigma^2 / v_k) (m_k - x), so |D(x) - x| <= sigma^2 / min_k v_k * max_k |m_k - x|.
    mixture = get_dataset(name).mixture
    sigma = 10.0 ** log_sigma
    x = noisy_points(mixture, 0.0, seed, spread=0.05)
    gap = torch.cdist(x, mixture.means).max(1).values
    bound = sigma ** 2 / (mixture.stds.min() ** 2 + sigma ** 2) * gap
    assert torch.all((mixture.denoise(x, sigma) - x).norm(dim=1) <= bound * (1 + 1e-9) + 1e-12)


@pytest.mark.parametrize("name", GMM_NAMES)
@given(log_sigma=st.floats(3, 5), seed=st.integers(0, 2 ** 31))
def test_denoiser_at_huge_sigma_returns_mean(name, log_sigma, seed):
    mixture = get_dataset(name).mixture
    sigma = 10.0 ** log_sigma
    x = mixture.mean() + sigma * torch.randn(8, mixture.dim, generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64)
    # Logits differ by at most delta = (|x| spread(m) + max|m|^2) / v, so |r - w|_1 <= e^(2 delta) - 1;
    # the shrinkage gain s^2 / v adds at most gain (|x| + max|m|).
    v = mixture.stds.min() ** 2 + sigma ** 2
    m_max = mixture.means.norm(dim=1).max()
    spread = torch.cdist(mixture.means, mixture.means).max()
    delta = (x.norm(dim=1) * spread + m_max ** 2) / v
    gain = mixture.stds.max() ** 2 / v
    bound = m_max * torch.expm1(2 * delta) + gain * (x.norm(dim=1) + m_max)
    err = (mixture.denoise(x, sigma) - mixture.mean()).norm(dim=1)
    assert torch.all(err <= bound + 1e-12)


@pytest.mark.parametrize("name", GMM_NAMES)
def test_log_prob_matches_torch_distributions(name):
    mixture = get_dataset(name).mixture
    for sigma in (0.0, 0.1, 3.0):
        x = noisy_points(mixture, sigma, 0, n=64)
        assert torch.allclose(mixture.log_prob(x, sigma), independent_log_prob(mixture, sigma).log_prob(x),
                              rtol=1e-10, atol=1e-8)


def test_marginal_is_the_convolution():
    mixture = get_dataset("gmm-ring8").mixture
    x = noisy_points(mixture, 0.5, 1, n=32)
    assert torch.allclose(mixture.marginal(0.5).log_prob(x), mixture.log_prob(x, 0.5))
    assert torch.allclose(mixture.marginal(0.5).denoise(x, 0.0), x)


@pytest.mark.parametrize("name", GMM_NAMES)
def test_sampling_matches_weights_means_and_covariance(name):
    mixture = get_dataset(name).mixture
    n = 20_000
    x, labels = mixture.sample(n, seed=7)
    # Label frequencies: binomial standard error sqrt(w (1 - w) / n); 5 standard errors.
    freq = torch.bincount(labels, minlength=mixture.n_components).double() / n
    se = torch.sqrt(mixture.weights * (1 - mixture.weights) / n)
    assert torch.all((freq - mixture.weights).abs() <= 5 * se)
    # Each sample is near the mean of its label: within-component offset ~ s * chi_d.
    offsets = (x.double() - mixture.means[labels]).norm(dim=1) / mixture.stds[labels]
    assert offsets.max() < math.sqrt(mixture.dim) + 7
    # Overall mean: standard error sqrt(diag(Cov) / n), 5 standard errors per coordinate.
    se_mean = torch.sqrt(torch.diagonal(mixture.covariance()) / n)
    assert torch.all((x.double().mean(0) - mixture.mean()).abs() <= 5 * se_mean)
    assert torch.equal(mixture.nearest_component(x), labels)  # well-separated modes


def test_sample_rows_depend_only_on_seed_and_index():
    mixture = get_dataset("gmm-grid25").mixture
    big, big_labels = mixture.sample(3000, seed=3)
    small, small_labels = mixture.sample(10, seed=3)
    middle, _ = mixture.sample(100, seed=3, start=1500)
    assert torch.equal(big[:10], small) and torch.equal(big_labels[:10], small_labels)
    assert torch.equal(big[1500:1600], middle)
    assert not torch.equal(mixture.sample(10, seed=4)[0], small)


def brute_force_empirical_denoiser(points: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(x)
    for row, xi in enumerate(x):
        logits = np.array([-np.sum((xi - p) ** 2) / (2 * sigma ** 2) for p in points])
        out[row] = np.exp(logits - logsumexp(logits)) @ points
    return out


@given(log_sigma=st.floats(-2, 2), seed=st.integers(0, 2 ** 31), n_points=st.integers(1, 40),
       dim=st.integers(1, 8), chunk=st.sampled_from([1 << 22, 64]))
def test_empirical_denoiser_matches_brute_force(log_sigma, seed, n_points, dim, chunk, monkeypatch_module):
    monkeypatch_module.setattr(gmm_module, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(seed)
    points, x = rng.normal(size=(n_points, dim)), rng.normal(size=(30, dim)) * 2
    sigma = 10.0 ** log_sigma
    got = empirical_denoiser(torch.from_numpy(points)).denoise(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, brute_force_empirical_denoiser(points, x, sigma), rtol=1e-9, atol=1e-9)


def test_empirical_denoiser_at_small_sigma_snaps_to_nearest_point():
    points, _ = get_dataset("digits").data("train")
    x = points[:50] + 0.01 * torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(empirical_denoiser(points).denoise(x, 0.02), points[:50], atol=1e-5)


def test_bad_input_raises_precise_errors():
    mixture = get_dataset("gmm-ring8").mixture
    with pytest.raises(ShapeError):
        mixture.denoise(torch.zeros(4, 3), 1.0)
    with pytest.raises(NonFiniteError):
        mixture.denoise(torch.tensor([[float("nan"), 0.0]]), 1.0)
    with pytest.raises(InputError, match="sigma"):
        mixture.denoise(torch.zeros(2, 2), -1.0)
    with pytest.raises(InputError, match="sum to 1"):
        GaussianMixture(torch.zeros(2, 2), 0.1, torch.tensor([0.5, 0.6]))
    with pytest.raises(InputError, match=">= 0"):
        GaussianMixture(torch.zeros(2, 2), -0.1)
    with pytest.raises(InputError, match="point mass"):
        empirical_denoiser(torch.zeros(2, 2)).log_prob(torch.zeros(1, 2), 0.0)
