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

import math
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..data import Dataset
from ..devices import as_device
from ..errors import InputError
from ..noise import block_seed
from .networks import MLP, EDMDenoiser, SmallUNet
from .training import TrainConfig, as_dataset, default_config, training_data

_COND_STREAM = (0xC0D1,)


def prompt_table(prompt_set, labels: torch.Tensor):
    """The train-split prompts, and per label the indices of those whose class set contains it."""
    prompts = prompt_set.prompts("any", "train")
    members = [[i for i, p in enumerate(prompts) if int(label) in p.classes] for label in range(prompt_set.n_classes)]
    missing = sorted({int(y) for y in labels.unique()} - {k for k, m in enumerate(members) if m})
    if missing:
        raise InputError(f"classes {missing} have no train prompt in the {prompt_set.dataset} prompt set")
    return prompts, members


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
    prompts, members = prompt_table(prompt_set, labels)
    table = embed([p.text for p in prompts]).detach().float().cpu()
    counts = torch.tensor([len(m) for m in members])
    offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), counts[:-1]]), 0)
    flat = torch.tensor([i for m in members for i in m], dtype=torch.long)
    sigma_data = float(x_all.double().std())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = (SmallUNet(dataset.shape, width=config.width, cond_dim=table.shape[1]) if config.arch == "unet"
               else MLP(dataset.dim, width=config.width, depth=config.depth, cond_dim=table.shape[1]))
        model = EDMDenoiser(net, sigma_data)
    model.to(device).train()
    ema = None
    if config.ema_decay > 0:
        import copy

        ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = torch.zeros(config.steps)
    x_all, table = x_all.to(device), table.to(device)
    begin = time.perf_counter()
    for step in tqdm(range(config.steps), disable=not progress, desc=f"train {dataset.name} (text)", unit="step"):
        g = torch.Generator().manual_seed(block_seed(seed, step, _COND_STREAM))
        index = torch.randint(x_all.shape[0], (config.batch_size,), generator=g)
        sigma = (config.p_mean + config.p_std * torch.randn(config.batch_size, generator=g)).exp()
        noise = torch.randn(config.batch_size, dataset.dim, generator=g)
        y = labels[index]
        pick = (torch.rand(config.batch_size, generator=g) * counts[y]).long().clamp_max(counts[y] - 1)
        prompt_index = flat[offsets[y] + pick]
        keep = (torch.rand(config.batch_size, generator=g) >= dropout).float()
        cond = table[prompt_index.to(device)] * keep.to(device)[:, None]
        x0, sigma, noise = x_all[index.to(device)], sigma.to(device), noise.to(device)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        sd = model.sigma_data
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        denoised = model(x0 + sigma[:, None] * noise, sigma, cond)
        loss = (weight * ((denoised - x0) ** 2).mean(1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            d = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - d)
        losses[step] = loss.detach().cpu()
    final = (ema if ema is not None else model).eval().requires_grad_(False)
    return final, {"loss": losses.tolist(), "seconds": time.perf_counter() - begin, "dropout": dropout,
                   "prompts": [p.text for p in prompts], "sigma_data": sigma_data}


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
