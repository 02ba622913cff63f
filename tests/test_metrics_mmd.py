"""MMD^2 against a Gaussian mixture (closed-form kernel means, the U-statistic and its variance) and
per-mode statistics. Tolerances are Monte-Carlo standard errors (5 of them where hypothesis draws many
cases, 3 for single checks) or exact identities."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats
from sklearn.metrics.pairwise import rbf_kernel

from dpmot_bench.data import GaussianMixture, get_dataset
from dpmot_bench.errors import InputError
from dpmot_bench.metrics.mmd import (default_bandwidth, mixture_kernel_constant, mixture_kernel_mean,
                                     mmd2_contributions, mmd2_to_mixture)
from dpmot_bench.metrics.modes import gmm_mode_metrics, per_mode_statistics
from dpmot_bench.stats import paired_difference


@st.composite
def mixtures(draw):
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31))
    rng = np.random.default_rng(seed)
    means = rng.uniform(-3, 3, (k, d))
    stds = rng.uniform(0.1, 1.5, k)
    weights = 0.5 / k + 0.5 * rng.dirichlet(np.ones(k))  # every weight >= 1 / (2k)
    return GaussianMixture(means, stds, weights), seed


def kernel(a, b, l):
    return np.exp(-((a - b) ** 2).sum(-1) / (2 * l ** 2))


@given(mix=mixtures(), factor=st.floats(0.5, 3.0))
def test_closed_form_kernel_means_match_monte_carlo(mix, factor):
    """f(x) = E_y k(x, y) and c = E k(y, y') against means over 20 000 draws (pairs of independent draws
    for c), within 5 standard errors of the mean (40 cases x 4 checks: P(any beyond 5) ~ 1e-4).

    The bandwidth is ``factor`` times the largest std: a kernel much narrower than a component makes
    k(x, y) a rare event (a share ~ (l^2 / (l^2 + s^2))^(d/2) of the draws carries the mean), whose sample
    mean is far from normal at this size; 2 million draws confirm the closed form there too, but too
    slowly for a test."""
    mixture, seed = mix
    l = factor * float(mixture.stds.max())
    n = 20_000
    y = mixture.sample(n, seed)[0].double().numpy()
    y2 = mixture.sample(n, seed + 1)[0].double().numpy()
    # points of the mixture (components of weight >= 1/8): far from the mass, E k(x, y) is a rare-event
    # mean whose sample std says nothing about its error
    x = mixture.sample(3, seed + 2)[0].double().numpy()
    f = mixture_kernel_mean(torch.from_numpy(x), mixture, l).numpy()
    for i in range(3):
        values = kernel(x[i], y, l)
        assert abs(f[i] - values.mean()) <= 5 * values.std() / math.sqrt(n) + 1e-12
    pairs = kernel(y, y2, l)
    assert abs(mixture_kernel_constant(mixture, l) - pairs.mean()) <= 5 * pairs.std() / math.sqrt(n) + 1e-12


def brute_force_variance(h):
    """The unbiased variance estimate from explicit sums over distinct index tuples (small n only)."""
    n = h.shape[0]
    idx = range(n)
    u = np.mean([h[i, j] for i, j in itertools.permutations(idx, 2)])
    a = np.mean([h[i, j] * h[i, k] for i, j, k in itertools.permutations(idx, 3)])
    b = np.mean([h[i, j] ** 2 for i, j in itertools.permutations(idx, 2)])
    c = np.mean([h[i, j] * h[k, m] for i, j, k, m in itertools.permutations(idx, 4)])
    return u, 2 / (n * (n - 1)) * (2 * (n - 2) * (a - c) + (b - c)), u ** 2 - c


@given(mix=mixtures(), l=st.floats(0.2, 3.0), n=st.integers(4, 9), block=st.integers(1, 5))
def test_u_statistic_and_variance_against_dense_and_brute_force_sums(mix, l, n, block):
    """The blockwise sums against sklearn's dense rbf_kernel, and the variance estimate against explicit
    sums over distinct index pairs, triples and quadruples (both of its forms)."""
    mixture, seed = mix
    x = mixture.sample(n, seed + 7)[0].double()
    out = mmd2_to_mixture(x, mixture, l, block_rows=block)
    xn = x.numpy()
    k = rbf_kernel(xn, xn, gamma=1 / (2 * l ** 2))
    f = mixture_kernel_mean(x, mixture, l).numpy()
    c = mixture_kernel_constant(mixture, l)
    sample_term = (k.sum() - np.trace(k)) / (n * (n - 1))
    assert out["kernel_mean_sample"] == pytest.approx(sample_term, rel=1e-9, abs=1e-12)
    assert out["mmd2"] == pytest.approx(sample_term - 2 * f.mean() + c, rel=1e-9, abs=1e-12)
    h = k - f[:, None] - f[None, :] + c
    u, var, var_alt = brute_force_variance(h)
    assert out["mmd2"] == pytest.approx(u, rel=1e-9, abs=1e-12)
    assert var == pytest.approx(var_alt, rel=1e-6, abs=1e-12)
    assert out["var"] == pytest.approx(var, rel=1e-6, abs=1e-12)


GRID = get_dataset("gmm-grid25").mixture


def repeats_of(mixture, n, repeats, shift=0.0, seed0=100):
    values, variances = [], []
    for r in range(repeats):
        x = mixture.sample(n, seed0 + r)[0].double() + shift
        out = mmd2_to_mixture(x, mixture)
        values.append(out["mmd2"])
        variances.append(out["var"])
    return np.asarray(values), np.asarray(variances)


def variance_ratio_band(values):
    """3 std of the sample variance s^2 relative to sigma^2 over R repeats: sqrt(2 / (R - 1) + kappa / R),
    the chi-square value 2 / (R - 1) plus the excess kurtosis kappa of the values (estimated from them;
    MMD^2_u at P = Q is a centred weighted sum of chi-squares, heavier-tailed than a normal)."""
    r = len(values)
    kappa = max(0.0, float(stats.kurtosis(values)))
    return 3 * math.sqrt(2 / (r - 1) + kappa / r)


def test_true_samples_have_zero_mmd_in_expectation_and_the_se_matches_the_spread():
    values, variances = repeats_of(GRID, 300, 400)
    spread = values.std(ddof=1)
    assert abs(values.mean()) <= 3 * spread / math.sqrt(len(values))
    ratio = variances.mean() / spread ** 2
    # mean(var) has its own noise (relative std of the estimate ~ sd(var) / (mean(var) sqrt(R)))
    own = 3 * variances.std(ddof=1) / (variances.mean() * math.sqrt(len(values)))
    assert abs(ratio - 1) <= variance_ratio_band(values) + own


def test_shifted_samples_have_mmd_far_above_zero_and_the_se_matches_the_spread():
    """A shift of one mode std: MMD^2 > 0 by many se, and the (non-degenerate) statistic's se agrees
    with the spread over repeats within the chi-square band."""
    values, variances = repeats_of(GRID, 400, 200, shift=0.05, seed0=1000)
    z = values / np.sqrt(variances)  # ~ 12 on average, sd ~ 1
    assert np.all(z > 5) and np.mean(z) > 8
    ratio = variances.mean() / values.var(ddof=1)
    own = 3 * variances.std(ddof=1) / (variances.mean() * math.sqrt(len(values)))
    assert abs(ratio - 1) <= variance_ratio_band(values) + own


def test_multiscale_kernel_is_the_average_of_the_single_scale_ones():
    x = GRID.sample(300, 3)[0]
    l = default_bandwidth(GRID)
    scales = [l / 2, l, 2 * l]
    multi = mmd2_to_mixture(x, GRID, scales, block_rows=37)
    singles = [mmd2_to_mixture(x, GRID, s)["mmd2"] for s in scales]
    assert multi["mmd2"] == pytest.approx(np.mean(singles), rel=1e-9, abs=1e-15)
    assert [p["mmd2"] for p in multi["per_bandwidth"]] == pytest.approx(singles, rel=1e-12, abs=1e-15)
    assert multi["bandwidth"] == scales


def test_contributions_average_to_the_statistic_and_feed_the_paired_bootstrap():
    """mean(psi) = MMD^2_u exactly; a paired difference of contributions (shifted arm vs exact arm, the
    same noise) is the difference of the two MMD^2_u values, positive by many se."""
    seeds = [11, 12, 13]
    exact = [GRID.sample(500, s)[0].double() for s in seeds]
    shifted = [x + 0.025 for x in exact]
    psi_a = [mmd2_contributions(x, GRID) for x in shifted]
    psi_b = [mmd2_contributions(x, GRID) for x in exact]
    mmd_a = [mmd2_to_mixture(x, GRID)["mmd2"] for x in shifted]
    mmd_b = [mmd2_to_mixture(x, GRID)["mmd2"] for x in exact]
    for psi, value in zip(psi_a + psi_b, mmd_a + mmd_b):
        assert float(psi.mean()) == pytest.approx(value, rel=1e-9, abs=1e-15)
    d = paired_difference([p.numpy() for p in psi_a], [p.numpy() for p in psi_b], n_boot=500)
    assert d.estimate == pytest.approx(np.mean(mmd_a) - np.mean(mmd_b), rel=1e-9)
    assert d.low > 0


def test_default_bandwidth_rule_and_bad_inputs():
    hd = get_dataset("gmm-hd").mixture
    assert default_bandwidth(hd) == pytest.approx(math.sqrt(hd.dim) * float(hd.stds.median()), rel=1e-12)
    with pytest.raises(InputError, match="point mass"):
        default_bandwidth(GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 0.0))
    with pytest.raises(InputError, match="bandwidth"):
        mmd2_to_mixture(GRID.sample(10, 0)[0], GRID, -1.0)
    with pytest.raises(InputError, match="GaussianMixture"):
        mmd2_to_mixture(GRID.sample(10, 0)[0], "gmm-grid25")
    with pytest.raises(InputError, match="columns"):
        mmd2_to_mixture(torch.zeros(10, 3), GRID)
    numpy_in = mmd2_to_mixture(GRID.sample(50, 1)[0].numpy(), GRID)["mmd2"]
    assert numpy_in == mmd2_to_mixture(GRID.sample(50, 1)[0], GRID)["mmd2"]


# ------------------------------------------------------------------------------------ per-mode statistics
@pytest.mark.parametrize("name, n", [("gmm-grid25", 20_000), ("gmm-ring8", 4000), ("gmm-hd", 4000)])
def test_per_mode_statistics_of_true_samples(name, n):
    """Exact samples: each weight error within 4 binomial stds sqrt(w (1 - w) / n) (a max over up to 25
    modes: P(any beyond 4) < 25 * 6.3e-5), each spread ratio within 4 of its chi-square stds
    1 / sqrt(2 n_k d) of 1, and the counts those of gmm_mode_metrics."""
    mixture = get_dataset(name).mixture
    x = mixture.sample(n, 21)[0]
    out = per_mode_statistics(x, mixture)
    errors, stds = np.asarray(out["weight_errors"]), np.asarray(out["weight_error_stds"])
    assert np.all(np.abs(errors) <= 4 * stds)
    ratios, ratio_stds = np.asarray(out["spread_ratios"]), np.asarray(out["spread_ratio_stds"])
    assert np.all(np.abs(ratios - 1) <= 4 * ratio_stds)
    assert out["counts"] == gmm_mode_metrics(x, mixture)["mode_counts"]
    assert out["tv"] == pytest.approx(gmm_mode_metrics(x, mixture)["tv"], rel=1e-12)
    assert out["empty_modes"] == 0 and sum(out["counts"]) == n
    assert per_mode_statistics(x, mixture, assign="posterior")["counts"] == out["counts"]


def test_per_mode_statistics_constructed_cases():
    mixture = get_dataset("gmm-ring8").mixture
    x, labels = mixture.sample(4000, 5)
    means = mixture.means.float()[labels]
    wide = per_mode_statistics(means + 2 * (x - means), mixture)  # every offset doubled: ratio 2
    assert wide["mean_spread_ratio"] == pytest.approx(
        2 * per_mode_statistics(x, mixture)["mean_spread_ratio"], rel=1e-5)
    dropped = per_mode_statistics(x[labels != 0], mixture)
    assert dropped["empty_modes"] == 1 and math.isnan(dropped["spread_ratios"][0])
    assert dropped["weight_errors"][0] == pytest.approx(-1 / 8)
    assert dropped["max_abs_weight_error"] == pytest.approx(1 / 8)
    with pytest.raises(InputError, match="assign"):
        per_mode_statistics(x, mixture, assign="closest")
