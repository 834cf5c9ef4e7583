"""Reading the authors' ``.pth`` state dicts safely and checking them against the expected keys.

Files are read with ``torch.load(weights_only=True)`` only: a pickle that would run code or build
arbitrary objects is refused by torch's restricted unpickler before anything executes.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

MODULE_PREFIX = "module."  # DistributedDataParallel's wrapper prefix
MAX_LISTED = 12  # keys named per category in an error message


class OriginalCheckpointError(ValueError):
    """An authors' checkpoint file cannot be converted; the message names the file and the keys."""


def _refusal_reason(error: Exception) -> str:
    """The useful part of torch's weights-only refusal (its message also suggests ``weights_only=False``)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found:
        return f"it refers to the Python object {found.group(1)}, which a plain state dict never does"
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise OriginalCheckpointError(
            f"{path}: refused by torch.load(weights_only=True): not a plain state dict of tensors "
            f"({_refusal_reason(e)}); nothing in it was run"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise OriginalCheckpointError(
            f"{path}: cannot read it as a PyTorch state dict (truncated or not a .pth file?): {type(e).__name__}: {e}"
        ) from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of a ``torch.save(module.state_dict())`` file, with a ``module.`` prefix removed.

    Raises ``FileNotFoundError`` for a missing file and :class:`OriginalCheckpointError` (naming the file)
    for anything that is not a flat mapping of names to floating-point tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    obj = _load(path)
    if not isinstance(obj, Mapping):
        raise OriginalCheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors); got a {type(obj).__name__}"
        )
    bad = [
        f"{k!r} ({type(v).__name__})"
        for k, v in obj.items()
        if not (isinstance(k, str) and isinstance(v, torch.Tensor))
    ]
    if bad:
        raise OriginalCheckpointError(
            f"{path}: not a plain state dict: these entries are not tensors: {', '.join(bad[:MAX_LISTED])}"
            " (a training checkpoint wrapping the weights? save `module.state_dict()` alone)"
        )
    out: dict[str, torch.Tensor] = {}
    for key, tensor in obj.items():
        name = key[len(MODULE_PREFIX) :] if key.startswith(MODULE_PREFIX) else key
        if name in out:
            raise OriginalCheckpointError(
                f"{path}: key {name!r} appears both with and without the 'module.' prefix"
            )
        if not tensor.is_floating_point():
            raise OriginalCheckpointError(
                f"{path}: key {name!r} holds a {tensor.dtype} tensor; weights must be floating point"
            )
        out[name] = tensor
    return out


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def key_report(
    state: dict[str, torch.Tensor],
    expected: dict[str, tuple[str, tuple[int, ...]]],
    path: str | Path,
    what: str,
    hint: str = "",
) -> str:
    """The missing, unexpected and mis-shaped keys of ``state`` as an error message (``""``: none).

    ``expected``: original key -> (our key, original shape); ``what`` names the architecture (message).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {list(state[k].shape)} (expected {list(shape)})"
        for k, (_, shape) in expected.items()
        if k in state and tuple(state[k].shape) != tuple(shape)
    ]
    if not (missing or unexpected or wrong):
        return ""
    lines = [f"{path}: does not match {what}:"]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if keys:
            lines.append(f"  {label} ({len(keys)}): {_listed(keys)}")
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)
