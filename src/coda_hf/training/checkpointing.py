"""Atomic, resumable training checkpoints on top of ``accelerate`` ``save_state`` / ``load_state``.

Layout under ``output_dir``::

    checkpoint-<step>/                 complete checkpoints (only ever created by a rename)
        model.safetensors, optimizer.bin, ..., random_states_<rank>.pkl   (accelerate)
        training_state_rank<r>.json    loop counters and data position of rank r
    .checkpoint-<step>.tmp/            a save in progress (ignored, removed on the next start)

A save writes everything into the temporary directory, waits for every process, then the main
process renames it onto ``checkpoint-<step>`` with ``os.replace``: a run killed at any moment
leaves either the previous checkpoints or the new complete one, never a partial one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")
_TMP_RE = re.compile(r"\.checkpoint-\d+\.(tmp|old)")


def rank_state_file(rank: int) -> str:
    return f"training_state_rank{rank}.json"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(step, path)``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        m = _CHECKPOINT_RE.fullmatch(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def remove_incomplete(output_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted saves (``.checkpoint-*.tmp`` / ``.old``); returns what was removed."""
    output_dir = Path(output_dir)
    removed = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            m = _TMP_RE.fullmatch(child.name)
            if m:
                final = output_dir / child.name[1:].rsplit(".", 1)[0]
                if m.group(1) == "old" and not final.exists():
                    os.replace(child, final)  # killed mid-swap: the old copy is still the good one
                    continue
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str | None) -> Path | None:
    """``"latest"`` -> newest complete checkpoint in ``output_dir`` (``None`` if there is none yet);
    a path -> that checkpoint (``FileNotFoundError`` naming it if it is missing)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s yet; starting from scratch", output_dir)
            return None
        return found[-1][1]
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        # A bare checkpoint name is looked up inside output_dir.
        candidate = Path(output_dir) / resume_from_checkpoint
        if not candidate.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint directory {resume_from_checkpoint!r}")
        path = candidate
    if not (path / rank_state_file(0)).is_file():
        raise ValueError(f"--resume_from_checkpoint {str(path)!r} is not a coda_hf training checkpoint "
                         f"(no {rank_state_file(0)})")
    return path


def prune_checkpoints(output_dir: str | Path, total_limit: int | None) -> list[Path]:
    """Keep the newest ``total_limit`` checkpoints; returns the removed ones."""
    if total_limit is None:
        return []
    found = list_checkpoints(output_dir)
    removed = []
    for _, path in found[: max(0, len(found) - total_limit)]:
        shutil.rmtree(path)
        removed.append(path)
        logger.info("removed old checkpoint %s (checkpoints_total_limit=%d)", path, total_limit)
    return removed


def save_checkpoint(
    accelerator, output_dir: str | Path, step: int, rank_state: dict[str, Any], total_limit: int | None = None
) -> Path:
    """Save the full training state atomically as ``output_dir/checkpoint-<step>``.

    Every process must call this (accelerate saves per-process RNG states; each rank writes its own
    ``rank_state``: data position and counters).
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    state_path = tmp / rank_state_file(accelerator.process_index)
    state_path.write_text(json.dumps(rank_state, indent=2, sort_keys=True))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = output_dir / f".{CHECKPOINT_PREFIX}{step}.old"
        if final.exists():  # re-saving the same step (e.g. the final save): keep the old one until the swap
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(output_dir, total_limit)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def refuse_unsafe_pickles(path: str | Path) -> None:
    """accelerate unpickles registered objects (``custom_checkpoint_*.pkl``: schedules, EMA) with
    ``weights_only=False``; first read each with ``weights_only=True`` (accelerate's allowlist: tensors, plain
    containers, numbers) and refuse a checkpoint where that fails, so no pickled code ever runs."""
    from accelerate.utils import load

    from ..models.loading import CheckpointError

    for file in sorted(Path(path).glob("custom_checkpoint_*.pkl")):
        try:
            load(str(file), map_location="cpu", weights_only=True)
        except Exception as e:  # any failure means "not plain data"
            raise CheckpointError(
                f"{file} holds more than tensors and plain values; refusing to unpickle it ({type(e).__name__})"
            ) from e


def load_checkpoint(accelerator, path: str | Path) -> dict[str, Any]:
    """Restore models, optimisers, schedulers, registered objects and RNG states; returns this rank's state."""
    path = Path(path)
    state_path = path / rank_state_file(accelerator.process_index)
    if not state_path.is_file():
        raise ValueError(
            f"checkpoint {path} has no {state_path.name}: it was written by a run with fewer processes "
            f"than this one ({accelerator.num_processes}); resume with the same number of processes"
        )
    rank_state = json.loads(state_path.read_text())
    saved_processes = rank_state.get("num_processes", accelerator.num_processes)
    if saved_processes != accelerator.num_processes:
        raise ValueError(
            f"checkpoint {path} was written by {saved_processes} processes; this run has "
            f"{accelerator.num_processes}. Resume with the same number of processes."
        )
    refuse_unsafe_pickles(path)
    accelerator.load_state(str(path))
    logger.info("resumed from %s at step %s", path, rank_state.get("global_step"))
    return rank_state
