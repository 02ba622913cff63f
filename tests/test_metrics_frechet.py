"""Frechet distance: closed forms, an independent eigendecomposition, pytorch-fid's conventions, and its
sampling behaviour."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dpmot_bench.errors import NonFiniteError, ShapeError
from dpmot_bench.metrics import feature_statistics, frechet_distance, frechet_distance_from_stats

seeds = st.integers(0, 2 ** 32 - 1)


def random_psd(rng, d, rank=None):
    factor = rng.standard_normal((d, rank or d + 2))
    return factor @ factor.T / factor.shape[1]


def psd_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def frechet_by_eigh(mu1, cov1, mu2, cov2):
    """Independent route: tr (S1 S2)^{1/2} = sum sqrt(eig(S1^{1/2} S2 S1^{1/2})) (a symmetric PSD matrix)."""
    root = psd_sqrt(cov1)
    inner = np.linalg.eigvalsh(root @ cov2 @ root).clip(min=0)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(inner).sum())


@given(m1=st.floats(-100, 100), m2=st.floats(-100, 100), s1=st.floats(1e-3, 100), s2=st.floats(1e-3, 100))
def test_one_dimensional_closed_form(m1, m2, s1, s2):
    got = frechet_distance_from_stats([m1], [[s1 ** 2]], [m2], [[s2 ** 2]])
    # float64 rounding of terms of size m^2 and s^2 (the 1x1 sqrtm is a plain square root)
    scale = m1 ** 2 + m2 ** 2 + s1 ** 2 + s2 ** 2
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, abs=1e-13 * scale)


@given(seed=seeds, d=st.integers(1, 8))
def test_commuting_covariances_closed_form(seed, d):
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T commute: FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 10, d), rng.uniform(0.1, 10, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    got = frechet_distance_from_stats(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # Schur sqrtm is backward stable, error ~ d * 2^-52 * cond (cond <= 100 here) relative to |S|: 1e-9 of
    # the trace scale is a wide margin.
    assert got == pytest.approx(expected, abs=1e-9 * (a.sum() + b.sum() + 1))


@given(seed=seeds, d=st.integers(1, 12))
def test_matches_eigendecomposition(seed, d):
    rng = np.random.default_rng(seed)
    cov1, cov2 = random_psd(rng, d), random_psd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = frechet_by_eigh(mu1, cov1, mu2, cov2)
    assert frechet_distance_from_stats(mu1, cov1, mu2, cov2) == pytest.approx(
        expected, abs=1e-8 * (np.trace(cov1) + np.trace(cov2) + 1))


@given(seed=seeds, n=st.integers(3, 40), d=st.integers(1, 6))
def test_features_use_numpy_mean_and_unbiased_cov(seed, n, d):
    # pytorch-fid: mu = np.mean(act, axis=0), sigma = np.cov(act, rowvar=False).
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d)).astype(np.float32)
    b = (2 * rng.standard_normal((n + 3, d)) + 1).astype(np.float32)
    mu, cov = feature_statistics(a)
    assert np.allclose(mu, np.mean(a.astype(np.float64), axis=0), rtol=0, atol=1e-12)
    assert np.allclose(cov, np.atleast_2d(np.cov(a.astype(np.float64), rowvar=False)), rtol=0, atol=1e-12)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # 0-d for d = 1, as pytorch-fid gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n <= d: singular covariances, scipy warns
        expected = frechet_distance_from_stats(np.mean(a, 0, dtype=np.float64), cov_a,
                                               np.mean(b, 0, dtype=np.float64), cov_b)
        got = frechet_distance(a, b)
    # The statistics agree to ~1e-16 relative, but tr sqrt is ill-conditioned for singular covariances
    # (n <= d): a perturbation delta = 1e-14 |S| moves it by up to d sqrt(delta |S|) (sqrt is operator
    # monotone, |sqrt(l + delta) - sqrt(l)| <= sqrt(delta)); FD moves by twice that.
    norms = np.linalg.norm(np.atleast_2d(cov_a), 2) + np.linalg.norm(np.atleast_2d(cov_b), 2)
    assert abs(got - expected) <= 2 * d * math.sqrt(1e-14) * norms + 1e-12


def test_identical_sets_are_at_distance_zero():
    x = np.random.default_rng(0).standard_normal((200, 5))
    # sqrtm(S^2) = S up to rounding: |FD| <= 1e-10 * tr S
    assert abs(frechet_distance(x, x)) <= 1e-10 * np.trace(np.cov(x, rowvar=False))


def test_singular_product_falls_back_to_eps_offset(monkeypatch):
    """pytorch-fid's fallback: where scipy's sqrtm of the product is not finite, eps is added to both
    diagonals. A rank-1 covariance times a full one made scipy < 1.17 fail; 1.17 handles it, so the first
    sqrtm is made to fail here and the branch runs on every scipy; unpatched, whichever path scipy takes
    must give the same distance within the eps bound."""
    import dpmot_bench.metrics.frechet as frechet

    cov1 = np.array([[2.0, -2, -2], [-2, 2, 2], [-2, 2, 2]])
    cov2 = np.array([[8.0, 0, 2], [0, 8, -2], [2, -2, 1]])
    mu = np.zeros(3)
    eps = 1e-6
    # tr sqrt(S1 S2) is the nuclear norm of S1^{1/2} S2^{1/2}; |(S + eps I)^{1/2} - S^{1/2}| <= sqrt(eps) in
    # operator norm, so the trace moves by at most d sqrt(eps) (|S1|^{1/2} + |S2 + eps|^{1/2}); FD by twice it.
    d = 3
    bound = 2 * d * math.sqrt(eps) * (math.sqrt(np.linalg.norm(cov1, 2)) + math.sqrt(np.linalg.norm(cov2, 2) + eps))
    exact = frechet_by_eigh(mu, cov1, mu, cov2)
    assert abs(frechet_distance_from_stats(mu, cov1, mu, cov2, eps=eps) - exact) <= bound

    real_sqrtm, products = frechet.linalg.sqrtm, []

    def fails_first(product):
        products.append(product)
        return np.full_like(product, np.nan) if len(products) == 1 else real_sqrtm(product)

    monkeypatch.setattr(frechet.linalg, "sqrtm", fails_first)
    with pytest.warns(RuntimeWarning, match="singular"):
        got = frechet_distance_from_stats(mu, cov1, mu, cov2, eps=eps)
    offset = eps * np.eye(d)
    assert len(products) == 2 and np.allclose(products[1], (cov1 + offset) @ (cov2 + offset), rtol=0, atol=1e-15)
    assert abs(got - exact) <= bound


def test_sampling_bias_shrinks_like_d_squared_over_n():
    # Two independent n-samples of N(mu, I_d): E|mu1 - mu2|^2 = 2d/n exactly; with S_i = I + E_i the trace
    # term is the Bures distance, (1/4)|E1 - E2|_F^2 to second order, and Var(S_jk) = (1 + delta_jk)/(n - 1)
    # gives E|E1 - E2|_F^2 = 2 d (d + 1) / (n - 1). So E FD = 2d/n + d(d+1)/(2(n-1)) + O(d^3 / n^2).
    rng = np.random.default_rng(1)
    d, repeats = 4, 200
    mu = rng.standard_normal(d)
    for n in (250, 1000):
        values = np.array([frechet_distance(mu + rng.standard_normal((n, d)), mu + rng.standard_normal((n, d)))
                           for _ in range(repeats)])
        predicted = 2 * d / n + d * (d + 1) / (2 * (n - 1))
        # 4 standard errors of the mean over repeats, plus the O(d/n) relative size of the next order
        tolerance = 4 * values.std(ddof=1) / math.sqrt(repeats) + 2 * d / n * predicted
        assert abs(values.mean() - predicted) <= tolerance


@pytest.mark.parametrize("call, error", [
    (lambda: frechet_distance(np.zeros((5, 3)), np.zeros((5, 4))), ShapeError),
    (lambda: frechet_distance(np.zeros((1, 3)), np.zeros((5, 3))), ShapeError),
    (lambda: frechet_distance(np.zeros((0, 3)), np.zeros((5, 3))), ShapeError),
    (lambda: frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3))), NonFiniteError),
    (lambda: frechet_distance(np.zeros(5), np.zeros(5)), ShapeError),
    (lambda: frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), ShapeError),
    (lambda: frechet_distance_from_stats(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), ShapeError),
    (lambda: frechet_distance_from_stats(np.zeros(2), np.diag([np.inf, 1.0]), np.zeros(2), np.eye(2)), NonFiniteError),
])
def test_bad_input(call, error):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error):
            call()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 40), extra=st.integers(-5, 60))
def test_eigh_method_equals_pytorch_fid_sqrtm_formula(seed, d, extra):
    """tr (S1 S2)^{1/2} by eigenvalues of S1^{1/2} S2 S1^{1/2}: the same Frechet distance as sqrtm's."""
    rng = np.random.default_rng(seed)
    n = max(2, d + extra)  # singular covariances included (n <= d)
    a, b = rng.standard_normal((n, d)), 1.3 * rng.standard_normal((n + 3, d)) + 0.2
    stats = (*feature_statistics(a), *feature_statistics(b))
    exact = frechet_by_eigh(*stats)
    got = frechet_distance_from_stats(*stats, method="eigh")
    scale = np.trace(stats[1]) + np.trace(stats[3]) + 1.0
    # eigenvalues carry rounding ~ d eps |S|^2; a square root turns a rounded 0 into sqrt(d eps) |S|
    assert abs(got - exact) <= 2 * d * math.sqrt(d * np.finfo(float).eps) * scale
    if n > d:  # full rank: sqrtm needs no eps, and the two agree to rounding
        assert got == pytest.approx(frechet_distance_from_stats(*stats), rel=1e-7, abs=1e-9 * scale)
