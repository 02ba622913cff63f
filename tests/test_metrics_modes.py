"""Mode mixture: the reference code's classifier rule, and mode statistics on the Gaussian mixtures."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats

from dpmot_bench.data import GaussianMixture, get_dataset
from dpmot_bench.errors import InputError, NonFiniteError, ShapeError
from dpmot_bench.metrics import gmm_mode_metrics, high_quality_radius, mode_mixture_curve, mode_mixture_ratio

GMM_NAMES = ["gmm-grid25", "gmm-ring8", "gmm-hd"]
P_HIGH = 1 - math.exp(-4.5)  # P(|z| <= 3) for z ~ N(0, I_2): the 2-D "within 3 std" convention
P_TAIL = stats.norm.sf(3.0)  # P(z_1 > 3): an exact sample's offset towards one given neighbour exceeds 3 std


def probability_rows(draw_rows):
    rows = np.asarray(draw_rows, dtype=np.float64)
    return rows / rows.sum(1, keepdims=True)


weights_rows = st.integers(2, 12).flatmap(lambda c: st.lists(
    st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1.0)), min_size=c, max_size=c).filter(lambda r: sum(r) > 0),
    min_size=1, max_size=30))


@given(rows=weights_rows, lam=st.floats(0.01, 1.0))
def test_mixture_ratio_is_the_at_least_two_classes_rule(rows, lam):
    probs = probability_rows(rows)
    brute = np.mean([(row >= lam).sum() >= 2 for row in probs])
    assert mode_mixture_ratio(probs, lam) == brute
    assert mode_mixture_ratio(torch.from_numpy(probs).float(), lam) == np.mean(
        [(row >= lam).sum() >= 2 for row in probs.astype(np.float32)])


@given(rows=weights_rows)
def test_mixture_curve_is_non_increasing_and_matches_ratio(rows):
    probs = probability_rows(rows)
    curve = mode_mixture_curve(probs)
    lams = list(curve)
    assert {0.1, 0.2, 0.3, 0.4} <= set(lams) and lams == sorted(lams)
    values = [curve[lam] for lam in lams]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert all(curve[lam] == mode_mixture_ratio(probs, lam) for lam in lams)


def test_mixture_ratio_constructed_cases():
    one_hot = np.eye(10)
    assert mode_mixture_ratio(one_hot, 0.1) == 0.0
    halves = np.zeros((4, 10))
    halves[:, :2] = 0.5
    assert mode_mixture_ratio(halves, 0.5) == 1.0 and mode_mixture_ratio(halves, 0.51) == 0.0
    boundary = np.array([[0.25, 0.25, 0.5], [0.1, 0.1, 0.8]])
    assert mode_mixture_ratio(boundary, 0.25) == 0.5  # >= is inclusive: the first row is mixed
    assert mode_mixture_ratio(boundary, 0.1) == 1.0
    assert mode_mixture_curve(boundary, [0.1, 0.25, 0.3]) == {0.1: 1.0, 0.25: 0.5, 0.3: 0.0}


@pytest.mark.parametrize("probs, lam", [
    (np.array([[2.0, -1.0]]), 0.2),  # logits, not probabilities
    (np.array([[0.3, 0.3]]), 0.2),  # rows do not sum to 1
    (np.ones((3, 1)), 0.2),  # a single class
    (np.array([[0.5, 0.5]]), 0.0),
    (np.array([[0.5, 0.5]]), 1.5),
])
def test_mixture_ratio_bad_input(probs, lam):
    with pytest.raises(InputError):
        mode_mixture_ratio(probs, lam)


def test_mixture_ratio_shape_and_finiteness_errors():
    with pytest.raises(ShapeError):
        mode_mixture_ratio(np.zeros((0, 3)))
    with pytest.raises(ShapeError):
        mode_mixture_ratio(np.full(3, 1 / 3))
    with pytest.raises(NonFiniteError):
        mode_mixture_ratio(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("dim", [1, 2, 3, 32, 64])
def test_high_quality_radius_keeps_the_2d_coverage(dim):
    radius = high_quality_radius(3.0, dim)
    assert stats.chi2.cdf(radius ** 2, dim) == pytest.approx(P_HIGH, rel=1e-12)
    if dim == 2:
        assert radius == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("name", GMM_NAMES)
def test_exact_samples(name):
    dataset = get_dataset(name)
    n = 20_000
    x, labels = dataset.sample(n, seed=11)
    m = gmm_mode_metrics(x, dataset.mixture)
    k = m["n_modes"]
    # High quality with probability P_HIGH in every dimension (the radius is the chi2_d quantile), up to
    # 5 binomial standard errors. Modes are >= 0.76 apart against stds <= 0.1: nearest-mode labels are exact.
    assert abs(m["high_quality"] - P_HIGH) <= 5 * math.sqrt(P_HIGH * (1 - P_HIGH) / n)
    assert m["mode_counts"] == torch.bincount(labels, minlength=k).tolist()
    assert m["modes_covered"] == k
    # Between modes needs an offset > radius towards another mode: <= 4 neighbours x P(z > 3) in 2-D,
    # ~0 in 32-D (radius 7.3 std).
    between_bound = 4 * P_TAIL if dataset.dim == 2 else 0.0
    assert m["between_modes"] <= between_bound + 5 * math.sqrt(max(between_bound, 1 / n) / n)
    assert m["high_quality"] + m["between_modes"] + m["outliers"] == pytest.approx(1.0, abs=1e-12)
    # 2n KL(p_hat || w) -> chi2_{K-1}; its 1 - 1e-6 quantile bounds KL.
    assert 0 <= m["kl"] <= stats.chi2.isf(1e-6, k - 1) / (2 * n)
    # E TV <= (1/2) sum_k sqrt(w_k (1 - w_k) / n) (Jensen); one sample moves TV by <= 1/n, so by McDiarmid
    # TV exceeds its mean by t = sqrt(log(1e6) / (2n)) with probability <= 1e-6.
    w = dataset.mixture.weights.numpy()
    assert m["tv"] <= 0.5 * np.sqrt(w * (1 - w) / n).sum() + math.sqrt(math.log(1e6) / (2 * n))


@pytest.mark.parametrize("name", GMM_NAMES)
def test_all_samples_in_one_mode(name):
    mixture = get_dataset(name).mixture
    one = GaussianMixture(mixture.means[:1], mixture.stds[:1])
    n = 4000
    x, _ = one.sample(n, seed=2)
    m = gmm_mode_metrics(x, mixture)
    k, w0 = m["n_modes"], float(mixture.weights[0])
    assert m["modes_covered"] == 1 and m["mode_counts"][0] == n
    assert m["kl"] == pytest.approx(-math.log(w0), rel=1e-12)  # KL(delta_0 || w) = log(1 / w_0) = log K
    assert m["tv"] == pytest.approx(1 - w0, rel=1e-12)
    assert abs(m["high_quality"] - P_HIGH) <= 5 * math.sqrt(P_HIGH * (1 - P_HIGH) / n)


@pytest.mark.parametrize("name", GMM_NAMES)
def test_samples_between_modes(name):
    # Midpoints of each mean and its nearest other mean, jittered by a quarter of the high-quality radius.
    mixture = get_dataset(name).mixture
    means = mixture.means
    distances = torch.cdist(means, means).fill_diagonal_(float("inf"))
    midpoints = (means + means[distances.argmin(1)]) / 2
    radius = float(mixture.stds[0]) * high_quality_radius(3.0, mixture.dim)
    gen = torch.Generator().manual_seed(0)
    jitter = torch.randn(50, *midpoints.shape, generator=gen, dtype=torch.float64)
    jitter *= 0.25 * radius / jitter.norm(dim=-1, keepdim=True)
    x = (midpoints + jitter).reshape(-1, mixture.dim)
    m = gmm_mode_metrics(x, mixture)
    assert m["between_modes"] == 1.0 and m["high_quality"] == 0.0 and m["modes_covered"] == 0


@pytest.mark.parametrize("name", GMM_NAMES)
def test_far_samples_are_outliers(name):
    mixture = get_dataset(name).mixture
    directions = torch.randn(200, mixture.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    far = mixture.mean() + 100 * directions / directions.norm(dim=1, keepdim=True)  # far from every segment
    m = gmm_mode_metrics(far, mixture)
    assert m["outliers"] == 1.0 and m["modes_covered"] == 0


@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(1, 300), spread=st.floats(0.01, 10.0))
def test_accounting_on_arbitrary_points(seed, n, spread):
    mixture = get_dataset("gmm-grid25").mixture
    x = np.random.default_rng(seed).standard_normal((n, 2)) * spread
    m = gmm_mode_metrics(x, mixture)
    assert sum(m["mode_counts"]) == n and sum(m["high_quality_counts"]) == round(m["high_quality"] * n)
    assert m["high_quality"] + m["between_modes"] + m["outliers"] == pytest.approx(1.0, abs=1e-12)
    assert 0 <= m["kl"] <= math.log(25) + 1e-12 and 0 <= m["tv"] <= 1
    assert m["modes_covered"] == sum(c >= 1 for c in m["high_quality_counts"])


def test_gmm_metrics_bad_input():
    mixture = get_dataset("gmm-ring8").mixture
    with pytest.raises(ShapeError):
        gmm_mode_metrics(np.zeros((5, 3)), mixture)
    with pytest.raises(ShapeError):
        gmm_mode_metrics(np.zeros((0, 2)), mixture)
    with pytest.raises(NonFiniteError):
        gmm_mode_metrics(np.array([[np.inf, 0.0]]), mixture)
    with pytest.raises(InputError, match="std > 0"):
        gmm_mode_metrics(np.zeros((5, 2)), GaussianMixture(mixture.means, 0.0))
    with pytest.raises(InputError):
        gmm_mode_metrics(np.zeros((5, 2)), "gmm-ring8")
    with pytest.raises(InputError):
        gmm_mode_metrics(np.zeros((5, 2)), mixture, n_std=0)
