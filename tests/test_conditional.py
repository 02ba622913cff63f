"""The text-conditional denoiser: condition dropout gives the unconditional model as the zero embedding;
training is a function of its seed; a prompt pulls the denoised estimate toward its class."""
from __future__ import annotations

import pytest
import torch

from dpmot_bench.data import get_dataset, get_prompt_set
from dpmot_bench.models.conditional import PromptTable, conditioned, train_text_conditional
from dpmot_bench.models.networks import MLP, SmallUNet
from dpmot_bench.models.text import get_text_encoder
from dpmot_bench.models.training import TrainConfig


def test_unconditional_networks_keep_their_parameters_and_refuse_a_condition():
    assert set(MLP(4).state_dict()) == set(MLP(4, cond_dim=0).state_dict())
    assert "cond.weight" in MLP(4, cond_dim=3).state_dict() and "cond.weight" in SmallUNet((1, 8, 8), 8, cond_dim=3).state_dict()
    net = MLP(4, cond_dim=3)
    x, c = torch.randn(5, 4), torch.rand(5)
    assert torch.equal(net(x, c), net(x, c, torch.zeros(5, 3)))  # missing condition = the zero embedding
    with pytest.raises(Exception, match="takes no condition"):
        MLP(4)(x, c, torch.zeros(5, 3))


@pytest.fixture(scope="module")
def grid_model():
    grid, prompts = get_dataset("gmm-grid25"), get_prompt_set("gmm-grid25")
    config = TrainConfig(steps=600, batch_size=512, n_train=20_000)
    encoder = get_text_encoder()
    model, history = train_text_conditional(grid, prompts, encoder.encode, config, seed=3, dropout=0.2)
    return grid, prompts, encoder, model, history, config


def test_training_is_a_function_of_its_seed(grid_model):
    grid, prompts, encoder, model, history, _ = grid_model
    config = TrainConfig(steps=20, batch_size=64, n_train=500)
    a, _ = train_text_conditional(grid, prompts, encoder.encode, config, seed=1)
    b, _ = train_text_conditional(grid, prompts, encoder.encode, config, seed=1)
    c, _ = train_text_conditional(grid, prompts, encoder.encode, config, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    assert history["loss"][-50:] and sum(history["loss"][-50:]) < sum(history["loss"][:50])


def test_a_simple_prompt_pulls_the_estimate_toward_its_class(grid_model):
    """At sigma = 2 (modes 2 apart overlap), from points spread over the grid: D(x, sigma, prompt of k) lies
    closer to mode k than the unconditional D(x, sigma) for most x (a paired sign test: under no effect
    the count of wins is Binomial(n, 1/2); require it above its mean + 4 std)."""
    grid, prompts, encoder, model, _, _ = grid_model
    means = grid.mixture.means.float()
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * 3
    n, wins = 0, 0
    for k in (0, 6, 12, 18, 24):
        prompt = next(p for p in prompts.prompts("simple", "train") if p.classes == frozenset({k}))
        d_c = conditioned(model, encoder.encode([prompt.text])[0])(x, 2.0)
        d_u = conditioned(model, None)(x, 2.0)
        closer = (d_c - means[k]).norm(dim=1) < (d_u - means[k]).norm(dim=1)
        wins, n = wins + int(closer.sum()), n + x.shape[0]
    assert wins > n / 2 + 4 * (n / 4) ** 0.5, (wins, n)


def test_every_class_has_train_prompts():
    for name in ("digits", "gmm-grid25"):
        labels = get_dataset(name).data("train", 500)[1]
        table = PromptTable(get_prompt_set(name), labels)
        assert all(table.members[k] for k in range(len(table.members))) and table.prompts


def test_cli_prompt_samples_the_prompted_mode_and_refuses_bad_prompts(tmp_path, capsys):
    """dpmot sample --prompt on gmm-grid25 (its prompted models trained on first use and cached): a simple
    train prompt for mode 4 puts most samples in mode 4 (chance 1/25; required: more than half)."""
    import json

    import numpy as np

    from dpmot_bench.cli import main

    prompt = next(p.text for p in get_prompt_set("gmm-grid25").prompts("simple", "train") if p.classes == frozenset({4}))
    out = tmp_path / "p.npz"
    assert main(["sample", "--dataset", "gmm-grid25", "--sampler", "euler", "--nfe", "12", "--n", "300", "--prompt",
                 prompt, "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompt"] == prompt and summary["nfe_spent"] == 12 and summary["model"] == "prompted"
    x = torch.from_numpy(np.load(out)["x"]).double()
    share = float((torch.cdist(x, get_dataset("gmm-grid25").mixture.means).argmin(1) == 4).double().mean())
    assert share > 0.5, share
    for args, words in ((["--prompt", "  "], "the prompt is empty"), (["--cfg", "3"], "give --prompt TEXT"),
                        (["--prompt", prompt, "--sampler", "dpm-ot", "--ot", "map.npz"], "do not apply"),
                        (["--prompt", prompt, "--sampler", "diffusers-ddim"], "sigma-grid samplers"),
                        (["--prompt", prompt, "--schedule", "sometimes"], None)):
        base = ["sample", "--dataset", "gmm-grid25", "--nfe", "3", "--n", "4", "--out", str(tmp_path / "bad.npz"), "--quiet"]
        if "--sampler" not in args:
            base += ["--sampler", "euler"]
        try:
            code = main(base + args)
        except SystemExit as exit_:  # argparse's own refusal (an unknown schedule name)
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and (words is None or words in err) and err.count("\n") == 1, (args, err)
        assert not (tmp_path / "bad.npz").exists()


def test_cli_prompt_on_digits_raises_the_prompted_class(tmp_path, capsys):
    """digits: the prompted UNet (trained on first use, about a minute) conditioned on "a handwritten seven"
    gives far more sevens than chance by the digits classifier (1/10; required: above 10% + 4 binomial std)."""
    import numpy as np

    from dpmot_bench.cli import main
    from dpmot_bench.metrics import get_digits_classifier

    out = tmp_path / "d.npz"
    assert main(["sample", "--dataset", "digits", "--sampler", "dpmpp-2m", "--nfe", "20", "--n", "100",
                 "--prompt", "a handwritten seven", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    predicted = get_digits_classifier().predict(torch.from_numpy(np.load(out)["x"]))
    sevens = int((predicted == 7).sum())
    assert sevens > 10 + 4 * (100 * 0.1 * 0.9) ** 0.5, sevens
