"""The numerical bound checks (``dpmot_bench.theory.checks``) and ``dpmot check-bound``.

Tolerances: exact W2 / closed forms -> float64 rounding (1e-9); reference flows -> their tolerance
(rtol 1e-8, growth <= 1 for Gaussian data: 1e-6 absolute); log-sigma trapezoid on 33 nodes -> its
error bound, stated inline.
"""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dpmot_bench.cli import main
from dpmot_bench.data import get_dataset
from dpmot_bench.errors import UnknownNameError
from dpmot_bench.theory import checks, fit_rates, run_bound_checks, summarise_rows
from .closed_forms import GaussianData, linear_flow_factors, shifted_denoiser_flow_error
from dpmot_bench.theory.summary import finite_json
from dpmot_bench.threads import one_cpu_thread

TINY = checks.SUITES["tiny"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: run_bound_checks itself runs single-threaded; so do the tests that use its parts."""
    with one_cpu_thread():
        yield


def scenario(**fields) -> checks.Scenario:
    config = replace(checks.Config(dataset="gaussian", n_latents=32, sampler="", nfe=0, ot_solver="", ot_iters=0),
                     **fields)
    return checks.Scenario(config, 0, TINY, torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_rows():
    return run_bound_checks("tiny", seeds=[0])


def test_bound_holds_on_a_small_configuration(tiny_rows):
    theorem = [r for r in tiny_rows if r["tau"] == 0]
    assert theorem and all(r["holds_terms"] and r["holds_bound"] and r["thmA_holds_rig"] for r in theorem)
    for r in theorem:
        assert r["e_ot_lower"] - 1e-9 <= r["e_ot"] <= r["e_ot_upper"] + 1e-9      # Cor. OT2
        assert r["e_disc"] <= r["e_disc_path"] + 1e-9                           # a coupling bounds W2
        assert r["e_den"] == 0 and r["j_sm"] == 0                                # exact denoiser
        assert r["nfe_counted"] == r["nfe"]
        assert r["tv"] >= 0 and 0 < r["ratio_bound"] <= 1
    smoothing = [r for r in tiny_rows if r["tau"] > 0]
    assert smoothing and all(r["holds_smoothing"] and r["smooth_l1_ot"] <= r["smooth_l1_bound"] for r in smoothing)
    assert all(r["potential_gap_bound"] == pytest.approx(r["tau"] * math.log(32)) for r in smoothing)


def test_gaussian_flow_and_discretisation_match_closed_forms():
    s = scenario(sigma_star=0.8)
    data = GaussianData([0.0, 0.0], checks.GAUSSIAN_STD ** 2)
    y = s.y.numpy()
    np.testing.assert_allclose(s.phi_star.numpy(), data.flow(y, 0.8, checks.SIGMA_END), atol=1e-6)
    iterates, grid, nfe = s.tail("euler", 8)
    factor = linear_flow_factors([checks.GAUSSIAN_STD ** 2], grid, "euler")[0]
    np.testing.assert_allclose(iterates[-1].numpy(), factor * y, rtol=1e-10, atol=1e-12)
    exact = data.flow_lipschitz(checks.SIGMA_END, 0.8)  # the exact factor of the linear flow
    disc = checks.rms(iterates[-1] - s.phi_theta)
    assert disc == pytest.approx(abs(factor - exact) * checks.rms(s.y), rel=1e-4, abs=1e-6)
    assert nfe == 8


def test_shifted_denoiser_terms_are_linear_and_attain_lemma_b1():
    c = shifted_denoiser_flow_error(checks.GAUSSIAN_STD, checks.SIGMA_END, 0.5)
    # J_SM = |delta|^2 int sigma^-3 = |delta|^2 (sigma_end^-2 - sigma*^-2) / 2; the trapezoid on 33 nodes in
    # t = log sigma integrates e^{-2t} with relative error ~ h^2 * 4 / 12, h = log(250) / 32: below 1.2%.
    j_per_delta2 = 0.5 * (checks.SIGMA_END ** -2 - 0.5 ** -2)
    for delta in (0.01, 0.02, 0.04):
        s = scenario(model="shift", shift=delta)
        assert checks.rms(s.phi_theta - s.phi_star) == pytest.approx(c * delta, rel=1e-5)  # Example B1: exact
        assert s.j_sm / delta ** 2 == pytest.approx(j_per_delta2, rel=0.012)
        # Lemma B1's integral with the (here exact) Gronwall factor equals the displacement: same trapezoid.
        assert s.e_den_bound == pytest.approx(c * delta, rel=0.012)


def test_broken_mixture_denoiser_error_grows_linearly():
    deltas = (0.0005, 0.001, 0.002)
    errors = [checks.rms(s.phi_theta - s.phi_star) for s in
              (scenario(dataset="gmm-ring8", model="shift", shift=d) for d in deltas)]
    # First order in delta (B1): doubling delta doubles the displacement, up to O(delta) curvature.
    assert errors[1] / errors[0] == pytest.approx(2, rel=0.05)
    assert errors[2] / errors[1] == pytest.approx(2, rel=0.05)


def test_reference_sample_has_exact_mode_quotas():
    mixture = get_dataset("gmm-grid25").mixture
    x = checks.reference_sample(mixture, 0.002, 1010, seed=3)
    counts = torch.bincount(mixture.nearest_component(x), minlength=25)
    # 1010 / 25 = 40.4: ten components get 41 (largest remainders); std 0.05 << spacing 2, no mislabels.
    assert sorted(counts.tolist()) == [40] * 15 + [41] * 10


def test_summaries_and_fitted_rates():
    rows = []
    for n in (32, 64, 128, 256):
        for seed in range(3):
            rows.append({"dataset": "gmm-ring8", "model": "exact", "shift": 0.0, "n_latents": n, "sigma_star": 0.5,
                         "sampler": "heun", "nfe": 8, "ot_solver": "adam-mc", "ot_iters": 300, "tau": 0.0,
                         "sweep": "n_latents", "seed": seed, "e_lat": 2 * n ** -0.25 * (1 + 0.01 * seed),
                         "e_lat_lower": n ** -0.25, "holds_bound": seed != 2 or n != 64})
    summary = summarise_rows(rows)
    first = next(r for r in summary if r["n_latents"] == 32)
    values = [2 * 32 ** -0.25 * (1 + 0.01 * s) for s in range(3)]
    assert first["e_lat"] == pytest.approx(np.mean(values))
    assert first["e_lat_ci"] == pytest.approx(4.302653 * np.std(values, ddof=1) / math.sqrt(3), rel=1e-5)
    assert [r["holds_bound"] for r in sorted(summary, key=lambda r: r["n_latents"])] == [True, False, True, True]
    rate = next(r for r in fit_rates(rows) if r["quantity"] == "e_lat")
    assert rate["slope"] == pytest.approx(-0.25, abs=1e-3) and rate["agrees"] is True


@given(st.recursive(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=10))
def test_finite_json_is_strict_json(value):
    json.loads(json.dumps(finite_json(value), allow_nan=False))


def test_unknown_suite_and_dataset():
    with pytest.raises(UnknownNameError):
        run_bound_checks("huge")
    with pytest.raises(UnknownNameError):
        checks.theory_mixture("mnist")


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["check-bound", "--dataset", "digits", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gmm-ring8" in err[0] and not out.exists()
    assert main(["check-bound", "--suite", "tiny", "--seeds", "0", "--out", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["check-bound", "--suite", "enormous"])
    assert exit_info.value.code == 2


def test_cli_json_shape_and_files(tmp_path, capsys):
    out = tmp_path / "bound"
    assert main(["check-bound", "--suite", "tiny", "--seeds", "1", "--json", "--quiet", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"configurations", "rates", "provenance", "figures"}
    theorem = [c for c in result["configurations"] if not c["tau"]]
    for config in theorem:
        for key in ("lhs", "e_ot", "e_disc_path", "e_den_path", "e_lat", "rhs_bound", "rhs_terms", "holds_bound",
                    "ratio_bound", "thmA_lhs", "thmA_log10_rhs_rig", "thmA_holds_rig", "n_seeds"):
            assert key in config
        assert config["holds_bound"] is True and config["n_seeds"] == 1
    assert result["provenance"]["seeds"] == [0]
    assert (out / "bound_rows.csv").is_file() and json.loads((out / "bound_checks.json").read_text())
    assert all((out / name).is_file() for name in ("bound_lhs_vs_rhs.png", "bound_terms_vs_nfe.png",
                                                   "bound_smoothing.png"))
