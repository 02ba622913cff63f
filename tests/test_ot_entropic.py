"""The entropic warm-up's quantities over each point's k best targets (``Scoring.soft_top``): masses,
potential and Hessian, on both kernels (fused and torch), against direct float64 computations, and
against each other as gradient and derivative (what the warm-up's Armijo search and Newton steps rely on)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dpmot_bench.ot import GaussianSource, kernel
from dpmot_bench.ot.curvature import entropic_hessian
from dpmot_bench.ot.problem import HeldSample, Problem, sample_masses, soft_unit
from .test_ot_native import PATHS, using


def _problem(seed, n, d):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randn(n, d, generator=g) * 1.5 + 0.3
    weights = torch.full((n,), 1 / n, dtype=torch.float64)
    problem = Problem(GaussianSource(d), targets, weights, seed=seed)
    sample = problem.sample(3000, (5,), quasi=True)
    return problem, HeldSample(sample, list(sample.blocks())), 0.3 * torch.randn(n, generator=g, dtype=torch.float64)


def _direct(problem, held, h, tau, k):
    """Masses and potential from the float64 scores of every point, the softmax over each row's k best."""
    x = torch.cat(list(held.blocks())).double()
    scores = x @ problem.targets.double().T + h
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    p = torch.softmax(top.values / tau, dim=1)
    masses = torch.zeros(scores.shape[1], dtype=torch.float64).index_add_(0, top.indices.flatten(), p.flatten())
    return masses / x.shape[0], float((tau * torch.logsumexp(top.values / tau, dim=1)).mean())


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.sampled_from([5, 16, 40]), d=st.sampled_from([2, 7, 16]),
       k=st.integers(2, 8), tau=st.floats(0.05, 2.0))
def test_masses_and_potential_are_the_top_k_softmax(path, seed, n, d, k, tau):
    """Within float32 rounding of the scores (relative 1e-5 of their size, so 1e-4 / tau on the softmax)."""
    problem, held, h = _problem(seed, n, d)
    with using(path):
        masses, potential = sample_masses(problem, held, h, tau, k, with_potential=True)
    expected, expected_potential = _direct(problem, held, h, tau, k)
    # each point's k weights are rounded to multiples of soft_unit(n) (fixed point: W processes sum alike)
    assert masses.sum().item() == pytest.approx(1.0, abs=1e-12 + k * soft_unit(held.n) / 2)
    assert torch.allclose(masses, expected, atol=1e-4 / tau)
    assert potential == pytest.approx(expected_potential, abs=1e-4)


def test_with_every_target_kept_the_masses_are_the_full_softmax():
    """k >= N: the masses are ``kernel.soft_masses`` (the full softmax, an independent implementation)."""
    problem, held, h = _problem(3, 6, 4)
    x = torch.cat(list(held.blocks()))
    full = kernel.soft_masses(x, problem.targets, h.float(), 0.5) / x.shape[0]
    assert torch.allclose(sample_masses(problem, held, h, 0.5, 8), full, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_the_masses_are_the_gradient_of_the_potential_and_the_hessian_their_derivative(path):
    """Central differences in float64 h on a fixed sample (the scores are float32: steps of 1e-3 keep the
    rounding below 1e-4 relative). With k = N, so that no target enters or leaves a row's top k."""
    problem, held, h = _problem(11, 8, 3)
    tau, k, step = 0.4, 8, 1e-3
    with using(path):
        masses = sample_masses(problem, held, h, tau, k)
        hessian = entropic_hessian(problem, torch.cat(list(held.blocks())), h, tau, k, dense=True)
        for j in range(8):
            e = torch.zeros(8, dtype=torch.float64)
            e[j] = step
            (up, up_potential), (down, down_potential) = (sample_masses(problem, held, h + s * e, tau, k, with_potential=True)
                                                          for s in (1, -1))
            assert (up_potential - down_potential) / (2 * step) == pytest.approx(float(masses[j]), abs=1e-4)
            assert torch.allclose((up - down) / (2 * step), hessian[:, j], atol=2e-3)


@pytest.mark.parametrize("path", PATHS)
def test_the_hessian_from_the_masses_pass_weights_is_the_hessian(path):
    """The warm-up reuses the softmax weights its masses pass kept (``sample_masses(..., soft=[])``) for the
    Hessian at the same h and tau: exactly the Hessian that scores the points again."""
    problem, held, h = _problem(5, 40, 16)
    with using(path):
        kept = []
        sample_masses(problem, held, h, 0.3, 8, soft=kept)
        for dense in (True, False):
            again = entropic_hessian(problem, held.head(held.n), h, 0.3, 8, dense)
            reused = entropic_hessian(problem, held.head(held.n), h, 0.3, 8, dense, soft=kept)
            assert torch.equal(again.to_dense(), reused.to_dense())


def test_the_fixed_point_unit_keeps_every_sum_within_int64():
    """``soft_unit(n)``: 2^-40 of a point's weight, coarser once n x 2^40 would pass 2^61 (a cell's sum of
    n points' weights in units then stays below 2^61 < 2^63)."""
    assert soft_unit(16_000) == 2.0**-40 and soft_unit(2**21 - 1) == 2.0**-40
    for n in (2**21, 2**30, 10**12):
        assert n / soft_unit(n) < 2**61 and soft_unit(n) <= 2.0**-20
