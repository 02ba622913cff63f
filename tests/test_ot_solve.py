"""The functional face of the OT solvers: ``solve_semidiscrete`` equals the estimator bit for bit, a run
stopped and resumed (from its state or from a checkpoint) ends where an uninterrupted one does, and the
typed solver options refuse every unknown key and every mistyped or out-of-range value by name."""
import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from dpmot_bench.errors import InputError
from dpmot_bench.options import specs
from dpmot_bench.ot import (SOLVERS, AdamMCOptions, GaussianSource, NewtonQMCOptions, SemiDiscreteOT,
                            SemiDiscreteResult, UniformSource, solve_semidiscrete, solver_options)
from dpmot_bench.ot import newton, solvers
from dpmot_bench.ot.adam import AdamLog
from dpmot_bench.ot.newton import NewtonLog
from dpmot_bench.ot.solvers import SOLVER_NAMES, option_names, semidiscrete_problem

CASES = [("adam-mc", {"max_iter": 40, "patience": 5}, 2), ("newton-qmc", {"n_samples": 2**12}, 2),
         ("newton-qmc", {"n_samples": 2**11, "dense_limit": 4}, 3)]
IDS = ["adam-mc", "newton-qmc", "newton-qmc-sparse"]


def _targets(n=12, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _rows(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("method, options, d", CASES, ids=IDS)
def test_the_function_and_the_estimator_give_the_same_fit(method, options, d):
    y, source = _targets(d=d), GaussianSource(d)
    result = solve_semidiscrete(source, y, None, method, seed=3, **options)
    fit = SemiDiscreteOT(source, solver=method, seed=3, **options).fit(y)
    assert isinstance(result, SemiDiscreteResult) and result.method == method
    assert result.h.dtype == torch.float64 and result.h.shape == (12,) and torch.equal(result.h, fit.h_)
    assert (result.n_iter, result.converged, result.samples_used) == (fit.n_iter_, fit.converged_,
                                                                      fit.n_source_samples_)
    assert _rows(result.history.to_dict("records")) == _rows(fit.history_)
    log = AdamLog if method == "adam-mc" else NewtonLog
    assert list(result.history.columns) == [f.name for f in dataclasses.fields(log)] + ["seconds"]
    assert len(result.history) == result.n_iter and result.seconds == result.history["seconds"].iloc[-1]
    assert result.options == solver_options(method, options) == fit.options_


@pytest.mark.parametrize("method, options, d", CASES, ids=IDS)
def test_a_run_stopped_by_its_callback_resumes_from_its_state(method, options, d):
    problem = semidiscrete_problem(GaussianSource(d), _targets(d=d), seed=1)
    typed, solve = solver_options(method, options), SOLVERS[method].solve
    full = solve(problem, typed)
    logs = []
    stopped = solve(problem, typed, None, lambda state, log: logs.append(log) or state["iteration"] == 3)
    assert stopped["iteration"] == 3 and [log.iteration for log in logs] == [0, 1, 2]
    resumed = solve(problem, typed, stopped)
    assert torch.equal(resumed["solution"], full["solution"]) and resumed["iteration"] == full["iteration"]


class Killed(Exception):
    pass


@pytest.mark.parametrize("method, options, d", CASES[:2], ids=IDS[:2])
def test_a_fit_interrupted_after_a_checkpoint_resumes_to_the_same_h(method, options, d, tmp_path, monkeypatch):
    y, source, path = _targets(d=d), UniformSource(d, -2, 2), tmp_path / "ck.npz"
    reference = solve_semidiscrete(source, y, None, method, **options)
    save = solvers.save_checkpoint

    def save_then_die(*args):
        save(*args)
        raise Killed

    monkeypatch.setattr(solvers, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        solve_semidiscrete(source, y, None, method, checkpoint=path, checkpoint_every=2, **options)
    monkeypatch.setattr(solvers, "save_checkpoint", save)
    resumed = solve_semidiscrete(source, y, None, method, checkpoint=path, checkpoint_every=2, **options)
    assert torch.equal(resumed.h, reference.h) and resumed.n_iter == reference.n_iter
    assert _rows(resumed.history.to_dict("records")) == _rows(reference.history.to_dict("records"))
    with pytest.raises(InputError, match="different fit"):  # other options: not this checkpoint's fit
        solve_semidiscrete(source, y, None, method, checkpoint=path, **{**options, "max_iter": 7})


# ------------------------------------------------------------------------------------------ options
def test_option_names_are_the_solvers_fields_and_auto_takes_either_choices():
    for method in SOLVERS:
        assert option_names(method) == tuple(sorted(f.name for f in dataclasses.fields(SOLVERS[method].options)))
    assert {"lr", "betas", "stop"} <= set(option_names("adam-mc")) and "topk" in option_names("newton-qmc")
    assert option_names("auto") == tuple(sorted({*option_names("exact-2d"), *option_names("newton-qmc")}))
    assert set(SOLVER_NAMES) == {"auto", *SOLVERS}


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(InputError, match="no option learning_rate; its options: .*betas, .*lr, .*stop"):
        solver_options("adam-mc", {"learning_rate": 0.1})
    with pytest.raises(InputError, match="no option lr; its options: armijo"):
        SemiDiscreteOT(GaussianSource(2), solver="newton-qmc", lr=0.1).fit(_targets())
    with pytest.raises(InputError, match="solver auto, which picks exact-2d .* no option lr; its options: init"):
        SemiDiscreteOT(GaussianSource(2), lr=0.1).fit(_targets())


def _bad_values(spec):
    """A mistyped value, and every out-of-range one the spec implies."""
    bad = [[1, 2]] if spec.kind is not dict else ["text"]
    if spec.kind in (int, float):
        bad += ["nope", True, math.nan] + ([0.5] if spec.kind is int else [])
        bad += [spec.low - 1] if spec.low is not None else []
        bad += [spec.above] if spec.above is not None else []
        bad += [spec.high + 1] if spec.high is not None else []
    elif spec.kind is str:
        bad += ["no-such-choice", 3]
    elif spec.kind is bool:
        bad += [1, "true"]
    if not spec.optional:
        bad.append(None)
    return bad


BAD = [(method, name, value) for method in SOLVERS for name, spec in specs(SOLVERS[method].options).items()
       for value in _bad_values(spec)]
BAD += [("adam-mc", "betas", value) for value in ([0.9], [0.9, 1.0], [-0.1, 0.9], "0.9", None, [True, 0.9])]
BAD += [("adam-mc", "noise_quantile", 1.0), ("newton-qmc", "band_quantile", 1.0), ("newton-qmc", "armijo", 1.0)]


@pytest.mark.parametrize("method, name, value", BAD, ids=[f"{m}-{n}-{v!r}" for m, n, v in BAD])
def test_every_mistyped_or_out_of_range_option_is_named(method, name, value):
    with pytest.raises(InputError, match=f"option {name} must be"):
        solver_options(method, {name: value})


@pytest.mark.parametrize("params, name", [({"solver": "adam-mc", "lr": -1.0}, "lr"),
                                          ({"solver": "newton-qmc", "damping": -1}, "damping"),
                                          ({"solver": "adam-mc", "max_iter": 0}, "max_iter"),
                                          ({"solver": "newton-qmc", "shift": 0}, "shift"), ({"tol": -1.0}, "tol"),
                                          ({"max_halvings": -1}, "max_halvings")])
def test_the_estimator_refuses_bad_option_values_before_fitting(params, name, monkeypatch):
    def no_solving(*args, **kwargs):
        raise AssertionError("the solver ran")

    monkeypatch.setattr(solvers, "run_solver", no_solving)
    with pytest.raises(InputError, match=f"option {name} must be"):
        SemiDiscreteOT(GaussianSource(2), **params).fit(_targets())


def test_a_warm_up_that_would_have_no_level_is_refused():
    """The warm-up's temperatures halve from first_smoothing while >= smoothing: a first one below the last
    would silently skip it (null is how to ask for no warm-up)."""
    with pytest.raises(InputError, match=r"option first_smoothing \(0.25\) must be >= smoothing \(0.5\)"):
        solver_options("newton-qmc", {"first_smoothing": 0.25})
    options = solver_options("newton-qmc", {"first_smoothing": 0.25, "smoothing": 0.25})
    assert [tau for _, tau in newton.newton_levels(10, options)][:2] == [0.25, 0.0]


def test_options_are_frozen_and_normalised():
    options = solver_options("adam-mc", {"betas": [0.5, 0.9], "lr": 1})
    assert options.betas == (0.5, 0.9) and options.lr == 1.0 and isinstance(options.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lr = 2.0
    with pytest.raises(InputError, match="option growth"):
        dataclasses.replace(NewtonQMCOptions(), growth=1)
    assert AdamMCOptions() == solver_options("adam-mc", {})


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True),
                      st.text(max_size=12), st.sampled_from(["reference", "noise-floor", "zeros", "moment-matched"]),
                      st.lists(st.floats(-2, 2), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()))


@given(method=st.sampled_from(sorted(SOLVERS)), data=st.data())
@settings(max_examples=300, deadline=None)
def test_any_option_values_are_accepted_or_refused_as_input_errors(method, data):
    names = [f.name for f in dataclasses.fields(SOLVERS[method].options)]
    values = data.draw(st.dictionaries(st.sampled_from(names + ["bogus"]), ANY_VALUE, max_size=4))
    try:
        options = solver_options(method, values)
    except InputError:
        return
    assert isinstance(options, SOLVERS[method].options)


IN_RANGE = {
    "adam-mc": {"max_iter": st.integers(1, 12), "n_samples": st.none() | st.integers(1, 2000),
                "lr": st.floats(1e-6, 10), "betas": st.tuples(st.floats(0, 0.999), st.floats(0, 0.999)),
                "eps": st.floats(1e-12, 1), "patience": st.integers(1, 5), "max_doublings": st.integers(0, 3),
                "lr_decay": st.floats(0.01, 1), "stop": st.sampled_from(["reference", "noise-floor"]),
                "grad_tol": st.floats(0, 10), "noise_quantile": st.floats(0.001, 0.999),
                "init": st.sampled_from(["zeros", "moment-matched"])},
    "newton-qmc": {"max_iter": st.integers(1, 12), "n_samples": st.none() | st.integers(1, 3000),
                   "first_samples": st.none() | st.integers(1, 1000), "growth": st.integers(2, 16),
                   "quasi": st.booleans(), "smoothing": st.floats(0.01, 8),
                   "first_smoothing": st.none() | st.floats(0.01, 16), "topk": st.integers(2, 12),
                   "damping": st.just(0.0) | st.floats(1e-12, 10), "floor": st.floats(1e-9, 10), "trust": st.floats(1e-3, 100),
                   "armijo": st.floats(0, 0.999), "stage_tol": st.floats(1e-3, 10), "final_tol": st.floats(1e-3, 10),
                   "max_halvings": st.integers(0, 6), "warmup_iter": st.integers(0, 5),
                   "band_quantile": st.floats(0.001, 0.999), "shift": st.floats(1e-9, 10),
                   "init": st.sampled_from(["zeros", "moment-matched"]), "dense_limit": st.integers(0, 10),
                   "hessian_samples": st.none() | st.integers(1, 500),
                   "jacobian_samples": st.none() | st.integers(1, 500), "cache_bytes": st.integers(0, 2**16)},
    "exact-2d": {"max_iter": st.integers(1, 12), "tol": st.floats(1e-15, 1), "max_halvings": st.integers(0, 6),
                 "init": st.just("voronoi")},
    "auto": {"max_iter": st.integers(1, 12), "exact_2d": st.fixed_dictionaries({}, optional={"tol": st.floats(1e-15, 1)}),
             "newton_qmc": st.fixed_dictionaries({}, optional={"n_samples": st.integers(1, 3000)})},
}


@given(method=st.sampled_from(sorted(SOLVERS)), seed=st.integers(0, 100), data=st.data())
@settings(max_examples=60, deadline=None)
def test_short_fits_with_any_accepted_options_end_with_a_finite_h(method, seed, data):
    ranges = IN_RANGE[method]
    options = data.draw(st.fixed_dictionaries({"max_iter": ranges["max_iter"]},
                                              optional={k: v for k, v in ranges.items() if k != "max_iter"}))
    first = options.get("first_smoothing", NewtonQMCOptions.first_smoothing)
    if method == "newton-qmc" and first is not None:  # the warm-up's first temperature is at least its last
        options["first_smoothing"] = max(first, options.get("smoothing", NewtonQMCOptions.smoothing))
    result = solve_semidiscrete(GaussianSource(2), _targets(6, seed=seed), None, method, seed=seed, **options)
    assert 1 <= result.n_iter <= result.options.max_iter or result.solver_stopped
    assert bool(torch.isfinite(result.h).all()) and abs(float(result.h.mean())) < 1e-6 * (1 + float(result.h.abs().max()))
