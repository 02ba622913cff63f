"""Closed forms and lemmas of ``theory/`` (phase 1: no dependency on the OT / sampler packages).

Tolerances: closed form against closed form or against an exact library computation -> float64 rounding
(a few ulps times the number of operations, taken as 1e-9 relative unless stated); ODE solves -> the
solver's tolerance times the stated growth factor; quadratures -> their error bound, stated inline.
"""
import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from dpmot_bench.data import get_dataset
from dpmot_bench.data.gmm import GaussianMixture
from dpmot_bench.errors import InputError, ShapeError
from dpmot_bench.ot.kernel import potential
from . import closed_forms as cf
from dpmot_bench.theory import lipschitz as lip
from dpmot_bench.theory import ot_stage as ots
from dpmot_bench.theory.flows import integrate_flow
from dpmot_bench.theory.rates import binomial_mad, fit_slope, latent_lower_bound

floats = st.floats(-3, 3, allow_nan=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (see dpmot_bench.threads)."""
    from dpmot_bench.threads import one_cpu_thread

    with one_cpu_thread():
        yield
positive = st.floats(0.05, 3, allow_nan=False)


# ------------------------------------------------------------------------------------------ W2 oracles
@given(m1=floats, m2=floats, s1=positive, s2=positive, dim=st.integers(1, 4))
def test_gaussian_w2_isotropic_closed_form(m1, m2, s1, s2, dim):
    # W2^2(N(a, s1^2 I), N(b, s2^2 I)) = |a - b|^2 + d (s1 - s2)^2. The Bures formula gets the covariance
    # part as a difference of traces of size d (s1^2 + s2^2), so its rounding error is a few ulps of that
    # in absolute terms (at s1 ~ s2 the square root of that error alone is ~1e-7): compare squares.
    a, b = np.full(dim, m1), np.full(dim, m2)
    expected = dim * (m1 - m2) ** 2 + dim * (s1 - s2) ** 2
    rounding = 16 * np.finfo(np.float64).eps * dim * (s1 ** 2 + s2 ** 2)
    assert cf.gaussian_w2(a, s1 ** 2, b, s2 ** 2) ** 2 == pytest.approx(expected, rel=1e-7, abs=rounding)


def test_gaussian_w2_commuting_covariances_and_rotation():
    rng = np.random.default_rng(0)
    va, vb = rng.uniform(0.1, 2, 3), rng.uniform(0.1, 2, 3)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))  # a common eigenbasis: sum (sqrt a_i - sqrt b_i)^2
    ca, cb = q @ np.diag(va) @ q.T, q @ np.diag(vb) @ q.T
    expected = math.sqrt(np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2) + 1.0)
    assert cf.gaussian_w2(np.zeros(3), ca, np.eye(3)[0], cb) == pytest.approx(expected, rel=1e-7)


@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 10_000))
def test_w2_1d_matches_emd(n, m, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(1, 2, size=m)
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    emd = math.sqrt(max(ot.emd2(a, b, ot.dist(x[:, None], y[:, None])), 0))
    assert cf.w2_1d(x, y, a, b) == pytest.approx(emd, rel=1e-7, abs=1e-9)


# ------------------------------------------------------------------------------------- Gaussian data
def test_gaussian_flow_pushes_marginals_and_composes():
    g = cf.GaussianData([1.0, -2.0], [[0.5, 0.2], [0.2, 0.3]])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2))
    np.testing.assert_allclose(g.flow(g.flow(x, 2.0, 0.7), 0.7, 0.1), g.flow(x, 2.0, 0.1), rtol=1e-12)
    factor = g.flow(np.eye(2) + g.mean, 2.0, 0.1) - g.mean  # the linear map's matrix (symmetric)
    np.testing.assert_allclose(factor @ g.marginal_cov(2.0) @ factor.T, g.marginal_cov(0.1), rtol=1e-12)


def test_reference_ode_matches_linear_flow():
    g = cf.GaussianData([1.0, -2.0], [[0.5, 0.2], [0.2, 0.3]])
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((64, 2)) * 3)
    end, traj = integrate_flow(g.denoise, x, 5.0, 0.002, sigmas_out=[1.0, 0.05])
    # The flow contracts (Lip <= 1), so the global error is at most about (steps) * rtol * |x|: 1e-7.
    np.testing.assert_allclose(end.numpy(), g.flow(x.numpy(), 5.0, 0.002), atol=1e-7)
    np.testing.assert_allclose(traj[0].numpy(), g.flow(x.numpy(), 5.0, 1.0), atol=1e-7)
    np.testing.assert_allclose(traj[1].numpy(), g.flow(x.numpy(), 5.0, 0.05), atol=1e-7)


def test_gaussian_gronwall_is_exact():
    # F2: ell = lam / (lam + sigma^2) and the Gronwall factor equals the true Lipschitz constant.
    g = cf.GaussianData([0.0, 0.0], np.diag([0.3, 0.05]))
    sigmas = lip.log_sigma_grid(0.01, 3.0, 513)
    log_lam = lip.log_gronwall(sigmas, 0.3 / (0.3 + sigmas ** 2))
    # Trapezoid error in t = log sigma: (range) h^2 max|f''| / 12 with f a logistic in 2t, |f''| <= 0.4.
    h = np.log(300) / 512
    assert abs(log_lam[-1] - math.log(g.flow_lipschitz(0.01, 3.0))) <= np.log(300) * h ** 2 * 0.4 / 12


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2)])
def test_linear_flow_factor_order(method, order):
    # The one-step factors converge to the exact factor at the method's order on Karras grids.
    from dpmot_bench.schedules import karras
    lam = np.array([0.25, 1.0])
    exact = np.sqrt((lam + 0.002 ** 2) / (lam + 2.0 ** 2))
    errors = [np.abs(cf.linear_flow_factors(lam, karras(2.0, 0.002, n).numpy(), method) - exact).max()
              for n in (64, 128, 256, 512)]
    fit = fit_slope([64, 128, 256, 512], errors)
    # The next term of the error expansion is O(n^-(p+1)): the fitted slope is within ~1/n of -p.
    assert fit["slope"] == pytest.approx(-order, abs=0.15)


def test_shifted_denoiser_error_is_exact_and_attains_the_bound():
    s, sigma_end, sigma_star = 0.5, 0.01, 2.0
    g = cf.GaussianData([0.0, 0.0], s ** 2)
    delta = torch.tensor([0.03, -0.04], dtype=torch.float64)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((16, 2)) * 2)
    moved = integrate_flow(lambda z, sig: g.denoise(z, sig) + delta, x, sigma_star, sigma_end)
    exact = integrate_flow(g.denoise, x, sigma_star, sigma_end)
    c = cf.shifted_denoiser_flow_error(s, sigma_end, sigma_star)
    np.testing.assert_allclose((moved - exact).numpy(), np.broadcast_to(c * delta.numpy(), (16, 2)), atol=1e-7)
    # Lemma B1's integral with the exact Lambda equals c |delta|; Cauchy-Schwarz (k1 J^1/2) is above it.
    sigmas = lip.log_sigma_grid(sigma_end, sigma_star, 2049)
    log_lam = 0.5 * np.log((s ** 2 + sigma_end ** 2) / (s ** 2 + sigmas ** 2))
    integral = lip.alekseev_integral(sigmas, log_lam, np.full_like(sigmas, 0.05))
    assert integral == pytest.approx(c * 0.05, rel=1e-5)  # trapezoid, h = 5.3 / 2048
    k1 = math.exp(lip.log_k1(sigmas, log_lam))
    j_sm = 0.05 ** 2 * 0.5 * (sigma_end ** -2 - sigma_star ** -2)
    assert k1 * math.sqrt(j_sm) >= integral
    assert k1 ** 2 == pytest.approx((s ** 2 + sigma_end ** 2) / 2 * math.log((s ** 2 + sigma_star ** 2)
                                                                           / (s ** 2 + sigma_end ** 2)), rel=1e-5)


# ---------------------------------------------------------------------------------------- GMM flows
@settings(max_examples=10)
@given(st.integers(0, 1000), st.floats(0.05, 3))
def test_gmm_jacobian_matches_autograd(seed, sigma):
    gen = torch.Generator().manual_seed(seed)
    mix = GaussianMixture(torch.randn(4, 3, generator=gen, dtype=torch.float64),
                          torch.rand(4, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(3, 3, generator=gen, dtype=torch.float64) * 2
    auto = torch.stack([torch.func.jacrev(lambda z: mix.denoise(z[None], sigma)[0])(row) for row in x])
    np.testing.assert_allclose(lip.gmm_denoiser_jacobian(mix, x, sigma).numpy(), auto.numpy(), atol=1e-9)


@pytest.mark.parametrize("name", ["gmm-grid25", "gmm-ring8", "gmm-hd"])
def test_probe_eigenvalues_never_exceed_the_rigorous_bound(name):
    mix = get_dataset(name).mixture
    for sigma in (0.003, 0.03, 0.3, 3.0):
        probes = lip.gmm_probe_points(mix, sigma, 200)
        ell = lip.max_eigenvalue(lip.gmm_denoiser_jacobian(mix, probes, sigma)).max()
        assert float(ell) <= lip.gmm_ell_upper(mix, sigma) * (1 + 1e-9)


def test_closed_form_log_lambda_matches_quadrature():
    mix = get_dataset("gmm-ring8").mixture
    sigmas = lip.log_sigma_grid(0.002, 1.0, 4097)
    quad = lip.log_gronwall(sigmas, lip.gmm_ell_upper(mix, sigmas))[-1]
    assert quad == pytest.approx(lip.gmm_log_lipschitz_upper(mix, 0.002, 1.0), rel=1e-4)


def test_two_mode_flow_lipschitz_is_attained():
    # F4: the flow's derivative at the midpoint of a symmetric two-mode 1-D mixture equals Lambda_hi.
    a, s, sigma_star = 1.0, 0.4, 1.0
    mix = GaussianMixture(torch.tensor([[-a], [a]], dtype=torch.float64), s)
    eps = 1e-4
    ends = integrate_flow(mix.denoise, torch.tensor([[-eps], [eps]], dtype=torch.float64), sigma_star, 0.0,
                          rtol=1e-10, atol=1e-13)
    # Central difference of an odd map: relative error eps^2 |Phi'''| / (6 Phi'), measured 1.6e-4 at
    # eps = 1e-3, so 1.6e-6 here; the solver adds ~ atol / eps = 1e-9.
    derivative = float(ends[1, 0] - ends[0, 0]) / (2 * eps)
    assert derivative == pytest.approx(math.exp(lip.gmm_log_lipschitz_upper(mix, 0.0, sigma_star)), rel=1e-5)


# ----------------------------------------------------------------------------------- 1-D semi-discrete
sources = [stats.norm(0.3, 1.2), stats.uniform(-1, 2.5)]


@pytest.mark.parametrize("source", sources, ids=["norm", "uniform"])
@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9))
def test_semidiscrete_1d_h_star_gives_the_weights(source, seed, n):
    rng = np.random.default_rng(seed)
    y, w = rng.normal(size=n) * 2, rng.dirichlet(np.ones(n) * 2)
    h, bounds, cost = cf.semidiscrete_1d(source, y, w)
    np.testing.assert_allclose(cf.cell_masses_1d(source, y, h), w, atol=1e-9)
    # The cost against scipy's quadrature of (x - y_i)^2 dF on every interval (independent code path).
    ys = np.sort(y)
    quad = sum(integrate.quad(lambda t, c=c: (t - c) ** 2 * source.pdf(t), lo, hi, epsabs=1e-12)[0]
               for c, lo, hi in zip(ys, bounds[:-1], bounds[1:]))
    assert cost == pytest.approx(quad, rel=1e-7, abs=1e-10)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 8))
def test_cell_masses_1d_against_argmax_on_quantiles(seed, n):
    rng = np.random.default_rng(seed)
    source = stats.norm(0, 1)
    y, h = rng.normal(size=n), rng.normal(size=n)
    m = 20_000
    x = source.ppf((np.arange(m) + 0.5) / m)  # m quantile points of mass 1/m each
    counts = np.bincount(np.argmax(np.outer(x, y) + h, 1), minlength=n) / m
    # Each of the <= n - 1 cell boundaries misassigns at most one quantile point: error <= 2 / m per cell.
    np.testing.assert_allclose(cf.cell_masses_1d(source, y, h), counts, atol=2 / m + 1e-12)


# -------------------------------------------------------------------------------------- OT-stage facts
@given(seed=st.integers(0, 10_000), n=st.integers(2, 10), dim=st.integers(1, 3))
def test_tv_sandwich_brackets_emd(seed, n, dim):
    rng = np.random.default_rng(seed)
    z = torch.from_numpy(rng.normal(size=(n, dim)))
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
    w2 = math.sqrt(max(ot.emd2(a, b, ot.dist(z.numpy(), z.numpy())), 0))
    lower, upper = ots.tv_sandwich(z, torch.from_numpy(a), torch.from_numpy(b))
    assert lower - 1e-9 <= w2 <= upper + 1e-9


def _gap_at_kinks(y, h, h2):
    """u_h - u_h2 at every kink of either envelope and beyond them: the difference is piecewise linear
    with kinks among the pairwise intersections of the lines, and constant beyond the outermost ones
    (both envelopes end with the lines of smallest and largest slope)."""
    kinks = [(hh[i] - hh[j]) / (y[j] - y[i]) for hh in (h, h2) for i in range(len(y)) for j in range(i + 1, len(y))]
    xs = np.array(kinks + [min(kinks) - 1, max(kinks) + 1])
    return np.max(np.outer(xs, y) + h, 1) - np.max(np.outer(xs, y) + h2, 1)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 7), scale=st.floats(1e-4, 0.3))
def test_potential_gap_lemma_ot3(seed, n, scale):
    rng = np.random.default_rng(seed)
    source = stats.norm(0, 1)
    y = np.sort(rng.normal(size=n) * 2)
    if np.min(np.diff(y)) < 1e-3:
        return
    h_star, _, _ = cf.semidiscrete_1d(source, y, rng.dirichlet(np.ones(n) * 3))
    h = h_star + scale * rng.normal(size=n)
    diff = _gap_at_kinks(y, h, h_star)
    assert np.abs(diff).max() <= np.abs(h - h_star).max() + 1e-9                        # OT3 (i)
    if np.all(cf.cell_masses_1d(source, y, h) > 0):                                    # OT3 (ii)
        assert (diff.max() - diff.min()) / 2 == pytest.approx(ots.oscillation(torch.from_numpy(h - h_star)) / 2,
                                                              rel=1e-7, abs=1e-10)


@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), scale=st.floats(1e-5, 0.5))
def test_mass_error_bound_ot4(seed, n, scale):
    rng = np.random.default_rng(seed)
    source = stats.norm(0.5, 0.7)
    y = rng.normal(size=n)
    nu = rng.dirichlet(np.ones(n) * 3)
    h_star, _, _ = cf.semidiscrete_1d(source, y, nu)
    h = h_star + scale * rng.normal(size=n)
    tv = float(ots.tv(torch.from_numpy(cf.cell_masses_1d(source, y, h)), torch.from_numpy(nu)))
    rho = ots.projection_density_bound("gaussian", 0.7)
    yt = torch.from_numpy(y[:, None])
    bound = ots.mass_error_bound(yt, torch.from_numpy(h), torch.from_numpy(h_star), rho)
    assert tv <= bound + 1e-12
    assert bound <= min(1.0, rho * ots.inverse_distance_sum(yt) * ots.oscillation(torch.from_numpy(h - h_star))) + 1e-12


def test_projection_density_bounds():
    assert ots.projection_density_bound("gaussian", [0.5, 2.0]) == pytest.approx(1 / (0.5 * math.sqrt(2 * math.pi)))
    # Uniform square of side 2: the diagonal projection has the triangular density with peak 1/sqrt(2)... and
    # sqrt(sum w^-2) = sqrt(1/2) >= it; along an axis the density is 1/2.
    assert ots.projection_density_bound("uniform", [2.0, 2.0]) == pytest.approx(math.sqrt(0.5))
    with pytest.raises(InputError):
        ots.projection_density_bound("laplace", 1.0)
    with pytest.raises(InputError):
        ots.projection_density_bound("gaussian", [1.0, 0.0])


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), tau=st.floats(1e-3, 1.0))
def test_smoothing_lemma_ot5(seed, tau):
    gen = torch.Generator().manual_seed(seed)
    y, h = torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    x = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    hard, smooth = potential(x, y, h), potential(x, y, h, tau)
    gap = ots.smoothing_potential_gap(6, tau)
    assert bool((smooth <= hard + 1e-12).all()) and bool((smooth >= hard - gap - 1e-12).all())
    # (ii): E|T_tau - T_h| <= rho tau N (N - 1); Monte-Carlo mean + 4 standard errors must stay below it.
    weights = torch.softmax((x @ y.T + h) / tau, 1)
    gaps = ((weights @ y) - y[(x @ y.T + h).argmax(1)]).norm(dim=1)
    l1_bound, _ = ots.smoothing_map_bounds(y, ots.projection_density_bound("gaussian", 1.0), tau)
    assert float(gaps.mean() - 4 * gaps.std() / math.sqrt(len(gaps))) <= l1_bound


def test_bad_inputs_raise():
    with pytest.raises(ShapeError):
        ots.mass_error_bound(torch.zeros(4, 2), torch.zeros(3), torch.zeros(3), 1.0)
    with pytest.raises(InputError):
        cf.semidiscrete_1d(stats.norm(), [0.0, 0.0])
    with pytest.raises(InputError):
        cf.linear_flow_factors([1.0], [0.1, 0.5])
    with pytest.raises(InputError):
        lip.log_sigma_grid(1.0, 0.5)
    with pytest.raises(InputError):
        lip.gmm_ell_upper(GaussianMixture(torch.zeros(2, 2), torch.tensor([0.1, 0.2])), 1.0)
    with pytest.raises(ShapeError):
        cf.gaussian_w2([0.0, 0.0], np.eye(3), [0.0, 0.0], 1.0)


# ------------------------------------------------------------------------------------------- rates
def test_binomial_mad_and_latent_lower_bound():
    k = np.arange(41)
    assert binomial_mad(40, 0.3) == pytest.approx(np.sum(stats.binom.pmf(k, 40, 0.3) * np.abs(k - 12)), rel=1e-12)
    mix = get_dataset("gmm-ring8").mixture
    bounds = [latent_lower_bound(mix, n) for n in (100, 400, 1600)]
    # E|b_k - a_k| ~ N^-1/2 dominates, so the bound on the RMS W2 scales as N^-1/4 (ratio 2^-1/2 per 4x).
    assert bounds[1] / bounds[0] == pytest.approx(2 ** -0.5, rel=0.03)
    assert bounds[2] / bounds[1] == pytest.approx(2 ** -0.5, rel=0.03)
    assert fit_slope([1, 2, 4], [1, 0.5, 0.25])["slope"] == pytest.approx(-1)


def test_ring_centre_flow_jacobian_f4b():
    # F4 (b): the centre of a symmetric ring is a trajectory; the flow's Jacobian there is the closed form.
    k, s, sigma_star = 8, 0.4, 1.0
    angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    mix = GaussianMixture(torch.stack([torch.cos(angles), torch.sin(angles)], 1), s)
    eps = 1e-4
    start = torch.tensor([[eps, 0.0], [-eps, 0.0], [0.0, eps]], dtype=torch.float64)
    ends = integrate_flow(mix.denoise, start, sigma_star, 0.0, rtol=1e-10, atol=1e-13)
    va, vb = s ** 2, s ** 2 + sigma_star ** 2
    expected = math.sqrt(va / vb) * math.exp(0.25 * (1 / va - 1 / vb))
    # Central difference of an odd map (relative error O(eps^2)); the Jacobian is a multiple of I.
    assert float(ends[0, 0] - ends[1, 0]) / (2 * eps) == pytest.approx(expected, rel=1e-5)
    assert float(ends[2, 1]) / eps == pytest.approx(expected, rel=1e-4)
