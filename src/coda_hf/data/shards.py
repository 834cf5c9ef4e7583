"""Parquet image shards that ``datasets`` streams, several per split so that each rank gets its own."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
from PIL import Image

__all__ = ["encode_png", "load_image_shards", "shard_file_name", "write_parquet_shards"]


def encode_png(image: Image.Image) -> dict:
    """PIL image -> the ``{"bytes", "path"}`` dict that a ``datasets.Image`` column stores (lossless PNG)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return {"bytes": buffer.getvalue(), "path": None}


def shard_file_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.parquet"


def write_parquet_shards(
    columns: Mapping[str, Sequence],
    features: datasets.Features,
    out_dir: str | os.PathLike,
    split: str,
    num_shards: int,
) -> list[str]:
    """Write ``columns`` (row order kept) as ``num_shards`` contiguous parquet shards ``{split}-i-of-n.parquet``.

    Shards are written to a temporary folder and moved into ``out_dir`` only when all are complete, so an
    interrupted run never leaves a partial split behind. Returns the shard file names.
    """
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns have different lengths: {lengths}")
    n_rows = next(iter(lengths.values()), 0)
    if n_rows == 0:
        raise ValueError(f"split {split!r} has no rows to write")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    num_shards = min(num_shards, n_rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{split}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    table = datasets.Dataset.from_dict(dict(columns), features=features)
    names = []
    bars_were_disabled = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    try:
        for index in range(num_shards):
            name = shard_file_name(split, index, num_shards)
            table.shard(num_shards, index, contiguous=True).to_parquet(str(tmp / name))
            names.append(name)
    finally:
        if not bars_were_disabled:
            datasets.enable_progress_bars()
    for old in out_dir.glob(f"{split}-*.parquet"):
        old.unlink()
    for name in names:
        os.replace(tmp / name, out_dir / name)
    tmp.rmdir()
    return names


def load_image_shards(
    path: str | os.PathLike, split: str = "train", streaming: bool = True
) -> datasets.IterableDataset | datasets.Dataset:
    """Load the parquet shards ``{path}/{split}-*.parquet`` written by this module.

    With ``streaming=True`` the result is a ``datasets.IterableDataset`` with one shard per file, so
    ``datasets.distributed.split_dataset_by_node`` hands each rank its own files when the number of
    shards is a multiple of the world size. The ``image`` column decodes to ``PIL.Image``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image shard folder {str(path)!r} does not exist")
    files = sorted(str(f) for f in path.glob(f"{split}-*.parquet"))
    if not files:
        found = sorted({f.name.split("-")[0] for f in path.glob("*.parquet")})
        raise FileNotFoundError(f"no shards for split {split!r} in {str(path)!r}; splits found: {found}")
    return datasets.load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming)
