"""Data-parallel Monte Carlo with ``torch.distributed``.

Source samples are split into fixed blocks (``sampling.BLOCK_ROWS`` rows, each seeded by its own index);
rank r of W processes draws the blocks ``r, r + W, r + 2W, ...`` and the per-cell counts are summed with
``all_reduce``. Counts are integers, so the sum is exact and every world size gives the same h as one
process drawing all the blocks; so are the entropic masses (softmax weights summed in fixed point), and
float sums over blocks are reduced exactly (:func:`exact_total`). Launch with ``torchrun
--nproc_per_node K ...``: gloo on CPU, NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group described by torchrun's environment (no-op when not launched by torchrun
    or already initialised) and return this rank's device (``cuda:LOCAL_RANK`` for CUDA)."""
    device = torch.device(device)
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


@contextlib.contextmanager
def process_group(device: str | torch.device = "cpu"):
    """:func:`init_from_env` for the ``with`` block, yielding this rank's device; a group it created is
    destroyed on exit (a gloo process that exits with its group alive can abort in C++ teardown)."""
    created = launched_by_torchrun() and not dist.is_initialized()
    device = init_from_env(device)
    try:
        yield device
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (identity in a single process)."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def exact_total(values: list[float], device: torch.device) -> float:
    """The correctly rounded sum (``math.fsum``) of ``values`` over all ranks: the same whatever the world
    size and however the values are shared out (floats added one by one round differently in another
    order)."""
    _, world = rank_and_world()
    if world > 1:
        local = torch.tensor(values, dtype=torch.float64, device=device)
        length = torch.tensor([local.numel()], device=device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        padded = torch.cat([local, local.new_zeros(int(length) - local.numel())])  # zeros leave fsum unchanged
        gathered = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(gathered, padded)
        values = torch.cat(gathered).tolist()
    return math.fsum(values)


def is_main_process() -> bool:
    return rank_and_world()[0] == 0
