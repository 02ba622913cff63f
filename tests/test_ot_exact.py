"""Semi-discrete OT against independent oracles: 1-D closed forms, exact 2-D power-cell areas (scipy),
POT's exact linear program, and the symmetries of the problem.

Tolerances: a Monte-Carlo mass from M points has std sqrt(m (1 - m) / M); we allow Z = 5 standard errors
(a false alarm has probability 6e-7 per comparison, below 1e-3 over every comparison a run makes). A
solver that fits on a sample of n points matches the masses *of that sample*, so its true masses are off
by about the sample's own error, std sqrt(nu (1 - nu) / n) for Monte Carlo (quasi-Monte Carlo does better);
comparing it with an independent M-point estimate adds the two variances.
"""
import math

import numpy as np
import ot as pot
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from scipy import optimize, spatial, stats

from dpmot_bench.ot import GaussianSource, SemiDiscreteOT, UniformSource, curvature, kernel
from dpmot_bench.ot.problem import Problem
from dpmot_bench.ot.exact2d import exact_masses, power_cells
from dpmot_bench.ot.sampling import SourceSample

Z = 5.0
FIT = {"solver": "newton-qmc", "n_samples": 2**14}  # small, fast fits; n_final = 2^14 points


def _weights(draw_values):
    w = np.asarray(draw_values, dtype=np.float64)
    return torch.from_numpy(w / w.sum())


def _random(seed, m, n, d):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, generator=g, dtype=torch.float64))


def _mc_masses(source, y, h, m, seed=123):
    x = torch.cat(list(SourceSample(source, m, seed, key=(99,)).blocks()))
    return kernel.cell_counts(x, y.double(), h.double()).double().numpy() / m


# ------------------------------------------------------------------------------------------ 1-D closed form
def _closed_form_1d(source, y, nu):
    """Sorted targets y_1 < ... < y_N: the monotone map sends the i-th quantile interval to y_i, so the
    boundary of cells i and i + 1 is q_i = F^{-1}(nu_1 + ... + nu_i), and since it solves
    x y_i + h_i = x y_{i+1} + h_{i+1}, h_{i+1} = h_i - q_i (y_{i+1} - y_i)."""
    law = (stats.norm(source.mean, source.std) if source.kind == "gaussian"
           else stats.uniform(source.low, source.high - source.low))
    cumulative = np.cumsum(nu)[:-1]
    quantiles = law.ppf(cumulative)
    h = np.concatenate([[0.0], -np.cumsum(quantiles * np.diff(y))])
    return law, cumulative, quantiles, h


SOURCES_1D = [GaussianSource(1, mean=0.5, std=2.0), UniformSource(1, low=-1.0, high=3.0)]


@pytest.mark.parametrize("source", SOURCES_1D, ids=["gaussian", "uniform"])
@given(data=st.data())
@settings(max_examples=10)
def test_1d_fit_puts_cell_boundaries_at_source_quantiles(source, data):
    n = data.draw(st.integers(2, 6))
    y = np.sort(np.asarray(data.draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n, unique=True))))
    if np.diff(y).min() < 0.05:
        y = np.linspace(-2, 2, n)
    nu = _weights(data.draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n)))
    law, cumulative, quantiles, _ = _closed_form_1d(source, y, nu.numpy())
    fitted = SemiDiscreteOT(source, **FIT).fit(torch.tensor(y[:, None], dtype=torch.float32), nu)
    h = fitted.h_.numpy()
    boundaries = (h[:-1] - h[1:]) / np.diff(y)
    # The fit matches the cumulative masses of its 2^14-point sample, whose error at a boundary has std
    # sqrt(c (1 - c) / n) (an empirical CDF); float32 targets add ~1e-7.
    assert np.all(np.abs(law.cdf(boundaries) - cumulative) <= Z * np.sqrt(cumulative * (1 - cumulative) / 2**14))
    # and the boundaries themselves: dq = dc / density(q)
    slack = Z * np.sqrt(cumulative * (1 - cumulative) / 2**14) / law.pdf(quantiles)
    assert np.all(np.abs(boundaries - quantiles) <= slack + 1e-5)


@pytest.mark.parametrize("source", SOURCES_1D, ids=["gaussian", "uniform"])
@given(seed=st.integers(0, 10**6), n=st.integers(2, 12))
def test_1d_closed_form_h_gives_the_target_masses(source, seed, n):
    rng = np.random.default_rng(seed)
    y = np.sort(rng.normal(size=n)) + np.arange(n) * 0.1
    nu = _weights(rng.uniform(0.1, 1.0, n))
    _, _, _, h = _closed_form_1d(source, y, nu.numpy())
    m = 2**16
    masses = _mc_masses(source, torch.from_numpy(y[:, None]), torch.from_numpy(h), m)
    assert np.all(np.abs(masses - nu.numpy()) <= Z * np.sqrt(nu.numpy() * (1 - nu.numpy()) / m))


# ------------------------------------------------------------------------------------------ exact 2-D cells
def _scipy_cell_area(y, h, i, low, high):
    """Area of power cell i clipped to [low, high]^2 by scipy's HalfspaceIntersection (Qhull), with an
    interior point from the Chebyshev-centre linear program; 0 when the cell has no interior."""
    others = np.delete(np.arange(len(y)), i)
    a = np.vstack([y[others] - y[i], [[1, 0], [-1, 0], [0, 1], [0, -1]]])
    b = np.concatenate([h[i] - h[others], [high, -low, high, -low]])
    norms = np.linalg.norm(a, axis=1)
    lp = optimize.linprog([0, 0, -1], A_ub=np.column_stack([a, norms]), b_ub=b, bounds=[(None, None)] * 2 + [(0, None)])
    if lp.status != 0 or lp.x[2] < 1e-9:
        return 0.0
    halfspaces = np.column_stack([a, -b])
    vertices = spatial.HalfspaceIntersection(halfspaces, lp.x[:2]).intersections
    return spatial.ConvexHull(vertices).volume


@given(seed=st.integers(0, 10**6), n=st.integers(2, 12), spread=st.floats(0.0, 0.5))
@settings(max_examples=15)
def test_2d_power_cell_areas_agree_with_scipy_and_monte_carlo(seed, n, spread):
    rng = np.random.default_rng(seed)
    source = UniformSource(2, -1.0, 2.0)
    y, h = rng.uniform(-1, 2, (n, 2)), spread * rng.normal(size=n)
    exact = exact_masses(source, y, h)
    reference = np.array([_scipy_cell_area(y, h, i, -1.0, 2.0) for i in range(n)]) / 9.0
    assert np.allclose(exact, reference, atol=1e-9)
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)
    m = 2**17
    masses = _mc_masses(source, torch.from_numpy(y), torch.from_numpy(h), m)
    assert np.all(np.abs(masses - exact) <= Z * np.sqrt(np.clip(exact * (1 - exact), 0, None) / m) + 1e-12)


@given(seed=st.integers(0, 10**6), n=st.integers(2, 15))
@settings(max_examples=15)
def test_2d_gaussian_cell_masses_owens_t_against_monte_carlo(seed, n):
    rng = np.random.default_rng(seed)
    source = GaussianSource(2, mean=-0.5, std=1.5)
    y, h = rng.normal(size=(n, 2)), 0.3 * rng.normal(size=n)
    exact = exact_masses(source, y, h)
    assert exact.sum() == pytest.approx(1.0, abs=1e-9)
    m = 2**17
    masses = _mc_masses(source, torch.from_numpy(y), torch.from_numpy(h), m)
    assert np.all(np.abs(masses - exact) <= Z * np.sqrt(np.clip(exact * (1 - exact), 0, None) / m) + 1e-12)


def test_power_cells_are_convex_polygons_tiling_the_square():
    rng = np.random.default_rng(0)
    cells = power_cells(rng.uniform(0, 1, (30, 2)), 0.1 * rng.normal(size=30), (0.0, 1.0))
    area = sum(spatial.ConvexHull(c).volume for c in cells if len(c))
    assert area == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ optimality (POT)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 10), d=st.integers(1, 5))
@settings(max_examples=25)
def test_any_h_is_optimal_onto_its_own_push_forward(seed, n, d):
    """On a finite source sample, T_h is an optimal plan to sum_i (count_i / M) delta_{y_i}: its quadratic
    cost equals POT's exact linear program (ot.emd2) on the same two measures."""
    x, y, h = _random(seed, 150, n, d)
    index = kernel.assign(x, y, h)
    counts = torch.bincount(index, minlength=n).double()
    ours = float(((x - y[index]) ** 2).sum(1).mean())
    keep = counts > 0
    a, b = np.full(len(x), 1 / len(x)), (counts[keep] / len(x)).numpy()
    cost = pot.dist(x.numpy(), y[keep].numpy())  # squared Euclidean
    theirs = pot.emd2(a, b / b.sum(), cost)
    # Both are exact up to float64 rounding of sums of ~150 terms of size ~10.
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


# ------------------------------------------------------------------------------------------ convergence
@pytest.mark.parametrize("source", [GaussianSource(2, 0.0, 1.0), UniformSource(2, -1.0, 1.0)],
                         ids=["gaussian", "uniform"])
@pytest.mark.parametrize("uniform_weights", [True, False], ids=["uniform-weights", "weighted"])
@pytest.mark.parametrize("clustered", [False, True], ids=["spread", "clustered"])
def test_fitted_masses_are_within_standard_errors_of_the_weights(source, uniform_weights, clustered):
    """Also for tight clusters (5 clusters of 5 targets 1e-3 apart), where one smoothing temperature cannot
    fit every cell and the hard-mass Newton steps must."""
    rng = np.random.default_rng(1)
    n = 25
    y = torch.from_numpy(rng.uniform(-1, 1, (n, 2))).float()
    if clustered:
        y = y[:5].repeat_interleave(5, 0) + 1e-3 * torch.from_numpy(rng.normal(size=(n, 2))).float()
    nu = torch.full((n,), 1 / n, dtype=torch.float64) if uniform_weights else _weights(rng.uniform(0.3, 1, n))
    fitted = SemiDiscreteOT(source, **FIT).fit(y, nu)
    nu_ = nu.numpy()
    fit_se = np.sqrt(nu_ * (1 - nu_) / FIT["n_samples"])
    exact = exact_masses(source, y.double().numpy(), fitted.h_.numpy())  # the true masses of the fitted h
    assert np.all(np.abs(exact - nu_) <= Z * fit_se)
    m = 2**18
    mc = fitted.cell_masses(m, seed=3).numpy()  # an independent Monte-Carlo check
    assert np.all(np.abs(mc - nu_) <= Z * np.sqrt(fit_se ** 2 + nu_ * (1 - nu_) / m))


@given(seed=st.integers(0, 10**6), n=st.integers(2, 9), uniform=st.booleans())
@settings(max_examples=15, deadline=None)
def test_facet_jacobian_matches_finite_differences_of_exact_masses(seed, n, uniform):
    """The band estimate of d m / d h (Kitagawa-Merigot-Thibert) against central differences of the exact
    2-D masses. Its bias is O(band / facet length) (points near a facet's ends), large for tiny cells: with
    2^18 points and a 5% band one case in a few hundred exceeded 0.17 in relative Frobenius norm. With 2^20
    points and a 1% band every facet still collects hundreds of points (Poisson error of a few % per
    entry): 300 random cases gave at most 0.04 (median 0.005); 0.15 leaves room for both."""
    rng = np.random.default_rng(seed)
    source = UniformSource(2, -1.0, 1.0) if uniform else GaussianSource(2, 0.0, 1.0)
    y = torch.from_numpy(rng.uniform(-1, 1, (n, 2))).float()
    h = torch.from_numpy(rng.normal(0, 0.1, n))
    problem = Problem(source, y, torch.full((n,), 1 / n, dtype=torch.float64), seed)
    eps, yd = 1e-6, y.double().numpy()
    exact = np.stack([(exact_masses(source, yd, (h + eps * e).numpy()) - exact_masses(source, yd, (h - eps * e).numpy()))
                      / (2 * eps) for e in torch.eye(n, dtype=torch.float64)], 1)
    assume(np.linalg.norm(exact) > 0)
    x = problem.sample(2**20, (9,), quasi=True).head(2**20)
    estimate = curvature.facet_jacobian(problem, x, h, band_quantile=0.01, dense=True).numpy()
    assert np.allclose(estimate, estimate.T) and np.allclose(estimate.sum(1), 0)  # a graph Laplacian
    assert np.linalg.norm(estimate - exact) <= 0.15 * np.linalg.norm(exact)


@given(seed=st.integers(0, 10**6), spacing=st.sampled_from([1e-4, 1e-2, 1.0]), d=st.sampled_from([2, 16]))
@settings(max_examples=12, deadline=None)
def test_facet_distances_match_float64_however_close_the_targets(seed, spacing, d):
    """``facet_chunks``' distance t from a point to the bisector of its cell and a next-best one, against
    float64 arithmetic on the same (float32) targets and points, for clusters of targets ``spacing`` apart
    far from the origin (their float32 scores differ below float32's resolution). Its float32 target
    differences are the exact ones rounded once: t is off by at most ``d 2^-24 |x|``."""
    g = torch.Generator().manual_seed(seed)
    y = 20 + torch.randn(3, d, generator=g).repeat_interleave(4, 0) + spacing * torch.randn(12, d, generator=g)
    h = spacing * torch.randn(12, generator=g, dtype=torch.float64)
    problem = Problem(GaussianSource(d), y, torch.full((12,), 1 / 12, dtype=torch.float64), seed)
    x = torch.randn(500, d, generator=g)
    best, others, t, distance = curvature.facet_distances(problem, x, h)
    difference = y.double()[best, None, :] - y.double()[others]
    exact_distance = difference.norm(dim=2)
    exact_t = ((difference @ x.double()[:, :, None])[:, :, 0] + h[best, None] - h[others]).clamp_min(0) / exact_distance
    assert torch.allclose(distance, exact_distance, rtol=1e-6, atol=0)
    assert torch.all((t - exact_t).abs() <= d * 2**-24 * x.double().norm(dim=1, keepdim=True) + 1e-12)


def test_refill_gives_an_empty_cell_the_points_nearest_to_joining_it():
    """A target far inside the hull of the others with a very low h has an empty cell; after
    ``refill_empty`` it wins the one sample point nearest to joining it (two at most: float32 scores at the
    threshold), and no other cell's h moves (up to the centring)."""
    y = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0], [0.0, -0.3]])
    h = torch.tensor([0.0, 0.0, 0.0, -5.0], dtype=torch.float64)
    problem = Problem(GaussianSource(2), y, torch.full((4,), 0.25, dtype=torch.float64))
    x = problem.sample(2**14, (9,), quasi=True).head(2**14)
    assert kernel.cell_counts(x, y, h)[3] == 0
    refilled = curvature.refill_empty(problem, x, h, torch.tensor([False, False, False, True]))
    counts = kernel.cell_counts(x, y, refilled)
    assert 1 <= int(counts[3]) <= 2
    assert torch.allclose((refilled - h)[:3], (refilled - h)[0].expand(3))


def test_adam_mc_converges_to_its_noise_floor():
    """The reference solver, run to its noise-floor stop (n_final = 80 N points per iteration), ends with
    masses that an independent estimate cannot tell from the weights at the fit's own sample size."""
    rng = np.random.default_rng(2)
    n = 10
    source = UniformSource(2, -1.0, 1.0)
    y = torch.from_numpy(rng.uniform(-1, 1, (n, 2))).float()
    fitted = SemiDiscreteOT(source, solver="adam-mc", stop="noise-floor", init="moment-matched",
                            max_iter=3000).fit(y)
    assert fitted.solver_stopped_
    exact = exact_masses(source, y.double().numpy(), fitted.h_.numpy())
    # Adam keeps moving by ~lr per step at the noise floor; its h is the best of many noisy iterates, so
    # we only ask for the errors of a fit on ~10 N points (the per-iteration sample at the start).
    assert np.all(np.abs(exact - 1 / n) <= Z * math.sqrt((1 / n) * (1 - 1 / n) / (10 * n)))


# ------------------------------------------------------------------------------------------ symmetries
@given(seed=st.integers(0, 10**6), n=st.integers(2, 15))
@settings(max_examples=20)
def test_symmetries_of_the_power_cells(seed, n):
    """Exact 2-D masses (float64) under: a gauge h + c (nothing changes); a permutation of the targets
    (masses permute); translating the targets by b (h unchanged: <x, b> is common to all scores);
    translating the source by a (h' = h - <a, y>); scaling the targets by c > 0 (h' = c h) and the source
    by s > 0 (h' = s h)."""
    rng = np.random.default_rng(seed)
    source = GaussianSource(2, 0.0, 1.0)
    y, h = rng.normal(size=(n, 2)), 0.5 * rng.normal(size=n)
    base = exact_masses(source, y, h)
    assert np.allclose(exact_masses(source, y, h + 3.7), base, atol=1e-9)
    perm = rng.permutation(n)
    assert np.allclose(exact_masses(source, y[perm], h[perm]), base[perm], atol=1e-9)
    b = rng.normal(size=2)
    assert np.allclose(exact_masses(source, y + b, h), base, atol=1e-9)
    a = float(rng.normal())  # the source mean moves by a in every coordinate
    assert np.allclose(exact_masses(GaussianSource(2, a, 1.0), y, h - a * y.sum(1)), base, atol=1e-9)
    c, s = float(rng.uniform(0.2, 5)), float(rng.uniform(0.2, 5))
    assert np.allclose(exact_masses(source, c * y, c * h), base, atol=1e-9)
    assert np.allclose(exact_masses(GaussianSource(2, 0.0, s), y, s * h), base, atol=1e-9)


def test_fits_are_equivariant():
    """The same fit up to the symmetries: permuted targets give permuted h; translated targets the same h;
    a translated source h - <a, y>; scaled targets c h. The solver draws the same source points (they
    depend on the seed only) but float32 rounding of the changed scores can move a point across a
    boundary, so we compare the masses the fitted h give, within the fit's standard error."""
    rng = np.random.default_rng(4)
    n = 12
    y = torch.from_numpy(rng.normal(size=(n, 2))).float()
    nu = _weights(rng.uniform(0.5, 1, n))
    source = GaussianSource(2)

    def masses(src, targets, h):
        return exact_masses(src, targets.double().numpy(), h.numpy())

    base = SemiDiscreteOT(source, **FIT).fit(y, nu).h_
    tolerance = Z * np.sqrt(nu.numpy() * (1 - nu.numpy()) / FIT["n_samples"])
    perm = torch.from_numpy(rng.permutation(n))
    permuted = SemiDiscreteOT(source, **FIT).fit(y[perm], nu[perm]).h_
    assert np.all(np.abs(masses(source, y, permuted[torch.argsort(perm)]) - masses(source, y, base)) <= tolerance)
    b = torch.tensor([0.7, -1.2])
    translated = SemiDiscreteOT(source, **FIT).fit(y + b, nu).h_
    assert np.all(np.abs(masses(source, y, translated) - nu.numpy()) <= tolerance)
    scaled = SemiDiscreteOT(source, **FIT).fit(2.5 * y, nu).h_
    assert np.all(np.abs(masses(source, y, scaled / 2.5) - nu.numpy()) <= tolerance)
    shifted_source = GaussianSource(2, mean=0.8)
    shifted = SemiDiscreteOT(shifted_source, **FIT).fit(y, nu).h_
    assert np.all(np.abs(masses(source, y, shifted + 0.8 * y.double().sum(1)) - nu.numpy()) <= tolerance)


@given(seed=st.integers(0, 10**6), d=st.integers(1, 8))
def test_the_map_is_monotone(seed, d):
    """<x - x', T(x) - T(x')> >= 0 for all pairs: T is the gradient of the convex u_h. In exact arithmetic
    s_i(x) >= s_j(x) and s_j(x') >= s_i(x') sum to it; float64 scores can break a tie by ~1e-15."""
    x, y, h = _random(seed, 60, 20, d)
    t = y[kernel.assign(x, y, h)]
    products = ((x[:, None] - x[None]) * (t[:, None] - t[None])).sum(-1)
    assert float(products.min()) >= -1e-12
