"""An image-text matcher (UPainting's second half, CLIP-like, small): a dual encoder trained contrastively
on clean data only, so, like the original's CLIP, it is not noise-aware and guidance must show it an
estimate of a clean sample (samplers/guidance.py).

- image side: a residual MLP on the flat rows (no noise input), projected to ``dim`` and L2-normalised;
- text side: a linear projection of the frozen language model's prompt embedding, L2-normalised;
- loss: symmetric InfoNCE over a batch of (row, prompt of its class) pairs with a learned temperature
  (CLIP's): ``(CE(s, I) + CE(s^T, I)) / 2``, ``s = exp(t) z_img z_txt^T``; pairs whose prompt also
  describes another row's class are not negatives for it (their logits are masked), since compositional
  prompts name sets of classes.

:meth:`Matcher.distance` is the guidance loss: the spherical distance ``theta^2 / 2`` between the two
embeddings (UPainting's), ``theta`` their angle.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..noise import block_seed
from .conditional import PromptTable

_MATCH_STREAM = (0x3A7C,)


class Matcher(nn.Module):
    def __init__(self, data_dim: int, text_dim: int, dim: int = 64, width: int = 128, depth: int = 2):
        super().__init__()
        self.inp = nn.Linear(data_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(width, width)) for _ in range(depth))
        self.img = nn.Linear(width, dim)
        self.txt = nn.Linear(text_dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return nn.functional.normalize(self.img(h), dim=1)

    def embed_text(self, text_embedding: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.txt(text_embedding), dim=1)

    def similarity(self, x: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (B,) of rows x with one prompt embedding (dim,) or one per row (B, dim)."""
        t = self.embed_text(text_embedding.reshape(-1, text_embedding.shape[-1]))
        return (self.embed_image(x) * t).sum(1)

    def distance(self, x: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """UPainting's loss: theta^2 / 2, theta the angle between the image and the prompt embedding."""
        cos = self.similarity(x, text_embedding).clamp(-1 + 1e-7, 1 - 1e-7)
        return torch.acos(cos) ** 2 / 2


def train_matcher(rows: torch.Tensor, labels: torch.Tensor, prompt_set, embed: Callable[[list[str]], torch.Tensor],
                  *, steps: int = 1500, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
                  progress: bool = False) -> tuple[Matcher, dict]:
    """Train a :class:`Matcher` on clean ``rows`` (n, d) with their ``labels``, each row paired with a random
    train-split prompt of its class (module docstring). Returns the matcher (eval, no grad) and history."""
    if rows.ndim != 2 or labels.shape != (rows.shape[0],) or rows.shape[0] < 2:
        raise InputError(f"rows must be (n >= 2, d) with one label each, got {tuple(rows.shape)} and {tuple(labels.shape)}")
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    prompts = PromptTable(prompt_set, labels)
    table = embed(prompts.texts).detach().float()
    classes = torch.zeros(len(prompts.prompts), prompt_set.n_classes, dtype=torch.bool)
    for i, p in enumerate(prompts.prompts):
        classes[i, list(p.classes)] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Matcher(rows.shape[1], table.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in tqdm(range(steps), disable=not progress, desc="train matcher", unit="step"):
        g = torch.Generator().manual_seed(block_seed(seed, step, _MATCH_STREAM))
        index = torch.randint(rows.shape[0], (batch_size,), generator=g)
        y = labels[index]
        prompt_index = prompts.draw(y, g)
        z_img, z_txt = model.embed_image(rows[index]), model.embed_text(table[prompt_index])
        logits = model.log_scale.exp().clamp(max=100) * z_img @ z_txt.T
        # a prompt that also describes another row's class is no negative for that row
        fits = classes[prompt_index][:, y].T  # fits[i, j]: prompt j describes row i's class
        eye = torch.eye(batch_size, dtype=torch.bool)
        masked = logits.masked_fill(fits & ~eye, float("-inf"))
        target = torch.arange(batch_size)
        loss = (nn.functional.cross_entropy(masked, target) + nn.functional.cross_entropy(masked.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return model.eval().requires_grad_(False), {"loss": losses, "prompts": prompts.texts}
