"""Process-group lifecycle of the multi-process commands (training, prior training, evaluation)."""

from __future__ import annotations

import torch.distributed as dist
from accelerate import Accelerator


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
