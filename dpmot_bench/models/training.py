"""Training denoisers with the EDM loss, atomic checkpoints and exact resume.

Loss (Karras et al. 2022, eq. 2 and table 1): ``sigma = exp(p_mean + p_std n)``, ``n ~ N(0, 1)``, and

    L = E[ lambda(sigma) |D(x_0 + sigma eps, sigma) - x_0|^2 ] / dim,   lambda = (sigma^2 + sd^2) / (sigma sd)^2,

which is the plain MSE of the raw network against its unit-variance target ``(x_0 - c_skip x) / c_out``.
Optimiser: Adam with a cosine learning-rate decay to 0 over ``steps``; optional EMA of the weights.

Determinism: the network is initialised from ``seed`` and step k draws its batch indices, sigmas and
noise from a CPU generator seeded by ``(seed, k)`` alone, so a run resumed from a checkpoint takes exactly
the same steps as an uninterrupted one, on any device.
"""
from __future__ import annotations


import copy
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..data import Dataset, get_dataset
from ..devices import as_device
from ..errors import CorruptFileError, InputError
from ..io import atomic_path, load_tensors, remove_stale_temps
from ..options import check_fields, option
from ..resources import check_memory
from ..noise import block_seed
from .networks import MLP, EDMDenoiser, SmallUNet

CHECKPOINT_FORMAT = "dpmot-bench/denoiser-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
_TRAIN_STREAM = (0x7EA1,)  # namespace of the per-step generators (see dpmot_bench.noise.block_seed)
ARCHS = ("mlp", "unet")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained network (with the dataset and the seed).

    arch: ``mlp`` (flat vectors) or ``unet`` (images; needs a dataset with an image shape).
    width, depth: hidden width (UNet: base channels) and number of residual blocks (MLP only).
    steps, batch_size, lr: Adam steps, batch rows, peak learning rate (cosine decay to 0).
    ema_decay: EMA of the weights (0 = off); the EMA weights are the model that gets used.
    p_mean, p_std: log-normal training distribution of sigma.
    n_train: rows of the train split to train on (None: all of a finite split, 100,000 GMM draws).
    """

    arch: str = option("mlp", str, choices=ARCHS)
    width: int = option(96, int, low=1)
    depth: int = option(3, int, low=1)
    steps: int = option(2000, int, low=1)
    batch_size: int = option(1024, int, low=1)
    lr: float = option(5e-3, float, above=0)
    ema_decay: float = option(0.0, float, low=0, high=0.999999)
    p_mean: float = option(-1.0, float)
    p_std: float = option(2.0, float, above=0)
    n_train: int | None = option(None, int, low=1, optional=True)

    def __post_init__(self):
        check_fields(self)  # types and ranges, once (width=2.5 is an InputError here, not in nn.Linear)

    def validate(self, dataset: Dataset) -> "TrainConfig":
        """This config for ``dataset``: the architecture fits its rows, and the run fits in memory."""
        if self.arch == "unet" and len(dataset.shape) != 3:
            raise InputError(f"arch 'unet' needs an image dataset; {dataset.name} has rows of shape "
                             f"{dataset.shape}; use arch 'mlp'")
        check_memory(8 * self.steps + 4 * self.batch_size * dataset.dim * 8,
                     f"training {self.steps} steps of {self.batch_size} rows (its loss history and batches)")
        return self


# Defaults tuned on this project's shared 2-core CPU machine (measured times and losses: see the README).
# Toys: sigma ~ exp(-1 + 2 n) covers the samplers' range 0.002..80 (log sigma within about +-2.7 std).
# Batches of 1024 and width 96 matter on gmm-grid25: with batches of 512, or width 64 x 4 blocks, one seed
# in two left some of the 25 modes unresolved at sigma 0.1..0.3 (loss 3-5x the exact one, against 1.4-1.5x).
_DEFAULTS = {
    "gmm-ring8": TrainConfig(),
    "gmm-grid25": TrainConfig(),
    "gmm-hd": TrainConfig(),
    "digits": TrainConfig(arch="unet", width=16, steps=2000, batch_size=128, lr=3e-3, ema_decay=0.999,
                          p_mean=-0.8, p_std=1.4),
}


def default_config(dataset: Dataset | str) -> TrainConfig:
    """The tuned default config of a dataset (given as a Dataset or its name)."""
    return _DEFAULTS.get(as_dataset(dataset).name, TrainConfig())


def as_dataset(dataset: Dataset | str) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else get_dataset(dataset)


def training_data(dataset: Dataset, config: TrainConfig) -> torch.Tensor:
    """The rows of the train split the network learns from (float32, CPU)."""
    n = config.n_train
    if n is None:
        n = dataset.size("train") if dataset.is_finite else 100_000
    return dataset.data("train", n)[0]


def build_denoiser(dataset: Dataset, config: TrainConfig, sigma_data: float) -> EDMDenoiser:
    """An untrained network for ``dataset`` under EDM preconditioning (initialised from the global RNG)."""
    return network_for_shape(tuple(dataset.shape), config, sigma_data)


def network_for_shape(shape: tuple[int, ...], config: TrainConfig, sigma_data: float) -> EDMDenoiser:
    """An untrained network for samples of ``shape`` (what a checkpoint stores to rebuild it)."""
    if config.arch == "unet":
        if len(shape) != 3:
            raise InputError(f"arch 'unet' needs images (C, H, W), got samples of shape {shape}; use arch 'mlp'")
        return EDMDenoiser(SmallUNet(shape, width=config.width), sigma_data)
    return EDMDenoiser(MLP(math.prod(shape), width=config.width, depth=config.depth), sigma_data)


def edm_loss(denoiser: EDMDenoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             cond: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row EDM loss ``lambda(sigma) |D(x0 + sigma noise, sigma[, cond]) - x0|^2 / dim``, shape (B,)."""
    sd = denoiser.sigma_data.to(x0.dtype)
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    denoised = denoiser(x0 + sigma[:, None] * noise, sigma, *(() if cond is None else (cond,)))
    return weight * ((denoised - x0) ** 2).mean(1)


def _step_draws(seed: int, step: int, n_rows: int, config: TrainConfig, dim: int):
    """Batch indices, sigmas and noise of one step: a function of (seed, step) only, drawn on the CPU."""
    g = torch.Generator().manual_seed(block_seed(seed, step, _TRAIN_STREAM))
    index = torch.randint(n_rows, (config.batch_size,), generator=g)
    sigma = (config.p_mean + config.p_std * torch.randn(config.batch_size, generator=g)).exp()
    noise = torch.randn(config.batch_size, dim, generator=g)
    return index, sigma, noise


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d ema + (1 - d) model`` with ``d = min(decay, (1 + step) / (10 + step))``: the warm-up keeps
    the random initial weights from lingering in short runs."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)


def _lr(config: TrainConfig, step: int) -> float:
    return config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))


@torch.enable_grad()  # training may be asked for lazily from inside a caller's no_grad block
def train_denoiser(dataset: Dataset | str, config: TrainConfig | None = None, *, seed: int = 0,
                   device: str | torch.device = "cpu", progress: bool = True, checkpoint: str | Path | None = None,
                   checkpoint_every: int = 500, resume: bool = False) -> tuple[EDMDenoiser, dict]:
    """Train a denoiser on the train split of ``dataset``; returns ``(model, history)``.

    ``model`` is the EMA network when ``config.ema_decay > 0`` (else the trained one), in eval mode.
    ``history``: ``loss`` (per-step training loss), ``steps``, ``seconds`` (this call), ``sigma_data``.
    With ``checkpoint`` a path, the full state is written there atomically every ``checkpoint_every``
    steps and at the end; with ``resume`` training continues from that file (it must exist and hold
    the same dataset, config and seed) and ends with exactly the weights of an uninterrupted run.
    Temp files of ``checkpoint`` left by killed runs are removed first (only that file name's; a live
    concurrent writer's are kept).
    """
    dataset = as_dataset(dataset)
    config = (config or default_config(dataset.name)).validate(dataset)
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if checkpoint_every < 1:
        raise InputError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if resume and checkpoint is None:
        raise InputError("resume needs a checkpoint path")
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        remove_stale_temps(checkpoint.parent, names=[checkpoint.name], recursive=False)
    device = as_device(device)
    data = training_data(dataset, config)
    sigma_data = float(data.double().std())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_denoiser(dataset, config, sigma_data)
    model.to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay > 0 else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = torch.zeros(config.steps, device=device)
    start = 0
    if resume:
        state = load_checkpoint(checkpoint)
        _check_same_run(state, dataset, config, seed, checkpoint)
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        losses[:start] = state["losses"][:start].to(device)

    data = data.to(device)
    begin = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
               desc=f"train {dataset.name}", unit="step")
    for step in bar:
        index, sigma, noise = _step_draws(seed, step, len(data), config, dataset.dim)
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        loss = edm_loss(model, data[index.to(device)], sigma.to(device), noise.to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            _update_ema(ema, model, config.ema_decay, step)
        losses[step] = loss.detach()
        if step % 100 == 99:
            bar.set_postfix(loss=f"{losses[step - 99:step + 1].mean():.4f}")
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == config.steps):
            save_checkpoint(checkpoint, dataset=dataset.name, config=config, seed=seed, step=done,
                            model=model, ema=ema, optimizer=optimizer, losses=losses[:done],
                            shape=dataset.shape, value_range=getattr(dataset, "value_range", None))
    bar.close()
    final = (ema if ema is not None else model).eval()
    history = {"loss": losses.tolist(), "steps": config.steps, "seconds": time.perf_counter() - begin,
               "sigma_data": sigma_data}
    return final, history


def _check_same_run(state: dict, dataset: Dataset, config: TrainConfig, seed: int, path) -> None:
    theirs = (state["dataset"], state["config"], state["seed"])
    if theirs != (dataset.name, asdict(config), seed):
        raise InputError(f"cannot resume from {str(path)!r}: it was trained on {state['dataset']} with seed "
                         f"{state['seed']} and config {state['config']}, not {dataset.name} with seed {seed} "
                         f"and {asdict(config)}; use the same settings or another checkpoint path")


def save_checkpoint(path: str | Path, *, dataset: str, config: TrainConfig, seed: int, step: int, model, ema,
                    optimizer, losses: torch.Tensor, shape: tuple[int, ...] | None = None,
                    value_range: tuple[float, float] | None = None) -> None:
    """Write the whole training state atomically; loadable with ``torch.load(weights_only=True)``.

    ``shape`` (one sample's shape) and ``value_range`` (the data's range, None if unknown) make the file
    self-contained: :func:`model_from_checkpoint` rebuilds the network from them, so a model trained on a
    data set that is not registered (a user's own) loads again. Files without them (written before) are
    still read, by looking the data set up by name. Both are optional fields of format version 1."""
    state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "version": __version__,
             "dataset": dataset, "config": asdict(config), "seed": seed, "step": step,
             "model": model.state_dict(), "ema": None if ema is None else ema.state_dict(),
             "optimizer": optimizer.state_dict(), "losses": losses.detach().cpu().clone()}
    if shape is not None:
        state["shape"] = [int(n) for n in shape]
    if value_range is not None:
        state["value_range"] = [float(v) for v in value_range]
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


_REQUIRED = {"dataset": str, "config": dict, "seed": int, "step": int, "model": dict, "optimizer": dict,
             "losses": torch.Tensor}


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (data only: ``weights_only=True``, tensors on the CPU) and check its format.

    Missing, unreadable or foreign files raise :class:`CorruptFileError`."""
    state = load_tensors(path, "checkpoint", "pass a .pt file written by `dpmot train`")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{str(path)!r} is not a dpmot-bench denoiser checkpoint; pass a file written "
                               "by `dpmot train`")
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CorruptFileError(f"{str(path)!r} has checkpoint format version {state.get('format_version')}, "
                               f"this version reads {CHECKPOINT_FORMAT_VERSION}; retrain it")
    for key, kind in _REQUIRED.items():
        if not isinstance(state.get(key), kind):
            raise CorruptFileError(f"{str(path)!r} is damaged: field {key!r} is missing or not a {kind.__name__}")
    known = {f.name for f in fields(TrainConfig)}
    if set(state["config"]) != known:
        raise CorruptFileError(f"{str(path)!r} has config fields {sorted(state['config'])}, expected {sorted(known)}")
    shape = state.get("shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and shape
                                  and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise CorruptFileError(f"{str(path)!r} is damaged: field 'shape' is {shape!r}, not a list of positive sizes")
    value_range = state.get("value_range")
    if value_range is not None and not (isinstance(value_range, (list, tuple)) and len(value_range) == 2
                                        and all(isinstance(v, float) and math.isfinite(v) for v in value_range)
                                        and value_range[0] < value_range[1]):
        raise CorruptFileError(f"{str(path)!r} is damaged: field 'value_range' is {value_range!r}, not [low, high]")
    return state


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[EDMDenoiser, dict]:
    """The trained denoiser stored in a checkpoint (EMA weights when present), in eval mode without
    gradients, and the checkpoint's metadata (``dataset``, ``config``, ``seed``, ``step``, ``finished``,
    ``shape``: one sample's shape, ``value_range``: the training data's range or None).

    The network is rebuilt from the stored ``shape``; older files without it from the registered data set
    of their name (a file of an unregistered data set without a shape cannot be read)."""
    state = load_checkpoint(path)
    value_range = state.get("value_range")
    try:
        config = replace(TrainConfig(), **state["config"])
        if state.get("shape") is not None:
            shape = tuple(state["shape"])
        else:  # format version 1 before shapes were stored
            dataset = get_dataset(state["dataset"])
            shape = tuple(dataset.shape)
            value_range = getattr(dataset, "value_range", None)
        model = network_for_shape(shape, config, sigma_data=1.0)
    except InputError as err:
        raise CorruptFileError(f"{str(path)!r} holds an unusable model description: {err}") from None
    weights = state["ema"] if state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptFileError(f"{str(path)!r}: the weights do not fit the stored config ({first}); "
                               "the file is damaged") from None
    model.to(torch.device(device)).eval().requires_grad_(False)
    meta = {key: state[key] for key in ("dataset", "config", "seed", "step")}
    meta["finished"] = state["step"] >= config.steps
    meta["shape"] = shape
    meta["value_range"] = None if value_range is None else tuple(float(v) for v in value_range)
    return model, meta
