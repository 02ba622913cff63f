"""A text-conditional denoiser (UPainting's first half): an EDM network conditioned on a frozen language
model's prompt embedding, trained with condition dropout so that one network is both ``D(x, sigma, c)`` and
the unconditional ``D(x, sigma, none)`` (the zero embedding), as classifier-free guidance needs.

Training (the EDM loss of :mod:`~dpmot_bench.models.training`): every row of a batch gets a prompt drawn
uniformly among the train-split prompts whose class set contains its label (simple and complex wordings,
:meth:`~dpmot_bench.data.prompts.PromptSet.prompt_for`'s rule), whose embedding is replaced by zeros with
probability ``dropout``. Step k draws its rows, sigmas, noise, prompts and dropout mask from a CPU
generator seeded by ``(seed, k)`` alone, so a run is a function of its seed. Held-out wordings are never
seen in training.
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..data import Dataset
from ..devices import as_device
from ..errors import InputError
from ..noise import block_seed
from .networks import MLP, EDMDenoiser, SmallUNet
from .training import TrainConfig, _lr, _update_ema, as_dataset, default_config, edm_loss, training_data

_COND_STREAM = (0xC0D1,)


class PromptTable:
    """The train-split prompts of a prompt set, and for each label the prompts whose class set contains it:
    :meth:`draw` gives every row a uniformly chosen one of its label's prompts (one uniform draw per row).
    Shared by the text-conditional denoiser and the matcher, so both see the same pairing rule."""

    def __init__(self, prompt_set, labels: torch.Tensor):
        self.prompts = prompt_set.prompts("any", "train")
        members = [[i for i, p in enumerate(self.prompts) if label in p.classes] for label in range(prompt_set.n_classes)]
        missing = sorted({int(y) for y in labels.unique()} - {k for k, m in enumerate(members) if m})
        if missing:
            raise InputError(f"classes {missing} have no train prompt in the {prompt_set.dataset} prompt set")
        self.members = members
        self.counts = torch.tensor([len(m) for m in members])
        self.offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), self.counts[:-1]]), 0)
        self.flat = torch.tensor([i for m in members for i in m], dtype=torch.long)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One prompt index per label, uniform among the label's prompts."""
        counts = self.counts[labels]
        pick = (torch.rand(labels.shape[0], generator=generator) * counts).long().clamp_max(counts - 1)
        return self.flat[self.offsets[labels] + pick]


def build_conditional(dataset: Dataset, config: TrainConfig, cond_dim: int, sigma_data: float) -> EDMDenoiser:
    """An untrained conditional network for ``dataset`` (MLP or SmallUNet by ``config.arch``) under EDM."""
    net = (SmallUNet(dataset.shape, width=config.width, cond_dim=cond_dim) if config.arch == "unet"
           else MLP(dataset.dim, width=config.width, depth=config.depth, cond_dim=cond_dim))
    return EDMDenoiser(net, sigma_data)


def train_text_conditional(dataset: Dataset | str, prompt_set, embed: Callable[[list[str]], torch.Tensor],
                           config: TrainConfig | None = None, *, seed: int = 0, dropout: float = 0.1,
                           device: str | torch.device = "cpu", progress: bool = False) -> tuple[EDMDenoiser, dict]:
    """Train ``D(x, sigma, c)`` on ``dataset``'s train split with prompts of ``prompt_set`` embedded by
    ``embed(texts) -> (n, dim)`` (e.g. :meth:`~dpmot_bench.models.text.TextEncoder.encode`); returns the
    network (EMA weights when ``config.ema_decay > 0``, eval mode) and ``history`` (loss per step, seconds,
    the prompts used, dropout)."""
    dataset = as_dataset(dataset)
    config = (config or default_config(dataset)).validate(dataset)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    device = as_device(device)
    x_all = training_data(dataset, config)
    labels = dataset.data("train", x_all.shape[0])[1]
    table_of = PromptTable(prompt_set, labels)
    table = embed(table_of.texts).detach().float().cpu()
    sigma_data = float(x_all.double().std())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_conditional(dataset, config, table.shape[1], sigma_data)
    model.to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = torch.zeros(config.steps)
    x_all, table = x_all.to(device), table.to(device)
    begin = time.perf_counter()
    for step in tqdm(range(config.steps), disable=not progress, desc=f"train {dataset.name} (text)", unit="step"):
        g = torch.Generator().manual_seed(block_seed(seed, step, _COND_STREAM))
        index = torch.randint(x_all.shape[0], (config.batch_size,), generator=g)
        sigma = (config.p_mean + config.p_std * torch.randn(config.batch_size, generator=g)).exp()
        noise = torch.randn(config.batch_size, dataset.dim, generator=g)
        prompt_index = table_of.draw(labels[index], g)
        keep = (torch.rand(config.batch_size, generator=g) >= dropout).float()
        cond = table[prompt_index.to(device)] * keep.to(device)[:, None]
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        loss = edm_loss(model, x_all[index.to(device)], sigma.to(device), noise.to(device), cond).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            _update_ema(ema, model, config.ema_decay, step)
        losses[step] = loss.detach().cpu()
    final = (ema if ema is not None else model).eval().requires_grad_(False)
    return final, {"loss": losses.tolist(), "seconds": time.perf_counter() - begin, "dropout": dropout,
                   "prompts": table_of.texts, "sigma_data": sigma_data}


def conditioned(model: EDMDenoiser, embedding: torch.Tensor | None) -> Callable:
    """``D(x, sigma)`` of ``model`` for one prompt embedding (dim,) (or None: the unconditional model, the
    zero embedding of condition dropout), for every row of x."""
    def denoiser(x, sigma):  # no no_grad here: matcher guidance may differentiate through it (weights frozen)
        if embedding is None:
            cond = torch.zeros(x.shape[0], model.net.cond_dim, device=x.device)
        else:
            cond = embedding.to(x.device).reshape(1, -1).expand(x.shape[0], -1)
        return model(x, sigma, cond)
    return denoiser
