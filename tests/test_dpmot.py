"""DPM-OT: presets, NFE, the copy effect, smooth interpolation, determinism, and ``dpmot sample``."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dpmot_bench.cli import main
from dpmot_bench.data import get_dataset
from dpmot_bench.denoisers import CountingDenoiser
from dpmot_bench.errors import InputError, ShapeError
from dpmot_bench.ot import SemiDiscreteOT
from dataclasses import replace

from dpmot_bench.samplers import PRESETS, dpmot, generate, paper_tail, prepare

NFE_GRID = (1, 2, 5, 10, 20, 50)
RING, HD = get_dataset("gmm-ring8"), get_dataset("gmm-hd")
SMALL_FIT = {"n_latents": 48, "solver": "adam-mc", "solver_options": {"max_iter": 30}}  # any h is a valid map here


def fit(dataset, preset="default", nfe=None, **fields):
    return replace(PRESETS[preset], **{**SMALL_FIT, **fields}).fit(dataset, nfe)


@pytest.fixture(scope="module")
def ring_maps():
    """A default-preset map and one paper-preset map per NFE of the grid, for gmm-ring8."""
    paper = {nfe: fit(RING, "paper", nfe) for nfe in NFE_GRID}
    return fit(RING), paper


# ------------------------------------------------------------------------------------------- NFE
def test_nfe_spent_equals_asked_for_every_preset_and_tail(ring_maps):
    default_map, paper_maps = ring_maps
    variants = [("dpm-ot", {}), ("dpm-ot", {"tail": "heun"}), ("dpm-ot", {"tail": "ancestral", "mode": "smooth"}),
                ("dpm-ot", {"tail": "langevin"}), ("dpm-ot-paper", {}), ("dpm-ot-paper", {"reference_levels": True})]
    for nfe in NFE_GRID:
        for sampler, options in variants:
            ot_map = default_map if sampler == "dpm-ot" else paper_maps[nfe]
            counted = CountingDenoiser(RING.mixture.denoise)
            result = generate(RING, sampler, nfe, 5, 0, counted, ot_map=ot_map, batch_size=3, **options)
            assert counted.calls == 2 * nfe and result.nfe_spent == nfe, (sampler, options, nfe)
            assert result.index.dtype == torch.int64 and result.index.shape == (5,)
            assert bool(((result.index >= 0) & (result.index < SMALL_FIT["n_latents"])).all())


def test_paper_preset_follows_the_reference_levels():
    """CIFAR-10 scale (c = 1): NFE 11 means K = 10, latents at level 222 of 232, sigma ~= 0.0139 (the
    reference code's number); fixed chain: one step on each of the 10 levels 222..231; reference chain:
    5 + 5 steps on levels 230, 231."""
    levels = dpmot.ncsn_levels(1.0)
    assert len(levels) == 232 and math.isclose(levels[0], 50) and math.isclose(levels[-1], 0.01)
    sigma_star, grid, counts = paper_tail(1.0, 11)
    assert math.isclose(sigma_star, 50 * (0.01 / 50) ** (222 / 231), rel_tol=1e-12)
    assert round(sigma_star, 4) == 0.0139
    assert torch.equal(grid[:-1], levels[222:]) and grid[-1] == 0 and counts == [1] * 10
    sigma_ref, grid_ref, counts_ref = paper_tail(1.0, 11, reference_levels=True)
    assert sigma_ref == sigma_star and torch.equal(grid_ref[:-1], levels[230:]) and counts_ref == [5, 5]
    sigma_one, grid_one, counts_one = paper_tail(1.0, 1)  # K = 0: latents at sigma_L, the call is the denoise
    assert sigma_one == levels[-1] and torch.equal(grid_one[:-1], levels[-1:]) and counts_one == [0]
    assert math.isclose(paper_tail(2.0, 11)[0], 2 * sigma_star)  # lengths scale with the data range
    with pytest.raises(InputError, match="at most 232 NFE"):
        paper_tail(1.0, 233)


# ------------------------------------------------------------------------------------------- copy / interpolation
@pytest.fixture(scope="module")
def hd_tiny_map():
    return fit(HD, sigma_star=1e-3, n_latents=64, solver_options={"max_iter": 20})


def test_hard_map_with_tiny_sigma_star_copies_the_stored_data(hd_tiny_map):
    """Latent i is clean_i + sigma* eps_i with |eps_i|^2 ~ chi2(32): |latent - clean| <= sigma* q, q^2 the
    1 - 1e-9 quantile. The ODE tail from sigma* with the exact denoiser moves a point near a component
    (std s = 0.1) by (1 - s / sqrt(s^2 + sigma*^2)) |y - m| ~ sigma*^2 / (2 s^2) |y - m| ~ 1e-4 * 1 << sigma* q,
    so every sample lies within 2 sigma* q of the clean point it was mapped to. Fresh samples from a
    sampler without the map are never that close to a held-out point (nearest-neighbour distances in 32-D
    are ~ 0.1 sqrt(2 * 32) = 0.8): the copy effect is real and detectable."""
    clean, _ = HD.data("heldout", 64)
    bound = 2 * 1e-3 * math.sqrt(stats.chi2.ppf(1 - 1e-9, HD.dim))
    result = generate(HD, "dpm-ot", 5, 200, 0, HD.mixture.denoise, ot_map=hd_tiny_map)
    assert bool(((result.x - clean[result.index]).norm(dim=1) <= bound).all())
    assert torch.equal(torch.cdist(result.x, clean).argmin(1), result.index)
    fresh = generate(HD, "dpmpp-2m", 20, 200, 0, HD.mixture.denoise).x
    assert float(torch.cdist(fresh, clean).min()) > 10 * bound


def test_smooth_map_interpolates_between_latents(hd_tiny_map):
    """Smooth transport is the softmax((<z, y_i> + h_i) / tau) average of the latents, recomputed here
    independently of the OT kernel. With one Euler step at sigma* the output is D(y, sigma*), which moves y
    by at most sigma*^2 / (s^2 + sigma*^2) max_k |y - m_k| (a convex combination of per-component shrinks)
    plus float32 rounding. Samples land between latents (far from every one of them), unlike the hard map;
    and as tau -> 0 the smooth map becomes the hard one."""
    from dpmot_bench.noise import SampleNoise

    n, tau, sigma = 100, 1.0, 1e-3
    result = generate(HD, "dpm-ot", 1, n, 3, HD.mixture.denoise, ot_map=hd_tiny_map, tail="euler",
                      mode="smooth", tau=tau)
    z = hd_tiny_map.source.draw(SampleNoise(3, n))
    latents = hd_tiny_map.targets_
    weights = torch.softmax((z.double() @ latents.double().T + hd_tiny_map.h_) / tau, dim=1)
    expected = (weights @ latents.double()).float()
    shrink = sigma ** 2 / (0.1 ** 2 + sigma ** 2)
    bound = shrink * torch.cdist(expected.double(), HD.mixture.means).max(1).values + 1e-5 * (1 + expected.norm(dim=1))
    assert bool(((result.x - expected).norm(dim=1) <= bound.float()).all())
    assert float(weights.max(1).values.median()) < 0.9  # several latents share each sample
    assert float(torch.cdist(result.x, latents).min(1).values.median()) > 0.1
    hard = generate(HD, "dpm-ot", 1, n, 3, HD.mixture.denoise, ot_map=hd_tiny_map, tail="euler")
    near_hard = generate(HD, "dpm-ot", 1, n, 3, HD.mixture.denoise, ot_map=hd_tiny_map, tail="euler",
                         mode="smooth", tau=1e-6)
    assert torch.allclose(near_hard.x, hard.x, atol=1e-5) and torch.equal(near_hard.index, hard.index)


# ------------------------------------------------------------------------------------------- determinism
@settings(max_examples=15)
@given(sampler_options=st.sampled_from([("dpm-ot", {}), ("dpm-ot", {"tail": "ancestral"}),
                                        ("dpm-ot", {"mode": "smooth", "tau": 0.5}),
                                        ("dpm-ot-paper", {"reference_levels": True})]),
       n=st.integers(1, 25), batch_size=st.integers(1, 25))
def test_dpmot_rows_depend_only_on_seed_and_index(ring_maps, sampler_options, n, batch_size):
    sampler, options = sampler_options
    ot_map = ring_maps[0] if sampler == "dpm-ot" else ring_maps[1][10]
    full = generate(RING, sampler, 10, 25, 5, RING.mixture.denoise, ot_map=ot_map, batch_size=25, **options)
    part = generate(RING, sampler, 10, n, 5, RING.mixture.denoise, ot_map=ot_map, batch_size=batch_size,
                    **options)
    assert torch.equal(part.index, full.index[:n])
    # row-wise arithmetic; only BLAS blocking in float64 products may move the last float32 bit
    assert (part.x - full.x[:n]).abs().max() <= 4 * torch.finfo(torch.float32).eps * (1 + full.x.abs().max())


# ------------------------------------------------------------------------------------------- bad input
def test_mismatched_maps_and_options_raise_precise_errors(ring_maps):
    default_map, paper_maps = ring_maps
    D = RING.mixture.denoise
    with pytest.raises(InputError, match="fit a map for this NFE"):
        generate(RING, "dpm-ot-paper", 10, 4, 0, D, ot_map=paper_maps[5])
    grid = get_dataset("gmm-grid25")
    with pytest.raises(InputError, match="fitted for dataset 'gmm-ring8', not 'gmm-grid25'"):
        generate(grid, "dpm-ot", 5, 4, 0, grid.mixture.denoise, ot_map=default_map)
    foreign = fit(HD, n_latents=8, solver_options={"max_iter": 2})
    foreign.meta_ = {**foreign.meta_, "dataset": "gmm-ring8"}
    with pytest.raises(ShapeError, match="32 dimensions but gmm-ring8 has 2"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=foreign)
    with pytest.raises(InputError, match="ncsn-langevin tail runs on NCSNv2's levels, so it needs sigma_star=budget"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, tail="ncsn-langevin")
    with pytest.raises(InputError, match="ncsn-langevin tail is fixed"):
        generate(RING, "dpm-ot-paper", 5, 4, 0, D, ot_map=paper_maps[5], tail_options={"grid": "vp"})
    with pytest.raises(InputError, match="reference_levels applies to the ncsn-langevin tail only"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, reference_levels=True)
    with pytest.raises(InputError, match="option mode must be one of hard, smooth, got 'soft'"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, mode="soft")
    with pytest.raises(InputError, match="option tau must be a finite number > 0"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, mode="smooth", tau=-1.0)
    with pytest.raises(InputError, match="must be fitted"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=SemiDiscreteOT(default_map.source))
    with pytest.raises(InputError, match="sigma_max cannot be set"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, sigma_max=3.0)
    with pytest.raises(InputError, match="sigma_star shape.* the OT fit, but a fitted map was given"):
        generate(RING, "dpm-ot", 5, 4, 0, D, ot_map=default_map, sigma_star=0.1)
    with pytest.raises(InputError, match="pass nfe"):
        PRESETS["paper"].fit(RING)
    with pytest.raises(InputError, match="unknown DPM-OT preset"):
        dpmot.get_preset("fast")


def test_bad_options_fail_before_an_on_the_spot_fit(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before checking the options")

    monkeypatch.setattr(dpmot, "fit_latent_map", no_fit)
    for sampler, options, message in [("dpm-ot", {"mode": "soft"}, "option mode must be one of"),
                                      ("dpm-ot", {"tail": "rk4"}, "option tail must be one of"),
                                      ("dpm-ot", {"eta": 0.5}, "dpm-ot has no option eta"),
                                      ("dpm-ot-paper", {"grid": "vp"}, "dpm-ot-paper has no option grid"),
                                      ("dpm-ot-paper", {"nfe": 3}, "dpm-ot-paper has no option nfe"),
                                      ("dpm-ot-paper", {"tail": "heun", "sigma_star": "spacing", "rho": -1},
                                       "option rho must be a finite number > 0")]:
        with pytest.raises(InputError, match=message):
            prepare(RING, sampler, 5, options)


# ------------------------------------------------------------------------------------------- CLI
def _sample(tmp_path, capsys, *args):
    code = main(["sample", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_sample_writes_x_and_rows_do_not_depend_on_n(tmp_path, capsys):
    common = ["--dataset", "gmm-ring8", "--sampler", "ancestral", "--nfe", "5", "--seed", "4"]
    assert _sample(tmp_path, capsys, *common, "--n", "12", "--out", str(tmp_path / "a.npz"))[0] == 0
    code, out, _ = _sample(tmp_path, capsys, *common, "--n", "5", "--batch-size", "2", "--out", str(tmp_path / "b.npz"))
    assert code == 0 and json.loads(out)["nfe_spent"] == 5
    with np.load(tmp_path / "a.npz", allow_pickle=False) as a, np.load(tmp_path / "b.npz", allow_pickle=False) as b:
        assert a["x"].shape == (12, 2) and a["x"].dtype == np.float32 and "index" not in a
        np.testing.assert_array_equal(a["x"][:5], b["x"])
        assert json.loads(str(a["meta"]))["provenance"]["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temp files left


def test_cli_sample_dpmot_with_an_ot_file(tmp_path, capsys, ring_maps):
    ring_maps[0].save(tmp_path / "map.npz", **ring_maps[0].meta_)
    args = ["--dataset", "gmm-ring8", "--sampler", "dpm-ot", "--nfe", "4", "--ot", str(tmp_path / "map.npz"),
            "--option", "tail=heun", "--n", "9"]
    assert _sample(tmp_path, capsys, *args, "--out", str(tmp_path / "x.npz"))[0] == 0
    with np.load(tmp_path / "x.npz", allow_pickle=False) as f:
        x, index = f["x"], f["index"]
    expected = generate(RING, "dpm-ot", 4, 9, 0, RING.mixture.denoise, ot_map=ring_maps[0], tail="heun")
    np.testing.assert_array_equal(index, expected.index.numpy())
    np.testing.assert_allclose(x, expected.x.numpy(), atol=1e-6)


def test_cli_sample_fits_the_preset_map_when_no_ot_file_is_given(tmp_path, capsys):
    code, out, _ = _sample(tmp_path, capsys, "--dataset", "gmm-ring8", "--sampler", "dpm-ot-paper", "--nfe", "3",
                           "--n", "6", "--out", str(tmp_path / "p.npz"), "--option", "n_latents=40",
                           "--option", 'solver_options={"max_iter": 5}')  # a quick fit, same code path
    assert code == 0 and json.loads(out)["fit_seconds"] > 0
    with np.load(tmp_path / "p.npz", allow_pickle=False) as f:
        assert f["x"].shape == (6, 2) and f["index"].max() < 40


def test_cli_sample_bad_input_exits_2_with_one_line(tmp_path, capsys, ring_maps):
    ring_maps[0].save(tmp_path / "ring.npz", **ring_maps[0].meta_)
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    base = ["--dataset", "gmm-ring8", "--n", "3", "--out", str(tmp_path / "out.npz")]
    cases = [
        (["--sampler", "eulr", "--nfe", "3"], "unknown sampler 'eulr'"),
        (["--sampler", "euler", "--nfe", "0"], "nfe must be an integer >= 1"),
        (["--sampler", "euler", "--nfe", "3", "--ot", str(tmp_path / "ring.npz")], "--ot applies to"),
        (["--sampler", "dpm-ot", "--nfe", "3", "--ot", str(tmp_path / "junk.npz")], "junk.npz"),
        (["--sampler", "euler", "--nfe", "3", "--option", "eta"], "--option needs KEY=VALUE"),
        (["--sampler", "euler", "--nfe", "3", "--option", "eta=0.5"], "euler has no option eta"),
        (["--sampler", "euler", "--nfe", "3", "--option", "sigma_max=abc"], "option sigma_max must be a finite number"),
        (["--sampler", "dpm-ot", "--nfe", "3", "--option", "dataset=digits"], "dpm-ot has no option dataset"),
    ]
    for args, message in cases:
        code, _, err = _sample(tmp_path, capsys, *base, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    code, _, err = _sample(tmp_path, capsys, "--dataset", "gmm-grid25", "--sampler", "dpm-ot", "--nfe", "3",
                           "--ot", str(tmp_path / "ring.npz"), "--n", "3", "--out", str(tmp_path / "out.npz"))
    assert code == 2 and "fitted for dataset 'gmm-ring8', not 'gmm-grid25'" in err
    assert not (tmp_path / "out.npz").exists()


def test_cli_sample_help_lists_every_sampler(capsys):
    from dpmot_bench.samplers import SAMPLER_NAMES

    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in SAMPLER_NAMES)


def test_the_spacing_rule_measures_the_whole_split():
    # the report's default sigma_star: the held-out points' spacing, whatever the number of latents fitted
    full = PRESETS["default"].sigma_star_for(RING)
    assert replace(PRESETS["default"], n_latents=10).sigma_star_for(RING) == full
    clean, _ = RING.data("heldout")
    assert full == 3.0 * dpmot.median_nn_distance(clean) / math.sqrt(RING.dim)
