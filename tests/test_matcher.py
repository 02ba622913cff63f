"""The contrastive image-text matcher: trained on clean samples only it retrieves the right class prompt
for held-out clean samples far above chance, and as cross-modal guidance (samplers/guidance.py) on the
exact GMM denoiser it raises the share of samples landing in the prompted mode."""
from __future__ import annotations

import math

import pytest
import torch

from dpmot_bench import schedules
from dpmot_bench.data import get_dataset, get_prompt_set
from dpmot_bench.errors import InputError
from dpmot_bench.models.matcher import Matcher, train_matcher
from dpmot_bench.models.text import get_text_encoder
from dpmot_bench.samplers.guidance import Schedule, matcher_guided
from dpmot_bench.samplers.sampling import sample_euler


@pytest.fixture(scope="module")
def grid_matcher():
    grid, prompts, encoder = get_dataset("gmm-grid25"), get_prompt_set("gmm-grid25"), get_text_encoder()
    rows, labels = grid.sample(20_000, seed=41)  # its own draws, not the denoiser's train split
    matcher, history = train_matcher(rows.float(), labels, prompts, encoder.encode, steps=800, seed=0)
    return grid, prompts, encoder, matcher, history


def _class_prompts(prompts, encoder, k_max=25):
    texts = [next(p.text for p in prompts.prompts("simple", "train") if p.classes == frozenset({k})) for k in range(k_max)]
    return encoder.encode(texts)


def test_retrieval_of_the_class_prompt_is_far_above_chance(grid_matcher):
    grid, prompts, encoder, matcher, history = grid_matcher
    x, y = grid.sample(1000, seed=77)
    table = _class_prompts(prompts, encoder)
    sims = matcher.embed_image(x.float()) @ matcher.embed_text(table).T
    accuracy = float((sims.argmax(1) == y).float().mean())
    chance = 1 / 25
    assert accuracy > chance + 10 * math.sqrt(chance * (1 - chance) / 1000), accuracy
    assert sum(history["loss"][-50:]) < sum(history["loss"][:50])


def test_matcher_guidance_raises_the_share_in_the_prompted_mode(grid_matcher):
    """Euler, 12 steps from sigma 5, exact GMM denoiser, 400 samples: the share landing nearest mode k with
    guidance toward k's prompt exceeds the unguided share by more than 4 binomial std."""
    grid, prompts, encoder, matcher, _ = grid_matcher
    sigmas = schedules.append_zero(schedules.karras(5.0, 0.01, 12))
    x = 5.0 * torch.randn(400, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    means = grid.mixture.means
    for k in (6, 18):
        text = _class_prompts(prompts, encoder)[k]
        guided = matcher_guided(grid.mixture.denoise, lambda z: matcher.distance(z.float(), text).double(),
                                Schedule("skip-noisiest", 3.0), (0.01, 5.0), input="x0")
        shares = []
        for denoiser in (grid.mixture.denoise, guided):
            out = sample_euler(denoiser, x, sigmas)
            shares.append(float((torch.cdist(out, means).argmin(1) == k).double().mean()))
        base, with_guidance = shares
        p = max(base, 1 / 25)
        assert with_guidance > base + 4 * math.sqrt(p * (1 - p) / x.shape[0]), (k, shares)


def test_bad_matcher_inputs_are_refused():
    prompts, encoder = get_prompt_set("gmm-grid25"), get_text_encoder()
    with pytest.raises(InputError, match="rows must be"):
        train_matcher(torch.zeros(5), torch.zeros(5, dtype=torch.long), prompts, encoder.encode)
    with pytest.raises(InputError, match="steps"):
        train_matcher(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), prompts, encoder.encode, steps=0)
    assert Matcher(2, 384).distance(torch.zeros(3, 2), torch.zeros(384)).shape == (3,)
