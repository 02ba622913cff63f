"""W2 (exact and sliced) and its floor, precision / recall / density / coverage, nearest neighbours and
memorisation."""
import contextlib
import io
import math

import numpy as np
import ot
import prdc
import pytest
import torch
from hypothesis import given, strategies as st
from sklearn.neighbors import NearestNeighbors

from dpmot_bench.data import get_dataset
from dpmot_bench.errors import InputError, NonFiniteError, ShapeError, UnknownNameError
from dpmot_bench.metrics import (exact_w2, memorisation, precision_recall_density_coverage, sliced_w2, w2,
                                 w2_floor, w2_method)
from dpmot_bench.metrics import _points
from dpmot_bench.metrics.wasserstein import N_PROJECTIONS, W2_EXACT_MAX, sliced_directions

seeds = st.integers(0, 2 ** 32 - 1)


def w2_1d_by_quantiles(x, y):
    """W2^2 = int_0^1 (F^-1(u) - G^-1(u))^2 du: both quantile functions are constant between the merged
    breakpoints {i/n} and {j/m}."""
    xs, ys = np.sort(x), np.sort(y)
    edges = np.union1d(np.linspace(0, 1, len(xs) + 1), np.linspace(0, 1, len(ys) + 1))
    mids = (edges[:-1] + edges[1:]) / 2
    qx, qy = xs[(mids * len(xs)).astype(int)], ys[(mids * len(ys)).astype(int)]
    return math.sqrt(np.sum((qx - qy) ** 2 * np.diff(edges)))


@given(seed=seeds, n=st.integers(1, 60), m=st.integers(1, 60), shift=st.floats(-5, 5))
def test_exact_and_sliced_match_the_1d_closed_form(seed, n, m, shift):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 1)), shift + rng.exponential(size=(m, 1))
    expected = w2_1d_by_quantiles(x[:, 0], y[:, 0])
    # network simplex and sorting are exact up to float64 rounding of the summed costs
    assert exact_w2(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # in 1-D every unit direction is +-1, so sliced W2 is W2
    assert sliced_w2(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if n == m:
        assert expected == pytest.approx(math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2)),
                                         rel=1e-12, abs=1e-15)


@given(seed=seeds, n=st.integers(1, 80), m=st.integers(1, 80), dim=st.integers(1, 6),
       n_projections=st.integers(1, 40))
def test_sliced_matches_pot(seed, n, m, dim, n_projections):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, dim)), rng.standard_normal((m, dim)) * 2 + 1
    directions = sliced_directions(dim, n_projections, seed).numpy()
    expected = ot.sliced_wasserstein_distance(x, y, projections=directions.T, p=2)
    assert sliced_w2(x, y, n_projections, seed) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def gaussian_sampler(mean, std):
    return lambda n, seed: np.asarray(mean) + np.asarray(std) * np.random.default_rng(seed).standard_normal(
        (n, len(std)))


def floor_radius(floor):
    """A high-probability bound on W2(x_n, p) for an n-sample x_n of p. Joint convexity of W2^2 gives
    W2^2(x_n, p) <= E_{x'} W2^2(x_n, x'_n) with x'_n an independent n-sample: the floor's mean square,
    plus three standard deviations for the draw of x_n."""
    values = np.asarray(floor["values"])
    return math.sqrt(np.mean(values ** 2)) + 3 * floor["std"]


MEAN_Q, STD_Q = np.array([1.0, 0.5]), np.array([0.5, 2.0])  # q = N(MEAN_Q, diag(STD_Q^2)), p = N(0, I)


def test_exact_w2_against_gaussian_closed_form():
    n = 1000
    p, q = gaussian_sampler([0.0, 0.0], [1.0, 1.0]), gaussian_sampler(MEAN_Q, STD_Q)
    true = math.sqrt(np.sum(MEAN_Q ** 2) + np.sum((1 - STD_Q) ** 2))  # commuting covariances
    floor_p, floor_q = w2_floor(p, n, seed=1, repeats=4), w2_floor(q, n, seed=2, repeats=4)
    assert floor_p["method"] == "exact" and len(floor_p["values"]) == 4
    estimate = w2(p(n, 10), q(n, 11))
    # triangle inequality: |W2(x_n, y_n) - W2(p, q)| <= W2(x_n, p) + W2(y_n, q)
    assert abs(estimate - true) <= floor_radius(floor_p) + floor_radius(floor_q)
    assert floor_radius(floor_p) + floor_radius(floor_q) < 0.5 * true  # the check has teeth


def test_sliced_w2_against_gaussian_closed_form():
    n = 4000
    assert w2_method(n, n) == "sliced"
    p, q = gaussian_sampler([0.0, 0.0], [1.0, 1.0]), gaussian_sampler(MEAN_Q, STD_Q)
    # Per direction theta: W2^2 of the 1-D Gaussians = (theta . m)^2 + (1 - sqrt(theta^T S_q theta))^2.
    phi = np.linspace(0, 2 * np.pi, 4096, endpoint=False)  # a periodic integrand: the rectangle rule is
    theta = np.stack([np.cos(phi), np.sin(phi)], 1)  # exact to rounding at this resolution
    per_direction = (theta @ MEAN_Q) ** 2 + (1 - np.sqrt((theta ** 2) @ STD_Q ** 2)) ** 2
    true_sq = per_direction.mean()
    # SW2^2 averages N_PROJECTIONS random directions: its error has std sd(per_direction) / sqrt(N_PROJECTIONS)
    projection_error = 4 * per_direction.std() / math.sqrt(N_PROJECTIONS) / math.sqrt(true_sq)
    floor_p, floor_q = w2_floor(p, n, seed=3, repeats=3), w2_floor(q, n, seed=4, repeats=3)
    assert floor_p["method"] == "sliced"
    estimate = w2(p(n, 12), q(n, 13))
    # SW2^2 is an average of W2^2's, jointly convex too: the floor argument of the exact case holds.
    assert abs(estimate - math.sqrt(true_sq)) <= floor_radius(floor_p) + floor_radius(floor_q) + projection_error


def test_method_switch_and_determinism():
    x, y = np.random.default_rng(0).standard_normal((2, 50, 3))
    assert w2_method(W2_EXACT_MAX, W2_EXACT_MAX) == "exact" and w2_method(W2_EXACT_MAX + 1, 10) == "sliced"
    assert w2(x, y, max_exact=49) == sliced_w2(x, y) and w2(x, y) == exact_w2(x, y)
    assert sliced_w2(x, y, seed=5) == sliced_w2(x, y, seed=5) != sliced_w2(x, y, seed=6)
    assert sliced_w2(x, y) <= exact_w2(x, y) + 1e-12  # SW2 <= W2: any coupling projects to one
    sampler = get_dataset("gmm-ring8").sample  # returns (x, labels): the points are taken
    assert w2_floor(sampler, 200, seed=0) == w2_floor(sampler, 200, seed=0)
    assert w2(x, x) == 0.0


@given(seed=seeds, n_real=st.integers(7, 120), n_fake=st.integers(7, 120), dim=st.integers(1, 10),
       shift=st.floats(0, 2), k=st.sampled_from([3, 5]))
def test_prdc_matches_the_prdc_package(seed, n_real, n_fake, dim, shift, k):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, dim))
    fake = shift + rng.standard_normal((n_fake, dim)) * rng.uniform(0.5, 2)
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        expected = prdc.compute_prdc(real, fake, k)
    got = precision_recall_density_coverage(real, fake, k)
    assert got == pytest.approx({key: float(value) for key, value in expected.items()}, abs=1e-12)


def test_prdc_of_identical_sets():
    x = np.random.default_rng(0).standard_normal((300, 4))
    got = precision_recall_density_coverage(x, x)
    # Each point's ball holds its copy and, at exactly the radius, not its k-th neighbour (strict <).
    assert got == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def _prdc_package(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        return {key: float(value) for key, value in prdc.compute_prdc(real, fake, k).items()}


def _prdc_case(case, seed, n, dim):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, dim))
    if case == "copies":
        return real, real  # one object: sklearn (in prdc) then zeroes the self-distances as we get them
    if case == "near-duplicates":
        return real, real + 1e-6 * rng.standard_normal((n, dim))
    return real, 0.3 + 1.2 * rng.standard_normal((n + 17, dim))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("case", ["copies", "near-duplicates", "random"])
@pytest.mark.parametrize("seed, n, dim", [(0, 200, 4), (1, 120, 16), (2, 60, 1)])
def test_prdc_matches_the_prdc_package_on_copies_and_near_duplicates(case, seed, n, dim, k, chunked, monkeypatch):
    # prdc.compute_prdc(real, fake, nearest_k): radius = (nearest_k + 1)-th smallest distance to the own set,
    # self included (get_kth_value(..., k=nearest_k + 1)), density divides by nearest_k: our k is its nearest_k.
    real, fake = _prdc_case(case, seed, n, dim)
    expected = _prdc_package(real, fake, k)
    if chunked:
        monkeypatch.setattr(_points, "_CHUNK_ENTRIES", 7)
    got = precision_recall_density_coverage(real, fake, k)
    # shares of points: the same counts over the same n, so equal floats
    for key in ("precision", "recall", "coverage"):
        assert got[key] == expected[key], key
    # density: the same count of (fake, real ball) hits, divided in a different order
    assert round(got["density"] * k * len(fake)) == round(expected["density"] * k * len(fake))
    assert got["density"] == pytest.approx(expected["density"], rel=0, abs=1e-12)
    if case == "copies":
        assert got == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def test_prdc_distances_are_one_function():
    # radii and comparisons both from pairwise_distances: a copy is at 0, and the k-th neighbour's
    # distance as a radius compares equal to itself as a fake-real distance
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.standard_normal((50, 8)) * 30 + 100)  # large norms: the matrix product cancels
    full = _points.pairwise_distances(x, x)
    assert (full.diagonal() == 0).all() and torch.equal(full, full.T)
    assert torch.equal(_points.kth_nearest_distances(x, 4), full.kthvalue(4, dim=1).values)
    dist, index = _points.knn_distances(x, x, 4)
    assert torch.equal(dist, full.gather(1, index))


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(_points, "_CHUNK_ENTRIES", 7)  # blocks of a single row or a handful


@given(seed=seeds, n=st.integers(1, 80), m=st.integers(3, 80), dim=st.integers(1, 8))
def test_knn_matches_sklearn(seed, n, m, dim):
    rng = np.random.default_rng(seed)
    query, reference = rng.standard_normal((n, dim)), rng.standard_normal((m, dim))
    dist, index = _points.knn_distances(torch.from_numpy(query), torch.from_numpy(reference), 3)
    ref_index = NearestNeighbors(n_neighbors=3, algorithm="brute").fit(reference).kneighbors(query)[1]
    assert (index.numpy() == ref_index).all()
    # sklearn's own distances use |x|^2 + |y|^2 - 2<x, y> (cancellation); ours are direct differences
    direct = np.linalg.norm(query[:, None, :] - reference[ref_index], axis=2)
    assert np.allclose(dist.numpy(), direct, rtol=1e-14, atol=0)  # summation order only


def test_chunking_changes_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    real, fake, train = rng.standard_normal((3, 90, 5))
    before = precision_recall_density_coverage(real, fake), memorisation(fake, train=train, heldout=real)
    monkeypatch.setattr(_points, "_CHUNK_ENTRIES", 7)
    after = precision_recall_density_coverage(real, fake), memorisation(fake, train=train, heldout=real)
    assert before[0] == after[0]
    for key, value in before[1].items():
        assert np.array_equal(value, after[1][key]) if isinstance(value, np.ndarray) else value == after[1][key]


def grid_split(split, n):
    return get_dataset("gmm-grid25").data(split, n)[0]


def test_exact_copies_are_copies():
    train = grid_split("train", 3000)
    copies = train[torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:500]]
    out = memorisation(copies, train=train, heldout=grid_split("heldout", 1000))
    assert (out["nn_to_train"] == 0).all()  # distances of the found neighbours are recomputed directly
    assert out["copy_rate_train"] == 1.0 and out["ratio_copy_rate_train"] == 1.0
    assert out["threshold"] > 0 and "quantile" in out["threshold_rule"]


def test_fresh_data_copy_rate_matches_the_baseline():
    # Held-out points and fresh samples are both i.i.d. from the true distribution, so each falls under the
    # threshold (the q-quantile of the m held-out NN distances) with the same probability F(t) ~ q. The
    # difference of the two rates has std <= sqrt(q(1-q)/n + q(1-q)/m); allow 4 of them. The same holds
    # for the ratio test.
    train, heldout = grid_split("train", 4000), grid_split("heldout", 2000)
    fresh, _ = get_dataset("gmm-grid25").sample(3000, seed=7)
    out = memorisation(fresh, train=train, heldout=heldout)
    q, n, m = 0.01, 3000, 2000
    assert abs(out["baseline_copy_rate"] - q) <= 1 / m  # the quantile of the baseline itself
    assert abs(out["copy_rate_train"] - out["baseline_copy_rate"]) <= 4 * math.sqrt(q * (1 - q) * (1 / n + 1 / m))
    r = out["baseline_ratio_copy_rate"]
    assert abs(out["ratio_copy_rate_train"] - r) <= 4 * math.sqrt(max(r, 1 / m) * (1 / n + 1 / m))
    assert out["nn_to_train"].shape == (n,) and out["heldout_nn_to_train"].shape == (m,)


def test_copies_of_noisy_targets():
    # DPM-OT-style: targets are held-out points plus noise, samples land within a tiny distance of them.
    heldout = grid_split("heldout", 1000)
    targets = heldout + 0.01 * torch.randn(heldout.shape, generator=torch.Generator().manual_seed(1))
    samples = targets + 1e-4 * torch.randn(heldout.shape, generator=torch.Generator().manual_seed(2))
    out = memorisation(samples, targets=targets, train=grid_split("train", 3000), heldout=heldout)
    assert out["copy_rate_targets"] == 1.0 and out["ratio_copy_rate_targets"] == 1.0
    assert out["copy_rate_train"] < 0.2  # not copies of the training set
    given = memorisation(samples, targets=targets, threshold=1e-6)
    assert given["threshold_rule"] == "given" and given["copy_rate_targets"] == 0.0 and "nn_to_train" not in given


POINTS = np.zeros((10, 3))
BAD_CALLS = [
    (lambda: w2(POINTS, np.zeros((10, 4))), ShapeError),
    (lambda: w2(POINTS, np.zeros((0, 3))), ShapeError),
    (lambda: w2(POINTS, np.full((10, 3), np.nan)), NonFiniteError),
    (lambda: w2(POINTS, POINTS, method="magic"), UnknownNameError),
    (lambda: sliced_w2(POINTS, np.zeros((10, 2))), ShapeError),
    (lambda: sliced_w2(POINTS, POINTS, n_projections=0), InputError),
    (lambda: exact_w2(POINTS, np.zeros((10, 2))), ShapeError),
    (lambda: w2_floor(gaussian_sampler([0.0], [1.0]), 10, seed=0, repeats=1), InputError),
    (lambda: precision_recall_density_coverage(POINTS, np.zeros((10, 2))), ShapeError),
    (lambda: precision_recall_density_coverage(POINTS[:3], POINTS), ShapeError),  # needs > k rows
    (lambda: precision_recall_density_coverage(POINTS, POINTS, k=0), InputError),
    (lambda: precision_recall_density_coverage(POINTS, np.full((10, 3), np.inf)), NonFiniteError),
    (lambda: memorisation(POINTS), InputError),
    (lambda: memorisation(POINTS, heldout=POINTS, targets=POINTS), InputError),
    (lambda: memorisation(POINTS, train=np.zeros((10, 2))), ShapeError),
    (lambda: memorisation(np.zeros((0, 3)), train=POINTS), ShapeError),
    (lambda: memorisation(POINTS, train=np.full((10, 3), np.nan)), NonFiniteError),
    (lambda: memorisation(POINTS, train=POINTS, threshold=-1.0), InputError),
    (lambda: memorisation(POINTS, train=POINTS, quantile=1.0), InputError),
    (lambda: memorisation(POINTS, train=POINTS[:1]), ShapeError),  # the ratio test needs 2 neighbours
    (lambda: memorisation("samples", train=POINTS), InputError),
]


@pytest.mark.parametrize("call, error", BAD_CALLS)
def test_bad_input(call, error):
    with pytest.raises(error):
        call()
