"""One live trainer per output directory: an exclusive ``flock`` on ``OUTPUT_DIR/.training.lock``.

A second trainer started on a directory that a live one holds (a restarted orchestrator, a typo in
``--output_dir``) would interleave checkpoints with it; it stops at once with :class:`OutputDirInUseError`
naming the holder (pid, host, start time). The kernel drops a ``flock`` when its process dies, however it
dies (SIGKILL included), so a killed run never leaves a stale lock: the lock file may stay, unlocked.
POSIX only (``fcntl``); elsewhere the lock is skipped with a warning. A ``flock`` on a network file
system may not be seen by other hosts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".training.lock"


class OutputDirInUseError(RuntimeError):
    """Another live process trains into this output directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "an unknown process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')} (started {started})"


@contextlib.contextmanager
def hold_output_dir(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``output_dir`` (created if needed) for the ``with`` block; raises
    :class:`OutputDirInUseError` at once if a live process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        logger.warning("no fcntl on this platform: %s is not locked against a second trainer", output_dir)
        yield Path(output_dir) / LOCK_NAME
        return
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirInUseError(
                f"{output_dir} is in use by another training run: {_holder(path)}. Stop that run first, or "
                "pick another --output_dir"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


__all__ = ["LOCK_NAME", "OutputDirInUseError", "hold_output_dir"]
