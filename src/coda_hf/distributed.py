"""Collectives of the quantizers and metrics, and the process-group lifecycle of the multi-process commands.

The trainers use accelerate's own ``reduce`` / ``gather`` / ``broadcast_object_list`` and its logger. The
collectives here are kept by hand, on ``torch.distributed`` alone, because (1) quantizers must import
torch and nothing else (``import coda_hf.quantizers`` costs torch alone), (2) codebook statistics need a
MAX reduction (``accelerate.utils.reduce`` has sum and mean) and in-place updates of registered buffers,
and (3) the evaluation loop runs under any process group, also one a caller set up without accelerate's
environment variables, which ``PartialState`` would take for a single process. Every function is a no-op
without an initialised group of more than one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from accelerate import Accelerator

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over every process (``op``: ``"sum"``, ``"max"`` or ``"min"``); returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=_OPS[op])
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s; returns it."""
    if world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


def owns_no_process_group_yet() -> bool:
    """``True`` when no process group exists yet, i.e. the ``Accelerator`` about to be built will create it
    (call before building it; pass the answer to :func:`release_distributed`)."""
    return not (dist.is_available() and dist.is_initialized())


def release_distributed(accelerator: Accelerator, owns_process_group: bool) -> None:
    """End of a run: drop the prepared (DDP-wrapped) objects, then destroy the process group if this run
    created it, while every rank is still alive.

    Left to interpreter teardown, the gloo group was seen to hang one rank in its destructors after the
    other rank had exited (about 1 run in 5 with 2 CPU processes). A group the caller set up is kept.
    """
    accelerator.free_memory()
    if owns_process_group and dist.is_available() and dist.is_initialized():
        accelerator.wait_for_everyone()
        dist.destroy_process_group()


__all__ = ["all_reduce_", "broadcast_", "owns_no_process_group_yet", "rank", "release_distributed", "world_size"]
