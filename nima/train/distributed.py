"""Running under ``torchrun``: process group, device per rank, DDP or FSDP wrapping, collectives.

A plain ``nima train`` is rank 0 of a world of 1 and none of this does anything. Under
``torchrun --nproc_per_node N -m nima train ...`` every rank runs the same code; rank 0 alone
writes files and prints. NCCL is used on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nima.train.errors import PeerFailed, TrainError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup_world() -> World:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=size)
    return World(rank, size, device)


def teardown_world(world: World, finished: bool = False) -> None:
    """Leave the process group. After a ``finished`` run every rank first meets at a barrier, so none
    destroys its gloo pairs while a peer still uses them (a rank then aborted at exit, "terminate
    called without an active exception", in two of several hundred runs under load). After a
    failure there is no barrier: a peer may never reach it."""
    if world.distributed and dist.is_initialized():
        if finished:
            with contextlib.suppress(RuntimeError):  # a peer that failed meanwhile: leave anyway
                dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, strategy: str, world: World) -> nn.Module:
    """DDP (replicated weights, all-reduced gradients) or FSDP2 (sharded weights, gradients, state).

    FSDP shards every block, then the root (embeddings, final norm, head), so a rank holds only
    one block's full weights at a time. It changes the parameters in place, so the optimizer
    must be built after this call. Single-process runs get the model back unchanged.
    """
    if not world.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Blocks return their KV cache as views; training never modifies them in place.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        for stack in model.stacks():
            for block in stack.blocks:
                fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation step."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; a no-op for a single process."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def main_first(world: World, action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 only, then tell every rank whether it succeeded.

    Rank 0 re-raises its own `TrainError`; the other ranks raise `PeerFailed` instead of
    waiting forever at the next collective. Returns ``action``'s result on rank 0, else None.
    """
    result: T | None = None
    error: TrainError | None = None
    if world.is_main:
        try:
            result = action()
        except TrainError as err:
            error = err
    if world.distributed:
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int64, device=world.device)
        dist.broadcast(flag, src=0)
        if not world.is_main and flag.item():
            raise PeerFailed("rank 0 failed")
    if error is not None:
        raise error
    return result
