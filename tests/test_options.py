"""Typed options: every preset field and sampler option can be set from Python and from the CLI, and every
unknown or mistyped one gets one precise error (CLI: exit 2, one line, nothing written)."""
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpmot_bench.cli import main
from dpmot_bench.data import get_dataset
from dpmot_bench.errors import InputError
from dpmot_bench.options import specs
from dpmot_bench.samplers import PRESETS, Preset, PlanOptions, generate, prepare, sampler_options
from dpmot_bench.samplers.plans import GRID_OPTIONS, METHODS

RING = get_dataset("gmm-ring8")
QUICK = {"n_latents": 30, "solver": "adam-mc", "solver_options": {"max_iter": 3}}

# A model's own NCSNv2 schedule (the four ncsn_* fields go together, with the ncsn-langevin tail)
NCSN = {"sigma_star": "budget", "tail": "ncsn-langevin", "ncsn_sigma_1": 50.0, "ncsn_sigma_L": 0.01, "ncsn_levels": 232,
        "ncsn_step_lr": 6.2e-6}
# One valid non-default value per Preset field (with what it needs besides, to stay a valid preset).
PRESET_OVERRIDES = {
    "source": ("uniform", {}),
    "sigma_star": (0.05, {}),
    "spacings": (2.0, {}),
    "split": ("train", {}),
    "n_latents": (25, {}),
    "solver": ("adam-mc", {}),
    "solver_options": ({"max_iter": 2, "lr": 0.5}, {"solver": "adam-mc"}),
    "mode": ("smooth", {}),
    "tau": (0.3, {"mode": "smooth"}),
    "tail": ("heun", {}),
    "tail_options": ({"rho": 3.0}, {}),
    "reference_levels": (True, {"sigma_star": "budget", "tail": "ncsn-langevin"}),
    **{name: (value, {k: v for k, v in NCSN.items() if k != name}) for name, value in
       (("ncsn_sigma_1", 40.0), ("ncsn_sigma_L", 0.02), ("ncsn_levels", 100), ("ncsn_step_lr", 1e-5))},
}
# One value of the wrong type or range per field, and the words of the error.
PRESET_MISTYPED = {
    "source": ("cube", "one of gaussian, uniform"), "sigma_star": ("abc", "a finite number >= 0 or one of spacing"),
    "spacings": (-1, "a finite number > 0, got -1$"), "split": (3, "one of heldout, train"), "n_latents": (2.5, "an integer >= 2"),
    "solver": ("sgd", "one of auto, adam-mc, newton-qmc, exact-2d"), "solver_options": ("fast", "a JSON object"),
    "mode": ("soft", "one of hard, smooth"), "tau": (float("nan"), "a finite number > 0"),
    "tail": ("rk4", "one of euler"), "tail_options": ([1], "a JSON object"), "reference_levels": ("yes", "true or false"),
    "ncsn_sigma_1": (0, "a finite number > 0"), "ncsn_sigma_L": ("low", "a finite number > 0"),
    "ncsn_levels": (1, "an integer >= 2"), "ncsn_step_lr": (-1e-6, "a finite number > 0"),
}


def test_every_preset_field_is_covered():
    assert set(PRESET_OVERRIDES) == set(specs(Preset)) == set(PRESET_MISTYPED)


@pytest.mark.parametrize("name", sorted(PRESET_OVERRIDES))
def test_every_preset_field_can_be_overridden_in_python(name):
    value, needs = PRESET_OVERRIDES[name]
    made = dataclasses.replace(PRESETS["default"], **needs, **{name: value})
    assert getattr(made, name) == value
    _, parsed = sampler_options("dpm-ot", {**needs, name: value})
    assert parsed == made
    _, from_preset = sampler_options(PRESETS["default"], {**needs, name: value})  # a Preset is a sampler too
    assert from_preset == made
    assert sampler_options("default", {**needs, name: value})[1] == made  # and so is a preset's name


def _cli_sample(tmp_path, capsys, options: dict, out="x.npz", sampler="dpm-ot", nfe=3):
    args = ["sample", "--quiet", "--dataset", "gmm-ring8", "--sampler", sampler, "--nfe", str(nfe), "--n", "7",
            "--seed", "3", "--out", str(tmp_path / out)]
    for key, value in options.items():
        args += ["--option", f"{key}={json.dumps(value)}"]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("name", sorted(PRESET_OVERRIDES))
def test_every_preset_field_can_be_overridden_from_the_cli(name, tmp_path, capsys):
    """The CLI's samples equal the Python API's with the same field set: the option reached the sampler."""
    value, needs = PRESET_OVERRIDES[name]
    options = {**QUICK, **needs, name: value}
    if name == "solver":
        options["solver_options"] = {"max_iter": 3}
    code, err = _cli_sample(tmp_path, capsys, options)
    assert code == 0, err
    expected = generate(RING, "dpm-ot", 3, 7, 3, RING.mixture.denoise, **options)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["index"], expected.index.numpy())
        np.testing.assert_allclose(f["x"], expected.x.numpy(), rtol=0, atol=1e-6)


def test_an_override_changes_the_samples(tmp_path, capsys):
    # the CLI/Python equality above means something only if the fields change what is drawn
    base = generate(RING, "dpm-ot", 3, 7, 3, RING.mixture.denoise, **QUICK)
    for name in ("sigma_star", "source", "tail", "mode"):
        value, needs = PRESET_OVERRIDES[name]
        other = generate(RING, "dpm-ot", 3, 7, 3, RING.mixture.denoise, **{**QUICK, **needs, name: value})
        assert not np.allclose(other.x.numpy(), base.x.numpy()), name


@pytest.mark.parametrize("name", sorted(PRESET_MISTYPED))
def test_mistyped_preset_fields_get_one_line_and_nothing_written(name, tmp_path, capsys):
    value, words = PRESET_MISTYPED[name]
    with pytest.raises(InputError, match=f"option {name} must be {words}"):
        sampler_options("dpm-ot", {name: value})
    with pytest.raises(InputError, match=f"option {name} must be"):
        dataclasses.replace(PRESETS["default"], **{name: value})
    code, err = _cli_sample(tmp_path / "new", capsys, {name: value} if value == value else {name: "NaN"})
    assert code == 2 and f"option {name} must be" in err and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("sampler", sorted(METHODS))
def test_every_baseline_option_reaches_the_sampler(sampler, tmp_path, capsys):
    values = {"grid": "geometric", "sigma_max": 7.0, "sigma_min": 0.05, "rho": 3.0, "eta": 0.5,
              "lower_order_final": False, "steps_per_level": 2, "step_ratio": 0.5, "step_lr": 1e-3}
    allowed = GRID_OPTIONS + METHODS[sampler][1]
    for key in allowed:
        code, err = _cli_sample(tmp_path, capsys, {key: values[key]}, sampler=sampler, nfe=8)
        if key == "rho" and sampler == "langevin":  # an option with no effect is refused, not ignored
            assert code == 2 and "rho shapes the karras grid only" in err
            continue
        assert code == 0, err
        expected = generate(RING, sampler, 8, 7, 3, RING.mixture.denoise, **{key: values[key]})
        default = generate(RING, sampler, 8, 7, 3, RING.mixture.denoise)
        with np.load(tmp_path / "x.npz", allow_pickle=False) as f:
            np.testing.assert_allclose(f["x"], expected.x.numpy(), rtol=0, atol=1e-6)
        if not (key == "grid" and sampler == "langevin"):  # geometric is langevin's own default grid
            assert not np.allclose(expected.x.numpy(), default.x.numpy()), (sampler, key)
    for key in sorted(set(values) - set(allowed)):
        code, err = _cli_sample(tmp_path / "no", capsys, {key: values[key]}, sampler=sampler)
        assert code == 2 and f"{sampler} has no option {key}; its options: " in err and err.count("\n") == 1
        assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("key, value, words", [
    ("sigma_max", "abc", "a finite number > 0"), ("rho", "NaN", "a finite number > 0"),
    ("grid", "cosine", "one of karras, geometric, vp"), ("sigma_min", -1, "a finite number > 0")])
def test_mistyped_baseline_options(key, value, words, tmp_path, capsys):
    code, err = _cli_sample(tmp_path / "new", capsys, {key: value}, sampler="euler")
    assert code == 2 and f"option {key} must be {words}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("sampler, options, words", [
    ("diffusers-ddim", {"eta": "abc"}, "option eta must be a finite number >= 0 and <= 1"),
    ("ancestral", {"eta": [1, 2]}, "option eta must be"),
    ("diffusers-unipc", {"num_train_timesteps": -5}, "option num_train_timesteps must be an integer >= 2"),
    ("diffusers-unipc", {"eta": 0.5}, "diffusers-unipc has no option eta"),
    ("euler", {"seed": 7}, "euler has no option seed"), ("dpm-ot", {"n": 7}, "dpm-ot has no option n"),
    ("dpm-ot", {"dataset": "digits"}, "dpm-ot has no option dataset"),
    ("dpm-ot-paper", {"tail_options": {"grid": "vp"}}, "ncsn-langevin tail is fixed"),
    ("dpm-ot", {"solver_options": {"nosuch": 1}}, "solver auto has no option nosuch"),
])
def test_the_tracebacks_of_issue_18_are_one_line_errors(sampler, options, words, tmp_path, capsys):
    code, err = _cli_sample(tmp_path / "new", capsys, options, sampler=sampler)
    assert code == 2 and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


def test_the_two_commands_of_issue_13(tmp_path, capsys):
    code, err = _cli_sample(tmp_path, capsys, {**QUICK, "sigma_star": 0.1})
    assert code == 0, err
    with np.load(tmp_path / "x.npz", allow_pickle=False) as f:
        assert f["x"].shape == (7, 2)
    code, err = _cli_sample(tmp_path / "new", capsys, {"dataset": "digits"})
    assert code == 2 and ("dpm-ot has no option dataset; its options: grid, mode, n_latents, ncsn_levels, ncsn_sigma_1, "
                          "ncsn_sigma_L, ncsn_step_lr, reference_levels, rho, sigma_min, sigma_star") in err


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted({*specs(Preset), *specs(PlanOptions), "nosuch"})),
       value=st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_any_value_is_accepted_or_refused_with_an_input_error(key, value):
    for sampler in ("dpm-ot", "dpm-ot-paper", "euler", "langevin", "diffusers-ddim"):
        try:
            prepare(RING, sampler, 3, {**QUICK, key: value}) if sampler.startswith("dpm-ot") else \
                prepare(RING, sampler, 3, {key: value})
        except InputError as err:
            assert "\n" not in str(err)
