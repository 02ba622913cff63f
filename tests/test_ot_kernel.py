"""The assignment kernel and the sources: against brute force, scipy's KD-tree, closed forms."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import spatial, stats

from dpmot_bench.errors import InputError
from dpmot_bench.noise import SampleNoise
from dpmot_bench.ot import GaussianSource, UniformSource, kernel, source_from_meta
from dpmot_bench.ot.sampling import BLOCK_ROWS, SourceSample


def _problem(seed, m, n, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(m, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype),
            torch.randn(n, generator=g, dtype=dtype))


def _rounding_bound(x, y, h):
    """Worst-case float32 rounding of a score <x, y_j> + h_j, computed in float64: a d-term dot product
    plus one addition carries at most (d + 1) u sum |x_k y_jk| + u |h_j| (u = 2^-24, Higham's gamma_d)."""
    u = torch.finfo(torch.float32).eps / 2
    d = x.shape[1]
    return (d + 1) * u * (x.abs() @ y.abs().T) + u * h.abs() + u * ((x @ y.T) + h).abs()


def _clear_rows(x, y, h):
    """Rows whose best score beats the second by more than twice the rounding bound: their argmax is
    the same in float32 and in exact arithmetic."""
    scores = x.double() @ y.double().T + h.double()
    if scores.shape[1] == 1:
        return torch.ones(len(x), dtype=torch.bool), torch.zeros(len(x), dtype=torch.int64)
    top = scores.topk(2, dim=1)
    bound = _rounding_bound(x.double(), y.double(), h.double()).max(1).values
    return top.values[:, 0] - top.values[:, 1] > 2 * bound, top.indices[:, 0]


@given(seed=st.integers(0, 10**6), m=st.integers(1, 300), n=st.one_of(st.integers(1, 60), st.integers(200, 700)),
       d=st.integers(1, 40), rows=st.integers(1, 80))
def test_assign_is_the_argmax_of_the_scores_in_any_chunking(seed, m, n, d, rows):
    x, y, h = _problem(seed, m, n, d, torch.float32)
    clear, expected = _clear_rows(x, y, h)
    index = kernel.assign(x, y, h, rows=rows)
    assert index.dtype == torch.int64 and index.shape == (m,)
    assert torch.equal(index[clear], expected[clear])
    assert torch.equal(kernel.cell_counts(x, y, h, rows=rows), torch.bincount(index, minlength=n))


@pytest.mark.parametrize("d", [16, 64, 3072])
@pytest.mark.parametrize("tail", [1, 2, 3, 63])
def test_a_short_last_chunk_is_scored_like_the_others(d, tail):
    """A chunk of one to three rows takes another path in MKL, rounded otherwise (measured): score_chunks
    multiplies a short last chunk together with the rows before it, so every row's float32 scores are those
    of the whole product, whatever the chunk size (what the kept winners' rescoring relies on)."""
    g = torch.Generator().manual_seed(tail)
    y, h, x = torch.randn(256, d, generator=g), torch.randn(256, generator=g), torch.randn(1024 + tail, d, generator=g)
    whole = torch.addmm(h, x, y.T)
    for rows in (1024, 512, 64):
        chunks = [scores.clone() for _, scores in kernel.score_chunks(x, y, h, rows=rows)]
        assert torch.equal(torch.cat(chunks), whole)


@given(seed=st.integers(0, 10**6), rows=st.integers(1, 50), blocks=st.integers(2, 6), levels=st.integers(1, 4))
def test_blocked_argmax_equals_torch_argmax_with_ties(seed, rows, blocks, levels):
    # Few distinct values: many ties, inside blocks and across them.
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, blocks * kernel.ARGMAX_BLOCK), generator=g).float()
    assert torch.equal(kernel.argmax_rows(scores), scores.argmax(dim=1))
    out = torch.empty(rows, dtype=torch.int64)
    assert kernel.argmax_rows(scores, out=out) is out and torch.equal(out, scores.argmax(dim=1))


def test_padding_never_wins_and_keeps_the_ties():
    y, h = torch.randn(300, 2), torch.zeros(300)
    y_pad, h_pad = kernel.padded(y, h)
    assert y_pad.shape[0] % kernel.ARGMAX_BLOCK == 0 and torch.equal(y_pad[:300], y)
    assert torch.isneginf(h_pad[300:]).all()
    # At x = 0 all 300 real targets tie: the lowest index wins, never a padding column.
    assert torch.equal(kernel.assign(torch.zeros(5, 2), y, h), torch.zeros(5, dtype=torch.int64))


def test_ties_go_to_the_lowest_index_in_every_chunking():
    # At x = 0 every score is h_j: an exact tie between the targets with the largest h.
    y = torch.randn(7, 3)
    h = torch.tensor([0.0, 2.0, 1.0, 2.0, 2.0, -1.0, 0.5])
    x = torch.zeros(50, 3)
    for rows in (1, 3, 64):
        assert torch.equal(kernel.assign(x, y, h, rows=rows), torch.full((50,), 1))


@given(seed=st.integers(0, 10**6), d=st.integers(1, 8))
def test_power_assignment_matches_a_kd_tree_on_lifted_points(seed, d):
    # argmax <x, y_j> + h_j = argmin |x - y_j|^2 - |y_j|^2 - 2 h_j = nearest neighbour of (x, 0) among the
    # lifted points (y_j, sqrt(C - |y_j|^2 - 2 h_j)): scipy's cKDTree is an independent implementation.
    x, y, h = _problem(seed, 400, 30, d)
    offset = -(y ** 2).sum(1) - 2 * h
    lifted = np.column_stack([y.numpy(), np.sqrt(offset.numpy() - offset.min().item() + 1.0)])
    query = np.column_stack([x.numpy(), np.zeros(len(x))])
    _, nearest = spatial.cKDTree(lifted).query(query)
    clear, _ = _clear_rows(x, y, h)
    assert np.array_equal(kernel.assign(x, y, h).numpy()[clear.numpy()], nearest[clear.numpy()])


@given(seed=st.integers(0, 10**6), d=st.integers(1, 16))
def test_voronoi_weights_give_nearest_neighbours(seed, d):
    x, y, _ = _problem(seed, 300, 25, d)
    h = -(y ** 2).sum(1) / 2
    distances = torch.cdist(x, y)
    two = distances.topk(2, dim=1, largest=False)
    clear = two.values[:, 1] - two.values[:, 0] > 1e-9
    assert torch.equal(kernel.assign(x, y, h)[clear], two.indices[clear, 0])


@given(seed=st.integers(0, 10**6), tau=st.floats(1e-3, 10.0))
def test_smooth_map_potential_and_masses_match_their_definitions(seed, tau):
    x, y, h = _problem(seed, 120, 17, 5)
    weights = torch.softmax((x @ y.T + h) / tau, dim=1)
    assert torch.allclose(kernel.smooth_transport(x, y, h, tau, rows=7), weights @ y, rtol=1e-9, atol=1e-9)
    assert torch.allclose(kernel.soft_masses(x, y, h, tau, rows=7), weights.sum(0), rtol=1e-9)
    hard = kernel.potential(x, y, h)
    smooth = kernel.potential(x, y, h, tau=tau, rows=7)
    assert torch.allclose(hard, (x @ y.T + h).max(1).values)
    # u_h - tau log N <= u_tau <= u_h (float64 rounding of a log-sum-exp: ~1e-12 relative).
    slack = 1e-9 * (1 + hard.abs())
    assert bool((smooth <= hard + slack).all()) and bool((smooth >= hard - tau * math.log(17) - slack).all())


def test_smooth_map_tends_to_the_hard_map():
    x, y, h = _problem(3, 500, 20, 3)
    clear, index = _clear_rows(x, y, h)
    gaps = (x @ y.T + h).topk(2, dim=1).values.diff(dim=1).neg()[:, 0]
    far = clear & (gaps > 0.05)
    # With tau = 1e-3 every other target weighs < N exp(-gap / tau) < 20 e^-50 on rows with gap > 0.05.
    smooth = kernel.smooth_transport(x, y, h, 1e-3)
    assert torch.allclose(smooth[far], y[index[far]], atol=1e-12)


# ------------------------------------------------------------------------------------------ sources
@pytest.mark.parametrize("source", [GaussianSource(3, mean=-1.5, std=0.3), UniformSource(3, low=-2.0, high=5.0)])
def test_source_draws_have_the_right_law(source):
    n = 2**15
    draws = {"mc": torch.cat(list(SourceSample(source, n, seed=4, key=(0,)).blocks())),
             "quasi": torch.cat(list(SourceSample(source, n, seed=4, key=(0,), quasi=True).blocks())),
             "noise": source.draw(SampleNoise(4, n))}
    reference = (stats.norm(source.mean, source.std) if source.kind == "gaussian"
                 else stats.uniform(source.low, source.high - source.low))
    for name, x in draws.items():
        assert x.shape == (n, 3) and x.dtype == torch.float32
        for k in range(3):
            # Kolmogorov-Smirnov against the exact law; the p-value of a true law is uniform on (0, 1),
            # so p > 1e-6 fails with probability 1e-6 per check (QMC samples fit far better than that).
            assert stats.kstest(x[:, k].double().numpy(), reference.cdf).pvalue > 1e-6, name


def test_solver_samples_are_named_by_seed_and_key_only():
    source = GaussianSource(2)
    whole = SourceSample(source, 3 * BLOCK_ROWS + 5, seed=1, key=(2, 7))
    blocks = list(whole.blocks())
    assert [len(b) for b in blocks] == [BLOCK_ROWS] * 3 + [5]
    assert torch.equal(torch.cat(list(whole.blocks(range(2, 4)))), torch.cat(blocks[2:]))
    assert torch.equal(whole.head(10), blocks[0][:10])
    other = torch.cat(list(SourceSample(source, 3 * BLOCK_ROWS + 5, seed=1, key=(2, 8)).blocks()))
    assert not torch.equal(other, torch.cat(blocks))
    quasi = SourceSample(source, 2 * BLOCK_ROWS, seed=1, key=(0,), quasi=True)
    assert torch.equal(torch.cat(list(quasi.blocks(range(1, 2)))), list(quasi.blocks())[1])


def test_sampling_draws_do_not_depend_on_the_batch():
    source = UniformSource(4, -1.0, 1.0)
    assert torch.equal(source.draw(SampleNoise(9, 10)), source.draw(SampleNoise(9, 3000))[:10])


@pytest.mark.parametrize("source", [GaussianSource(5, 0.25, 2.0), UniformSource(5, -1.0, 1.0)])
def test_source_meta_round_trip(source):
    assert source_from_meta(source.to_meta(), 5) == source


@pytest.mark.parametrize("make", [lambda: GaussianSource(0), lambda: GaussianSource(2, std=0.0),
                                  lambda: GaussianSource(2, mean=float("nan")), lambda: UniformSource(2, 1.0, 1.0),
                                  lambda: UniformSource(2.5), lambda: source_from_meta({"kind": "cauchy"}, 2),
                                  lambda: source_from_meta({"kind": "uniform", "low": 0}, 2)])
def test_bad_sources_are_input_errors(make):
    with pytest.raises(InputError):
        make()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), n=st.sampled_from([1, 2, 63, 64, 128, 192, 1000, 1024]), ties=st.booleans(),
       seed=st.integers(0, 2**16))
def test_best_and_second_are_topk_two(rows, n, ties, seed):
    """The blocked winner and two largest scores equal torch.topk(2) (the winner: the lowest index among ties, as
    argmax), on padded (-inf) rows and with exact ties, and leaves the scores unchanged."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, n, generator=g)
    if ties and n > 1:
        scores[:, n // 2] = scores.amax(dim=1)
    scores[:, n - n % 7:] = -math.inf if n > 7 else scores[:, n - n % 7:]
    before = scores.clone()
    index, values = kernel.best_and_second(scores)
    assert torch.equal(scores, before)
    assert torch.equal(index, scores.argmax(dim=1))
    if n == 1:
        assert torch.equal(values[:, 0], scores[:, 0]) and bool(torch.isneginf(values[:, 1]).all())
        return
    assert torch.equal(values, scores.topk(2, dim=1).values)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), n=st.sampled_from([1, 2, 3, 63, 64, 128, 192, 1000, 1024]),
       ties=st.sampled_from([0, 2, 3]), seed=st.integers(0, 2**16))
def test_best_runner_and_third_are_the_top_three(rows, n, ties, seed):
    """The blocked winner, runner-up and three largest scores: the winner is argmax's (lowest index on
    ties), the runner-up another column holding the second largest score, the third the largest score of
    every other column, on padded (-inf) rows and with exact ties of 2 or 3 columns."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, n, generator=g)
    for k in range(min(ties, n)):
        scores[:, (k * n) // max(ties, 1)] = scores.amax(dim=1)
    scores[:, n - n % 7:] = -math.inf if n > 7 else scores[:, n - n % 7:]
    before = scores.clone()
    best, runner, values = kernel.best_runner_and_third(scores)
    assert torch.equal(scores, before)
    assert torch.equal(best, scores.argmax(dim=1))
    if n == 1:
        assert torch.equal(values[:, 0], scores[:, 0]) and bool(torch.isneginf(values[:, 1:]).all())
        return
    assert bool((runner != best).all())
    top = scores.topk(min(3, n), dim=1).values
    assert torch.equal(values[:, :2], top[:, :2])
    assert torch.equal(scores.gather(1, torch.stack([best, runner], dim=1)), values[:, :2])
    rest = scores.scatter(1, best[:, None], -math.inf).scatter_(1, runner[:, None], -math.inf)
    assert torch.equal(values[:, 2], rest.amax(dim=1))


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 40), n=st.sampled_from([5, 64, 128, 320, 1024]), k=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_blocked_topk_holds_the_k_largest_scores(rows, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, n, generator=g)
    scores[:, n - n % 7:] = -math.inf if n > 7 else scores[:, n - n % 7:]
    k = min(k, n)
    index = kernel.topk_rows(scores, k)
    assert torch.equal(scores.gather(1, index), scores.topk(k, dim=1).values)
