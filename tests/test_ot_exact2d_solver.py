"""The exact 2-D solver (``exact-2d``) and its vectorised power diagram (``power2d.py``) against
independent oracles: the cell-by-cell exact masses of ``exact2d.py`` (Qhull + polygon clipping + Owen's
T), numerical quadrature, finite differences, pysdot when installed, and the problem's symmetries.

Tolerances: everything here is exact up to float64 round-off; a mass is a sum of a few dozen terms of size
<= 1, and a facet's position is off by ~eps |h| / |y_i - y_j|, so 1e-9 in l1 over <= 200 cells is a
margin of 100x or more over the observed errors (1e-14 to 1e-12), not a statistical allowance."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from scipy import integrate

from dpmot_bench.errors import InputError
from dpmot_bench.ot import GaussianSource, SOLVERS, SemiDiscreteOT, UniformSource, solve_semidiscrete
from dpmot_bench.ot.exact2d import exact_masses
from dpmot_bench.ot.exact_newton import Exact2DLog, Exact2DOptions
from dpmot_bench.ot.newton import NewtonLog
from dpmot_bench.ot.power2d import gaussian_line_integral, gaussian_triangle_mass, power_diagram, standardise
from dpmot_bench.ot.solvers import chosen_solver, semidiscrete_problem, solver_options

SOURCES = [UniformSource(2, -1.0, 2.0), GaussianSource(2, -0.5, 1.5)]
IDS = ["uniform", "gaussian"]
EXACT = 1e-9


def _targets(source, n, rng):
    if isinstance(source, UniformSource):
        return rng.uniform(source.low, source.high, (n, 2))
    return source.mean + source.std * rng.normal(size=(n, 2))


def _fit(source, y, nu=None, **options):
    y = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    nu = None if nu is None else torch.as_tensor(np.asarray(nu), dtype=torch.float64)
    result = solve_semidiscrete(source, y, nu, "exact-2d", **options)
    weights = result.problem.weights.numpy()
    return result, y.double().numpy(), weights


# ------------------------------------------------------------------------------------------ the diagram
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 40), spread=st.floats(0.0, 1.0),
       layout=st.sampled_from(["random", "collinear", "grid", "cluster"]))
@settings(max_examples=100, deadline=None)
def test_vectorised_masses_equal_the_cell_by_cell_oracle(source, seed, n, spread, layout):
    rng = np.random.default_rng(seed)
    y = _targets(source, n, rng)
    if layout == "collinear":  # exactly on one line (dyadic slope and offset)
        y[:, 1] = 0.5 * y[:, 0] + 0.25
    elif layout == "grid":
        side = int(math.ceil(math.sqrt(n)))
        grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
        y = (grid / max(side - 1, 1) - 0.5) * 2.0 + 0.5
    elif layout == "cluster":
        y = y[:1] + 1e-3 * rng.normal(size=(n, 2))
    assume(len(np.unique(y, axis=0)) == n)
    h = -(y ** 2).sum(1) / 2 + spread * rng.normal(size=n)
    ours = power_diagram(source, y, h, with_jacobian=False).masses
    oracle = exact_masses(source, y, h)
    assert np.abs(ours - oracle).sum() <= 1e-11
    assert ours.sum() == pytest.approx(1.0, abs=1e-12) and ours.min() >= -1e-15


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
@given(seed=st.integers(0, 10**6), n=st.integers(3, 12))
@settings(max_examples=15, deadline=None)
def test_jacobian_matches_central_differences_of_the_oracle(source, seed, n):
    """dG_i/dh_j = -w_ij <= 0 (j != i), dG_i/dh_i = sum_j w_ij: raising h_j shrinks cell i, raising h_i
    grows it. Central differences with step 1e-6 are exact to O(1e-12) + round-off / 1e-6 ~ 1e-10,
    except where a step crosses a change of the diagram's combinatorics (rare; a 1e-6 step away)."""
    rng = np.random.default_rng(seed)
    y = _targets(source, n, rng)
    h = -(y ** 2).sum(1) / 2 + 0.1 * rng.normal(size=n)
    diagram = power_diagram(source, y, h)
    jacobian = diagram.jacobian().toarray()
    eps = 1e-6
    differences = np.stack([(exact_masses(source, y, h + eps * e) - exact_masses(source, y, h - eps * e)) / (2 * eps)
                            for e in np.eye(n)], 1)
    assert np.allclose(jacobian, jacobian.T) and np.allclose(jacobian.sum(1), 0, atol=1e-12)
    off = jacobian - np.diag(np.diag(jacobian))
    assert off.max() <= 0 and np.diag(jacobian).min() >= 0
    assert np.abs(jacobian - differences).max() <= 1e-6 * max(1.0, np.abs(differences).max())


@given(v=st.tuples(st.floats(-4, 4), st.floats(-4, 4)), angle=st.floats(0, 2 * np.pi),
       lo=st.floats(-6, 6), length=st.floats(0, 8), infinite=st.sampled_from(["none", "lo", "hi", "both"]))
@settings(max_examples=60, deadline=None)
def test_gaussian_facet_integral_matches_quadrature(v, angle, lo, length, infinite):
    """int phi_2(v + s d) ds along a line = exp(-c^2/2) / sqrt(2 pi) (Phi(hi + b) - Phi(lo + b))."""
    v, d = np.array([v]), np.array([[math.cos(angle), math.sin(angle)]])
    hi = lo + length
    lo = -np.inf if infinite in ("lo", "both") else lo
    hi = np.inf if infinite in ("hi", "both") else hi
    ours = gaussian_line_integral(v, d, np.array([lo]), np.array([hi]))[0]
    density = lambda s: math.exp(-((v[0, 0] + s * d[0, 0]) ** 2 + (v[0, 1] + s * d[0, 1]) ** 2) / 2) / (2 * math.pi)
    reference, error = integrate.quad(density, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-13 + 10 * error)


@given(a=st.tuples(st.floats(-3, 3), st.floats(-3, 3)), b=st.tuples(st.floats(-3, 3), st.floats(-3, 3)))
@settings(max_examples=30, deadline=None)
def test_gaussian_triangle_mass_matches_quadrature(a, b):
    a, b = np.array(a), np.array(b)
    cross = a[0] * b[1] - a[1] * b[0]
    ours = gaussian_triangle_mass(a[None], b[None])[0]
    # the triangle (0, a, b) as {u a + v b : u, v >= 0, u + v <= 1}, Jacobian |cross|
    phi = lambda v, u: math.exp(-((u * a + v * b) ** 2).sum() / 2) / (2 * math.pi)
    reference, _ = integrate.dblquad(phi, 0, 1, 0, lambda u: 1 - u, epsabs=1e-13, epsrel=1e-11)
    assert ours == pytest.approx(np.sign(cross) * abs(cross) * reference, rel=1e-8, abs=1e-12)


# ------------------------------------------------------------------------------------------ the solver
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["equal", "weighted"])
def test_fit_matches_the_oracle_to_round_off(source, weighted):
    rng = np.random.default_rng(3)
    n = 200
    y = _targets(source, n, rng)
    nu = rng.uniform(0.2, 1.0, n) if weighted else None
    result, y, nu = _fit(source, y, None if nu is None else nu / nu.sum())
    assert result.converged and result.samples_used == 0
    assert np.abs(exact_masses(source, y, result.h.numpy()) - nu).sum() <= EXACT
    history = result.history
    assert list(history.columns) == [f.name for f in Exact2DLog.__dataclass_fields__.values()] + ["seconds"]
    assert history.l1_mass_error.iloc[-1] <= max(Exact2DOptions().tol, history.roundoff.iloc[-1] + 1e-15)


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_convergence_is_quadratic_at_the_end(source):
    """Newton's method: once the error is small the full step is taken and e_{k+1} <= C e_k^2; we ask
    e_{k+1} <= e_k^1.5 for every step from e_k <= 1e-3 on, until round-off (e_{k+1} > 1e-11)."""
    result, _, _ = _fit(source, _targets(source, 150, np.random.default_rng(5)))
    errors = list(result.history.l1_mass_error)
    steps = [(a, b) for a, b in zip(errors, errors[1:]) if a <= 1e-3 and b > 1e-11]
    assert result.converged and len(errors) >= 3 and errors[-1] < 1e-11
    assert all(b <= a ** 1.5 for a, b in steps)
    assert all(step == 1.0 for step, e in zip(result.history.step, errors) if e <= 1e-4)


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_h_is_equivariant_under_permutations_and_the_sources_symmetries(source):
    """Permuted targets give permuted h. An isometry x -> c + Q (x - c) of the source (c its centre; for
    the square the reflections and quarter turns, for the Gaussian any rotation) maps targets y_i to
    y'_i = c + Q (y_i - c) and h to h'_i = h_i + <c, (I - Q) y_i> (up to a constant): the scores of the
    mapped point are the old ones plus a term common to every i."""
    rng = np.random.default_rng(7)
    n = 60
    y = _targets(source, n, rng).astype(np.float32).astype(np.float64)  # exactly the solver's float32 targets
    nu = rng.uniform(0.5, 1.0, n)
    nu /= nu.sum()
    base, _, _ = _fit(source, y, nu)
    h = base.h.numpy()
    perm = rng.permutation(n)
    permuted, _, _ = _fit(source, y[perm], nu[perm])
    assert np.allclose(permuted.h.numpy(), h[perm], atol=1e-8)
    if isinstance(source, UniformSource):
        c = (source.low + source.high) / 2
        maps = [np.array([[-1.0, 0], [0, 1]]), np.array([[0.0, 1], [1, 0]]), np.array([[0.0, -1], [1, 0]])]
    else:
        c, t = source.mean, 0.7
        maps = [np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]), np.array([[1.0, 0], [0, -1]])]
    centre = np.full(2, c)
    for q in maps:
        mapped = centre + (y - centre) @ q.T
        mapped32 = mapped.astype(np.float32).astype(np.float64)
        if not np.array_equal(mapped, mapped32):  # a rotation: compare masses, targets rounded to float32
            fit, ym, _ = _fit(source, mapped, nu)
            assert np.abs(exact_masses(source, ym, fit.h.numpy()) - nu).sum() <= EXACT
            expected = h + (centre @ (np.eye(2) - q)) @ y.T
            assert np.allclose(fit.h.numpy(), expected - expected.mean(), atol=1e-4)
            continue
        fit, _, _ = _fit(source, mapped, nu)
        expected = h + (centre @ (np.eye(2) - q)) @ y.T
        assert np.allclose(fit.h.numpy(), expected - expected.mean(), atol=1e-8)


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 30),
       layout=st.sampled_from(["random", "collinear", "nearly-collinear", "cluster", "outlier", "grid"]),
       weighted=st.booleans())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_random_and_near_degenerate_target_sets_are_solved_exactly(source, seed, n, layout, weighted):
    rng = np.random.default_rng(seed)
    y = _targets(source, n, rng)
    if layout == "collinear":
        y[:, 1] = 0.5 * y[:, 0] + 0.25
    elif layout == "nearly-collinear":
        y[:, 1] = 0.5 * y[:, 0] + 0.25 + 1e-5 * rng.normal(size=n)
    elif layout == "cluster":
        y = y[:1] + 1e-2 * rng.normal(size=(n, 2))
    elif layout == "outlier":
        y[0] = [8.0, -7.0]
    elif layout == "grid":
        side = int(math.ceil(math.sqrt(n)))
        y = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n] / side
    y = y.astype(np.float32)
    assume(len(np.unique(y, axis=0)) == n)
    nu = rng.uniform(0.2, 1.0, n) if weighted else np.ones(n)
    result, yd, nu = _fit(source, y, nu / nu.sum())
    assert result.converged
    assert np.abs(exact_masses(source, yd, result.h.numpy()) - nu).sum() <= EXACT


def test_duplicate_targets_are_refused_with_the_clear_error():
    y = torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.1, 0.2]])
    with pytest.raises(InputError, match="duplicate rows"):
        solve_semidiscrete(UniformSource(2), y, None, "exact-2d")


def test_exact_2d_refuses_other_dimensions_and_auto_falls_back():
    y3 = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="exact-2d needs a 2-D"):
        solve_semidiscrete(GaussianSource(3), y3, None, "exact-2d")
    assert chosen_solver("auto", GaussianSource(3)) == "newton-qmc"
    assert chosen_solver("auto", UniformSource(2)) == chosen_solver("auto", GaussianSource(2)) == "exact-2d"
    assert chosen_solver("adam-mc", UniformSource(2)) == "adam-mc"
    fallback = solve_semidiscrete(GaussianSource(3), y3, None, "auto", max_iter=3, n_samples=2**10)
    assert fallback.method == "newton-qmc" and list(fallback.history.columns)[:-1] == list(NewtonLog.__dataclass_fields__)
    exact = solve_semidiscrete(GaussianSource(2), y3[:, :2], None, "auto", tol=1e-10)
    assert exact.method == "exact-2d" and exact.converged
    assert list(exact.history.columns)[:-1] == list(Exact2DLog.__dataclass_fields__)
    with pytest.raises(InputError, match="no option bogus"):
        solve_semidiscrete(GaussianSource(2), y3[:, :2], None, "auto", bogus=1)
    # a sampling solver's option, given to auto where it picks the exact one: refused, naming the choice
    with pytest.raises(InputError, match="solver auto, which picks exact-2d for a 2-D gaussian source, has no "
                                         "option topk"):
        solve_semidiscrete(GaussianSource(2), y3[:, :2], None, "auto", topk=4)
    assert solver_options("auto", {"topk": 4}) is None  # no source yet: valid for one of the choices
    with pytest.raises(InputError, match="option topk must be"):
        solver_options("auto", {"topk": -4})
    ot = SemiDiscreteOT(UniformSource(2)).fit(y3[:, :2])
    assert ot.solver == "auto" and ot.solver_ == "exact-2d" and ot.converged_


def test_a_stopped_run_resumes_to_the_same_h_and_the_estimator_agrees(tmp_path):
    source = UniformSource(2)
    y = torch.rand(300, 2, generator=torch.Generator().manual_seed(1))
    problem = semidiscrete_problem(source, y)
    solve, options = SOLVERS["exact-2d"].solve, Exact2DOptions()
    full = solve(problem, options)
    stopped = solve(problem, options, None, lambda state, log: state["iteration"] == 2)
    assert stopped["iteration"] == 2 and not stopped["done"]
    resumed = solve(problem, options, stopped)
    assert torch.equal(resumed["solution"], full["solution"]) and resumed["iteration"] == full["iteration"]
    path = tmp_path / "ck.npz"
    with_checkpoint = solve_semidiscrete(source, y, None, "exact-2d", checkpoint=path, checkpoint_every=1)
    again = solve_semidiscrete(source, y, None, "exact-2d", checkpoint=path, checkpoint_every=1)
    assert torch.equal(with_checkpoint.h, full["solution"]) and torch.equal(again.h, full["solution"])
    fitted = SemiDiscreteOT(source, solver="exact-2d").fit(y)
    assert torch.equal(fitted.h_, full["solution"]) and fitted.converged_


def test_standardised_coordinates_keep_the_cells():
    """The masses of a source with centre c and scale s equal those of the standard one with targets s y
    and h + c <1, y> (what power2d computes in)."""
    rng = np.random.default_rng(2)
    y, h = rng.normal(size=(20, 2)), 0.3 * rng.normal(size=20)
    for source, standard in [(UniformSource(2, -1.0, 3.0), UniformSource(2, -1.0, 1.0)),
                             (GaussianSource(2, 0.7, 2.5), GaussianSource(2))]:
        ys, hs = standardise(source, y, h)
        assert np.allclose(exact_masses(source, y, h), exact_masses(standard, ys, hs), atol=1e-12)


# ------------------------------------------------------------------------------------------ pysdot
def test_pysdot_agrees_when_installed():
    """pysdot (C++ power diagrams, the same Newton method) is a second exact oracle on the unit square:
    its cell masses at any h, and its fitted weights, match ours. Its cells are argmin |x - y_i|^2 - w_i,
    so h_i = (w_i - |y_i|^2) / 2."""
    pysdot = pytest.importorskip("pysdot")
    from pysdot.domain_types import ConvexPolyhedraAssembly

    rng = np.random.default_rng(4)
    n = 300
    y = rng.uniform(0, 1, (n, 2)).astype(np.float32).astype(np.float64)
    domain = ConvexPolyhedraAssembly()
    domain.add_box([0.0, 0.0], [1.0, 1.0], 1.0, 2**64 - 1)  # cut_id -1 overflows np.uint64 under numpy 2
    w = 1e-3 * rng.normal(size=n)
    theirs = np.asarray(pysdot.PowerDiagram(y, w, domain).integrals())
    ours = power_diagram(UniformSource(2), y, (w - (y ** 2).sum(1)) / 2, with_jacobian=False).masses
    assert np.abs(theirs - ours).sum() <= 1e-12
    transport = pysdot.OptimalTransport(y, np.zeros(n), domain, masses=np.full(n, 1 / n), obj_max_dm=1e-13,
                                        linear_solver="Scipy")
    transport.adjust_weights()
    h_theirs = (np.asarray(transport.get_weights()) - (y ** 2).sum(1)) / 2
    result, _, _ = _fit(UniformSource(2), y)
    assert np.allclose(result.h.numpy(), h_theirs - h_theirs.mean(), atol=1e-9)
