"""Writing results without losing a user's files: the one output mechanism of every command.

* :func:`check_output_file` / :func:`check_output_dir` run BEFORE the work and create nothing: the location
  must be writable (probed with a real empty file), a file must not be asked for where a folder is and vice
  versa, and an existing output is refused unless ``overwrite``.
* :func:`atomic_output` writes to a temporary file next to the target and ``os.replace``-s it into place
  on success, so a crash or a full disk never leaves a half-written result or destroys the old one.
* :func:`distinct_output_names` names one output per input, mirroring the inputs' folder tree below
  their common folder (``a/x.png`` and ``b/x.png`` stay apart) and disambiguating what still collides.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def _temporary_name(path: Path) -> Path:
    # Keeps the suffix last: writers that pick the format from the name (PIL, matplotlib) still can.
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def _check_writable_folder(folder: Path, option: str, target: Path) -> None:
    """Prove that ``folder`` can be created (if needed) and written: its nearest existing ancestor must be a
    folder where a file can be written (probed with a real empty file, removed at once; nothing is created)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        raise NotADirectoryError(f"{option} {target}: {existing} is a file, not a folder")
    probe = _temporary_name(existing / "write-probe")
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{option} {target}: cannot write in {existing} ({e.strerror or e})") from e


def check_output_file(path: str | os.PathLike, overwrite: bool = False, option: str = "--output") -> Path:
    """Check before the work that ``path`` can receive a new file; returns it as a ``Path``."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{option} {target} is a directory; give a file name")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{option} {target} already exists; pass --overwrite to replace it")
    _check_writable_folder(target.parent, option, target)
    return target


def check_output_dir(
    path: str | os.PathLike, names: Sequence[str] = (), overwrite: bool = False, option: str = "--output-dir"
) -> Path:
    """Check before the work that folder ``path`` can receive the files ``names`` (relative paths)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{option} {folder} is a file; give a folder")
    blocked = [n for n in names if (folder / n).is_dir()]
    if blocked:
        raise IsADirectoryError(f"{option} {folder}: {blocked[0]} is a folder where an output file goes")
    existing = [n for n in names if (folder / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{option} {folder} already holds {len(existing)} of the {len(names)} output(s) (e.g. {existing[0]}); "
            "pass --overwrite to replace them"
        )
    _check_writable_folder(folder, option, folder)
    return folder


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)``: ``tmp`` replaces ``p`` only when the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def distinct_output_names(inputs: Sequence[str | os.PathLike], suffix: str) -> list[str]:
    """One relative output name per input: its path below the inputs' common folder, with ``suffix``.

    ``["valid.png", "sub/valid.png", "sub/valid_1.png"]`` -> ``["valid.png", "sub/valid.png",
    "sub/valid_1.png"]``. Inputs that still collide (``x.jpg`` and ``x.png``, or one file given twice)
    get the original extension and then a number: ``x_jpg.png``, ``x_png_2.png``.
    """
    if not inputs:
        return []
    paths = [Path(os.path.abspath(os.fspath(p))) for p in inputs]
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    wanted = [p.relative_to(root).with_suffix(suffix).as_posix() for p in paths]
    taken: set[str] = set()
    names = []
    for path, name in zip(paths, wanted):
        if name in taken:
            base = Path(name)
            extension = path.suffix.lstrip(".") or "file"
            name = base.with_name(f"{base.stem}_{extension}{suffix}").as_posix()
            number = 2
            while name in taken or name in wanted:
                name = base.with_name(f"{base.stem}_{extension}_{number}{suffix}").as_posix()
                number += 1
        taken.add(name)
        names.append(name)
    return names
