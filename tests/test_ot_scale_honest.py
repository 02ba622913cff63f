"""The OT engine at paper scale, bounded and honest: newton-qmc streams its points (the same h whatever the
block size), ``converged`` is the verdict of an independent accuracy check against the ``tol`` asked for,
``tol`` is an option of every solver and of ``dpmot fit-ot``, and the float32 scores are centred.

Tolerances come from the check's statistics (``ot/check.py``): the Monte-Carlo noise floor
``F(n) = sum_i sqrt(2 nu_i (1 - nu_i) / (pi n))`` and McDiarmid's bound on the fluctuation of a measured l1
error (one point moves it by at most 2 / n: ``P(|L - E L| >= eps) <= 2 exp(-n eps^2 / 2)``)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dpmot_bench.errors import InputError
from dpmot_bench.ot import GaussianSource, SemiDiscreteOT, UniformSource, sampling, solve_semidiscrete, solver_options
from dpmot_bench.ot import check as checks
from dpmot_bench.ot import curvature, kernel
from dpmot_bench.ot.problem import Head, HeldSample, Problem, Winners, hard_masses, sample_masses
from dpmot_bench.ot.solvers import SOLVER_NAMES

EPS32 = float(torch.finfo(torch.float32).eps)


def _mcdiarmid(n: int, delta: float = 1e-3) -> float:
    """The deviation a measured l1 error on n Monte-Carlo points exceeds with probability at most delta."""
    return math.sqrt(2 * math.log(2 / delta) / n)


def _problem(n, d, seed=0, mean=0.0, source=None):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randn(n, d, generator=g) * 0.5 + mean
    return source or GaussianSource(d), targets


# ------------------------------------------------------------------------------------------ streaming
@settings(max_examples=4)
@given(block=st.integers(100, 5000), sparse=st.booleans())
def test_newton_qmc_gives_the_same_h_whatever_the_block_size(block, sparse, monkeypatch_module):
    """Quasi-Monte-Carlo rows do not depend on the block size, so only the order of float sums may: the
    h's agree to float32 round-off accumulated over the iterations (``n_iter sqrt(N) eps32 (1 + |h|)``)."""
    source, y = _problem(40, 8, mean=2.0, source=UniformSource(8, -1.0, 1.0))
    options = {"n_samples": 2**13, "dense_limit": 4 if sparse else 4096, "check_samples": 2**12}
    reference = solve_semidiscrete(source, y, method="newton-qmc", **options)
    monkeypatch_module.setattr(sampling, "BLOCK_ROWS", block)
    other = solve_semidiscrete(source, y, method="newton-qmc", **options)
    monkeypatch_module.undo()
    bound = reference.n_iter * math.sqrt(40) * EPS32 * (1 + float(reference.h.abs().max()))
    assert other.n_iter == reference.n_iter
    assert float((other.h - reference.h).abs().max()) <= bound


def test_held_and_streamed_samples_give_the_same_h():
    """``cache_bytes=0`` redraws every sample block by block at each pass: the same points, the same h."""
    source, y = _problem(30, 6, seed=1)
    held = solve_semidiscrete(source, y, method="newton-qmc", n_samples=2**12, check_samples=2**12)
    streamed = solve_semidiscrete(source, y, method="newton-qmc", n_samples=2**12, check_samples=2**12, cache_bytes=0)
    assert torch.equal(held.h, streamed.h)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 150), d=st.sampled_from([2, 5, 16, 64]), scale=st.sampled_from([1e-4, 1e-2, 0.3, 3.0]),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_kept_winners_give_the_counts_of_a_full_pass(n, d, scale, ties, seed):
    """``Winners``: hard counts at h from the winners kept at a reference equal a full pass at h, for moves
    of every size (small ones reuse most points, large ones rebuild), with duplicated targets (exact ties)
    and a resumed run's rebuild at the reference; the winners move to every h they count."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=g)
    if ties and n > 1:
        y[n // 2] = y[0]
    problem = Problem(GaussianSource(d), y, torch.full((n,), 1 / n, dtype=torch.float64))
    sample = problem.sample(3000, (9,), quasi=True)
    held = HeldSample(sample, list(sample.blocks()))
    h = torch.randn(n, generator=g, dtype=torch.float64)
    masses, winners = hard_masses(problem, held, h, None, None)
    assert torch.equal(masses, sample_masses(problem, held, h))
    for _ in range(3):
        h_next = h + scale * torch.randn(n, generator=g, dtype=torch.float64)
        reference = winners.reference
        masses, winners = hard_masses(problem, held, h_next, winners, reference)
        assert torch.equal(masses, sample_masses(problem, held, h_next))
        assert torch.equal(winners.reference, h_next)
        resumed, _ = hard_masses(problem, held, h_next, None, reference)
        assert torch.equal(resumed, masses)


def test_a_larger_stage_keeps_the_full_blocks_of_the_smaller_one(monkeypatch):
    """Nested stages: the winners of a smaller sample of the same stream serve its full blocks in a larger
    one (the rest is scored), and the counts equal a full pass; another stream's winners are not used."""
    monkeypatch.setattr(sampling, "BLOCK_ROWS", 1000)
    scored = []
    score = Winners._score.__func__
    monkeypatch.setattr(Winners, "_score", classmethod(lambda cls, problem, x, *args, **kwargs: scored.append(len(x))
                                                       or score(cls, problem, x, *args, **kwargs)))
    g = torch.Generator().manual_seed(4)
    problem = Problem(GaussianSource(6), torch.randn(50, 6, generator=g), torch.full((50,), 1 / 50, dtype=torch.float64))
    h = 0.1 * torch.randn(50, generator=g, dtype=torch.float64)
    small, large = (HeldSample(s, list(s.blocks())) for s in (problem.sample(2500, (9,), True), problem.sample(6000, (9,), True)))
    _, winners = hard_masses(problem, small, h, None, None)
    h_next = h + 1e-3 * torch.randn(50, generator=g, dtype=torch.float64)
    scored.clear()
    masses, grown = hard_masses(problem, large, h_next, winners, winners.reference)
    assert torch.equal(masses, sample_masses(problem, large, h_next))
    assert scored[:4] == [1000] * 4 and 1000 not in scored[4:]  # blocks 2..5 (block 2 was not full), then the move's
    other = HeldSample(problem.sample(6000, (8,), True), None)
    other = HeldSample(other.sample, list(other.sample.blocks()))
    scored.clear()
    masses, fresh = hard_masses(problem, other, h_next, winners, winners.reference)
    assert torch.equal(masses, sample_masses(problem, other, h_next))
    assert scored[:6] == [1000] * 6 and 1000 not in scored[6:]


def test_a_runner_up_that_alone_may_overtake_is_settled_by_two_exact_scores():
    """After small moves, points near a facet scored again once keep their runner-up and are then settled
    by their winner's and runner-up's exact scores (no full scoring); the winners that change are found,
    and the counts equal a full pass."""
    problem = Problem(GaussianSource(16), torch.randn(300, 16, generator=torch.Generator().manual_seed(5)),
                      torch.full((300,), 1 / 300, dtype=torch.float64))
    sample = problem.sample(2**15, (9,), quasi=True)
    held = HeldSample(sample, list(sample.blocks()))
    g = torch.Generator().manual_seed(6)
    h = 0.1 * torch.randn(300, generator=g, dtype=torch.float64)
    masses, winners = hard_masses(problem, held, h, None, None)
    changed = 0
    for _ in range(4):
        h = h + 3e-3 * torch.randn(300, generator=g, dtype=torch.float64)
        before = winners.best.clone()
        masses, moved = hard_masses(problem, held, h, winners, winners.reference)
        assert moved is winners
        changed += int((winners.best != before).sum())
        assert torch.equal(masses, sample_masses(problem, held, h))
    assert changed > 0 and winners.settled > 0 and bool((winners.runner >= 0).any())


def test_kept_winners_score_again_only_points_near_a_facet():
    """A move of the weights by at most r changes no winner whose gap exceeds 2 r: after a small move
    most points are not scored again, and the counts still equal a full pass."""
    problem = Problem(GaussianSource(16), torch.randn(200, 16, generator=torch.Generator().manual_seed(1)),
                      torch.full((200,), 1 / 200, dtype=torch.float64))
    sample = problem.sample(2**14, (9,), quasi=True)
    held = HeldSample(sample, list(sample.blocks()))
    h = torch.zeros(200, dtype=torch.float64)
    _, winners = hard_masses(problem, held, h, None, None)
    h_next = h + 1e-3 * torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    masses, again = hard_masses(problem, held, h_next, winners, winners.reference)
    assert again is winners  # reused, not rebuilt
    unsure = int((winners.slack2 <= 2e-3 * 2).sum())
    assert unsure < 0.05 * sample.n
    assert torch.equal(masses, sample_masses(problem, held, h_next))


def test_streamed_curvature_equals_the_one_on_the_whole_tensor(monkeypatch):
    """The facet Jacobian, the entropic Hessian and the refill on a Head streamed in small blocks equal those
    on the same points as one tensor (float64 sums in another order)."""
    source, y = _problem(20, 3, seed=2)
    problem = Problem(source, y, torch.full((20,), 1 / 20, dtype=torch.float64))
    h = torch.zeros(20, dtype=torch.float64)
    monkeypatch.setattr(sampling, "BLOCK_ROWS", 300)
    sample = problem.sample(5000, (9,), quasi=True)
    head, whole = Head(sample, 5000), sample.head(5000)
    for dense in (True, False):
        a = curvature.facet_jacobian(problem, head, h, 0.2, dense)
        b = curvature.facet_jacobian(problem, whole, h, 0.2, dense)
        assert torch.allclose(a.to_dense(), b.to_dense(), rtol=1e-12, atol=1e-12)
    for dense in (True, False):
        a = curvature.entropic_hessian(problem, head, h, 0.1, 4, dense).to_dense()
        assert torch.allclose(a, curvature.entropic_hessian(problem, whole, h, 0.1, 4, dense).to_dense(), atol=1e-12)
    empty = torch.zeros(20, dtype=torch.bool)
    empty[[3, 7]] = True
    assert torch.equal(curvature.refill_empty(problem, head, h, empty), curvature.refill_empty(problem, whole, h, empty))


def test_the_refill_does_not_depend_on_how_many_empty_cells_it_takes_at_a_time(monkeypatch):
    """Every empty cell's level is taken against the same h, the points scored once: cutting the empty
    cells into groups of one (``REFILL_BYTES`` small, as at d = 3072 with many empty cells) gives the
    same h as taking them all at once, up to the float64 rounding of the levels' dot products (BLAS may
    sum a matrix-vector product in another order than a matrix product: MKL does on AVX-512 CPUs)."""
    source, y = _problem(40, 3, seed=5)
    problem = Problem(source, y, torch.full((40,), 1 / 40, dtype=torch.float64))
    h = torch.zeros(40, dtype=torch.float64)
    sample = problem.sample(3000, (9,), quasi=True)
    points = Head(sample, 3000)
    empty = kernel.cell_counts(sample.head(3000), y, h.float()) == 0
    assert int(empty.sum()) >= 3
    together = curvature.refill_empty(problem, points, h, empty)
    monkeypatch.setattr(curvature, "REFILL_BYTES", 8 * 3)  # one empty cell per group
    apart = curvature.refill_empty(problem, points, h, empty)
    assert (apart - together).abs().max() <= 1e-12  # levels of order 1: a handful of float64 roundings
    assert int((kernel.cell_counts(sample.head(3000), y, together.float()) == 0).sum()) < int(empty.sum())


# ------------------------------------------------------------------------------------------ the check
@settings(max_examples=30)
@given(n=st.integers(2, 5000), tol=st.floats(1e-3, 1.0), budget=st.integers(1, 2**30))
def test_the_check_is_the_smallest_sample_with_its_floor_at_half_tol(n, tol, budget):
    nu = torch.full((n,), 1 / n, dtype=torch.float64)
    size = checks.check_size(nu, tol, budget)
    assert 1 <= size <= budget
    if size < budget:
        assert checks.noise_floor(nu, size) <= tol / 2 * (1 + 1e-12)
        assert size == 1 or checks.noise_floor(nu, size - 1) > tol / 2 * (1 - 1e-12)


def test_a_fit_whose_own_error_is_small_but_the_checks_is_not_is_not_converged():
    """d = 64, N = 200, the schedule cut at 16 N points (max_samples forbids growing): the solver fits its own
    sample to l1 below tol, but that sample's integration error, ~sqrt(2 N / (pi n)) = 0.2, is what the
    check sees. Its floor is at most tol / 2, so the verdict is the l1 error's, not the noise's."""
    source, y = _problem(200, 64, seed=3)
    tol = 0.05
    result = solve_semidiscrete(source, y, method="newton-qmc", tol=tol, n_samples=16 * 200, max_samples=16 * 200)
    own = float(result.history["l1_mass_error"].iloc[-1])
    check, nu = result.check, result.problem.weights
    full = checks.check_size(nu, tol, checks.CHECK_SAMPLES_WITH_TOL)
    assert result.solver_stopped and not result.converged and not check.agrees
    assert checks.noise_floor(nu, full) <= tol / 2  # the full check could have confirmed tol
    # the measured error is beyond tol by more than the check's noise (E L <= t + F): t > tol
    assert own <= tol < tol + check.noise_floor < check.l1_mass_error


def test_without_tol_the_check_tests_the_default_and_keeps_the_solvers_own_verdict_apart():
    source, y = _problem(200, 64, seed=4)
    fit = SemiDiscreteOT(source, solver="newton-qmc", n_samples=16 * 200).fit(y)
    assert fit.solver_stopped_ and not fit.converged_ and fit.check_["tol"] == checks.DEFAULT_TOL
    assert fit.check_["n_samples"] <= checks.CHECK_SAMPLES_DEFAULT


def test_newton_qmc_grows_its_samples_until_the_check_confirms_tol():
    """d = 16, N = 10, tol = 0.01: the default schedule ends at 256 N points, whose integration error
    (~0.05 in 16 dimensions) is above tol; the fit grows its stages until the check agrees. A second,
    fresh measurement agrees with the check within both floors and fluctuations."""
    source, y = _problem(10, 16, seed=5)
    tol = 0.01
    fit = SemiDiscreteOT(source, solver="newton-qmc", tol=tol).fit(y)
    check = fit.check_
    assert fit.converged_ and check["agrees"] and check["l1_mass_error"] <= tol
    assert check["noise_floor"] <= tol / 2 and max(row["samples"] for row in fit.history_) > 256 * 10
    again = fit.mass_errors(2**20, seed=11)
    slack = check["noise_floor"] + again["l1_noise_floor"] + _mcdiarmid(check["n_samples"]) + _mcdiarmid(2**20)
    assert again["l1_mass_error"] <= check["l1_mass_error"] + slack


def test_exact_2d_checks_on_exact_masses():
    source, y = _problem(30, 2, seed=6)
    result = solve_semidiscrete(source, y, method="exact-2d")
    assert result.converged and result.check.exact and result.check.n_samples == 0
    assert result.check.l1_mass_error <= max(result.options.tol, result.check.noise_floor)


def test_adam_mc_is_converged_only_when_its_check_agrees():
    source, y = _problem(8, 2, seed=7)
    loose = solve_semidiscrete(source, y, method="adam-mc", max_iter=300, tol=0.2)
    assert loose.converged and loose.check.l1_mass_error <= 0.2
    strict = solve_semidiscrete(source, y, method="adam-mc", max_iter=5, tol=1e-3, check_samples=2**16)
    assert not strict.converged and strict.check.noise_floor > 1e-3 / 2  # the budget cannot confirm 1e-3


# ------------------------------------------------------------------------------------------ tol everywhere
@pytest.mark.parametrize("name", SOLVER_NAMES)
@pytest.mark.parametrize("dim", [2, 5])
def test_tol_is_an_option_of_every_solver(name, dim):
    source = GaussianSource(dim)
    if name == "exact-2d" and dim != 2:
        return
    typed = solver_options(name, {"tol": 0.05}, source)
    assert typed.tol == 0.05
    for bad in (0.0, -1.0, float("nan"), "x", True):
        with pytest.raises(InputError, match="tol"):
            solver_options(name, {"tol": bad}, source)


@settings(max_examples=12)
@given(tol=st.one_of(st.floats().filter(lambda t: not 0 < t <= 2), st.sampled_from(["abc", "", "0.0.1"])))
def test_fit_ot_refuses_a_bad_tol_in_one_line(tol, tmp_path_factory):
    import contextlib
    import io

    from dpmot_bench.cli import main

    out = tmp_path_factory.mktemp("tol") / "out.npz"
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            status = main(["fit-ot", "--dataset", "gmm-ring8", "--sigma", "0.1", f"--tol={tol}", "--out", str(out),
                           "--quiet"])
        except SystemExit as exit_:  # argparse's own refusals (not a number)
            status = exit_.code
    err = stderr.getvalue()
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--tol" in err and not out.exists()


def test_fit_ot_reports_the_check_in_its_json_and_its_file(tmp_path, capsys):
    import json

    from dpmot_bench.cli import main

    out = tmp_path / "map.npz"
    assert main(["fit-ot", "--dataset", "gmm-hd", "--sigma", "0.2", "--n-targets", "8", "--tol", "0.05",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tol"] == 0.05 and summary["converged"] == (summary["check_l1_mass_error"] <= 0.05
                                                                and summary["check_noise_floor"] <= 0.025)
    assert {"solver_stopped", "check_samples", "check_exact", "check_max_rel_mass_error"} <= set(summary)
    loaded = SemiDiscreteOT.load(out)
    assert loaded.converged_ == summary["converged"] and loaded.check_["tol"] == 0.05


# ------------------------------------------------------------------------------------------ centring
@settings(max_examples=6)
@given(seed=st.integers(0, 2**16), mean=st.floats(0.0, 50.0))
def test_centred_scores_take_the_float64_argmax_wherever_float32_can_tell(seed, mean):
    """Targets with a large common mean against a uniform source on [0, 1]^d: wherever the float64 gap
    between the two best scores exceeds twice the float32 error bound of a centred score (the dot product
    ``gamma_d sum_k |x_k - a| |y_ik - c_k|``, gamma_d = d eps / (1 - d eps), plus the rounding of the
    weights), the centred float32 argmax is the float64 one. The fitted map's targets stay as given."""
    d, n = 256, 64
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, d, generator=g) * 0.2 + mean
    source = UniformSource(d, 0.0, 1.0)
    problem = Problem(source, y, torch.full((n,), 1 / n, dtype=torch.float64))
    h = torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.rand(2000, d, generator=g)
    exact = x.double() @ y.double().T + h
    top = exact.topk(2, dim=1).values
    gap = top[:, 0] - top[:, 1]
    scoring = problem.scoring
    xc, yc = (x.double() - scoring.origin).abs(), scoring.targets[:n].double().abs()
    gamma = d * EPS32 / (1 - d * EPS32)
    error = gamma * (xc @ yc.T).amax(1) + 2 * EPS32 * (h.double() + scoring.offset).abs().max()
    clear = gap > 2 * error
    assert torch.equal(problem.assign(x, h)[clear], exact.argmax(1)[clear])
    fit_targets = SemiDiscreteOT(GaussianSource(d), solver="adam-mc", max_iter=1, check_samples=64).fit(y).targets_
    assert torch.equal(fit_targets, y)
