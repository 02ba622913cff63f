"""Blocks of solver work shared out among CPU threads (``threads.thread_imap``): in order, the same result
as one thread block for block, torch's thread count restored, and a newton-qmc pass's parts (drawing a
stage, the kept winners, their moves, the facet Jacobian) unchanged by the sharing.

The suite runs on one torch thread (conftest); these tests ask for two."""
import threading

import pytest
import torch

from dpmot_bench.ot import GaussianSource, UniformSource
from dpmot_bench.ot import sampling
from dpmot_bench.ot.curvature import facet_jacobian
from dpmot_bench.ot.problem import HeldSample, Problem, Winners, moment_matched_h
from dpmot_bench.threads import cpu_threads, thread_imap, thread_map


@pytest.fixture
def two_threads():
    with cpu_threads(2):
        yield


def test_thread_map_keeps_the_order_and_restores_the_thread_count(two_threads):
    def work(i):
        return i * i, torch.get_num_threads()

    out = thread_map(work, range(7))
    assert [value for value, _ in out] == [i * i for i in range(7)]
    assert all(count == 1 for _, count in out)  # every block on one intra-op thread
    assert torch.get_num_threads() == 2


def test_thread_imap_holds_a_few_items_at_a_time_and_restores_on_close(two_threads):
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i

    stream = thread_imap(lambda i: i + 1, items())
    assert [next(stream) for _ in range(3)] == [1, 2, 3]
    assert len(pulled) <= 4  # two workers: two items per group
    assert torch.get_num_threads() == 1
    stream.close()
    assert torch.get_num_threads() == 2


def test_one_thread_maps_in_the_callers_thread():
    caller = threading.get_ident()
    assert thread_map(lambda _: threading.get_ident(), range(3), threads=1) == [caller] * 3


def _problem(source, n=200, seed=0):
    targets = torch.randn(n, source.dim, generator=torch.Generator().manual_seed(seed))
    if isinstance(source, UniformSource):
        targets = targets.abs() % 1
    return Problem(source, targets, torch.full((n,), 1 / n, dtype=torch.float64), seed)


@pytest.mark.parametrize("quasi", [True, False])
def test_drawn_blocks_are_the_blocks_whatever_the_threads(two_threads, quasi):
    sample = _problem(GaussianSource(5)).sample(5 * sampling.BLOCK_ROWS + 123, (2, 1), quasi)
    expected = list(sample.blocks(range(1, sample.n_blocks)))
    drawn = sample.drawn(range(1, sample.n_blocks))
    assert len(drawn) == len(expected) and all(torch.equal(a, b) for a, b in zip(drawn, expected))


@pytest.mark.parametrize("source, step", [(GaussianSource(8), 0.02), (UniformSource(8), 0.003)],
                         ids=["gaussian", "uniform"])
def test_winners_moves_and_jacobian_are_the_same_on_two_threads(source, step):
    problem = _problem(source)
    sample = problem.sample(12 * sampling.BLOCK_ROWS + 77, (2, 1), True)
    h0 = moment_matched_h(problem)
    noise =  torch.randn(h0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h1 = h0 + step * noise  # scores more than a block of points again (shared out) ...
    h2 = h1 + step / 4 * noise.roll(1)  # ... then settles some by their runner-up
    results, rescored, settled = [], [], []
    for threads in (1, 2):
        with cpu_threads(threads):
            held = HeldSample(sample, sample.drawn(range(sample.n_blocks)))
            winners = Winners.build(problem, held, h0)
            built = (winners.best.clone(), winners.slack2.clone(), winners.counts.clone())
            moved = winners.move_to(held, h1)
            rescored.append(winners.rescored)
            moved = moved and winners.move_to(held, h2)
            settled.append(winners.settled)
            jacobian = facet_jacobian(problem, held.head(4 * sampling.BLOCK_ROWS), h1, 0.2, dense=True)
        results.append((built, moved, winners.best, winners.runner, winners.slack2, winners.slack3,
                        winners.counts, jacobian))
    one, two = results
    assert one[1] and two[1]  # the move kept the winners, and scored again more than a block of points
    assert rescored[0] == rescored[1] > sampling.BLOCK_ROWS and settled[0] == settled[1] > 0
    assert all(torch.equal(a, b) for a, b in zip(one[0], two[0]))
    assert all(torch.equal(a, b) for a, b in zip(one[2:], two[2:]))


@pytest.mark.parametrize("m", [1, 63, 1025, 3 * 4096 + 5])
def test_assignments_on_two_threads_are_the_one_thread_ones(m):
    from dpmot_bench.ot import kernel

    problem = _problem(GaussianSource(16), n=300)
    x = torch.randn(m, 16, generator=torch.Generator().manual_seed(m))
    h = moment_matched_h(problem)
    outs = []
    for threads in (1, 2):
        with cpu_threads(threads):
            outs.append((kernel.assign(x, problem.targets, h.float()), problem.assign(x, h),
                         kernel.cell_counts(x, problem.targets, h.float())))
    assert all(torch.equal(a, b) for a, b in zip(*outs))
    assert torch.equal(outs[0][2], torch.bincount(outs[0][0], minlength=300))


@pytest.mark.parametrize("tau, k", [(0.0, None), (0.3, None), (0.3, 4)], ids=["hard", "entropic", "entropic-top4"])
def test_sample_masses_on_two_threads_are_the_one_thread_ones(tau, k):
    from dpmot_bench.ot.problem import sample_masses

    problem = _problem(GaussianSource(6), n=150)
    sample = problem.sample(4 * sampling.BLOCK_ROWS + 300, (3,), False)
    h = moment_matched_h(problem)
    outs = []
    for threads in (1, 2):
        with cpu_threads(threads):
            outs.append(sample_masses(problem, sample, h, tau, k, with_potential=True))
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
    assert float(outs[0][0].sum()) == pytest.approx(1.0, abs=1e-6)  # float32 softmax rows
