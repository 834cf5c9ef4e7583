"""Training data: a Hub dataset (streamed or not), a local image folder, or local parquet / webdataset shards.

Every source becomes a ``datasets.IterableDataset`` of raw (undecoded) rows, shuffled with a fixed
seed and split with ``datasets.distributed.split_dataset_by_node`` so each rank reads ITS OWN
shards (a local folder is loaded map-style and re-sharded with ``to_iterable_dataset(num_shards)``
because a streamed local image folder is one shard). Images are decoded inside the stream: an
unreadable file is skipped with a warning and counted, never fatal.

Resumption is exact: the stream position of every DataLoader worker is carried in each batch and
stored in the checkpoint; on resume each worker skips that many raw rows (without decoding them)
of the same seeded epoch order. Augmentations draw from a generator seeded by (seed, epoch, rank,
worker, position), so a replayed sample gets the same crop and flip.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..image_io import list_image_files
from .config import TrainingConfig

logger = logging.getLogger(__name__)

WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# ------------------------------------------------------------------------------------ sources
def _local_files(root: str, pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "**", pattern), recursive=True))


def load_source(config: TrainingConfig, world_size: int = 1):
    """The raw dataset (map-style ``Dataset`` or ``IterableDataset``) and its image column name."""
    from datasets import load_dataset

    if config.dataset_name:
        ds = load_dataset(
            config.dataset_name, config.dataset_config_name, split=config.dataset_split,
            streaming=config.streaming, cache_dir=config.cache_dir,
        )  # fmt: skip
        column = config.image_column
    elif config.train_data_dir:
        root = config.train_data_dir
        if not os.path.isdir(root):
            raise FileNotFoundError(f"--train_data_dir {root!r} is not a directory")
        parquet, tars = _local_files(root, "*.parquet"), _local_files(root, "*.tar")
        if parquet:
            # One streamed shard per file: ranks split the files.
            if glob.glob(os.path.join(root, f"{config.dataset_split}-*.parquet")):
                from ..data.shards import load_image_shards

                ds = load_image_shards(root, split=config.dataset_split, streaming=True)
            else:
                ds = load_dataset("parquet", data_files=parquet, split="train", streaming=True, cache_dir=config.cache_dir)
            column = config.image_column
        elif tars:
            ds = load_dataset("webdataset", data_files=tars, split="train", streaming=True, cache_dir=config.cache_dir)
            names = ds.column_names or []
            column = config.image_column if config.image_column in names else next(
                (k for k in WEBDATASET_IMAGE_KEYS if k in names), config.image_column
            )
        else:
            images = list_image_files(root)
            if not images:
                raise FileNotFoundError(f"--train_data_dir {root!r} holds no images, parquet or .tar shards")
            # Every image, whatever its name: explicit data_files keep datasets from splitting by file name.
            ds = load_dataset("imagefolder", data_files={"train": images}, split="train", cache_dir=config.cache_dir)
            column = "image"
    else:
        raise ValueError("no training data: pass --dataset_name HUB_ID or --train_data_dir DIR")
    names = getattr(ds, "column_names", None)
    if names is not None and column not in names:
        raise ValueError(f"image column {column!r} not in the dataset columns {names}; set --image_column")
    return ds, column


def num_source_rows(ds) -> int | None:
    """Rows in the whole split when known (map-style length or the split info), else ``None``."""
    try:
        return len(ds)
    except TypeError:
        pass
    info = getattr(ds, "info", None)
    splits = getattr(info, "splits", None) or {}
    split = str(getattr(ds, "split", "") or "")
    if split in splits and splits[split].num_examples:
        return int(splits[split].num_examples)
    return None


def prepare_rank_stream(ds, column: str, config: TrainingConfig, rank: int, world_size: int):
    """Raw rows (images undecoded), shuffled with ``config.seed``, this rank's part only."""
    from datasets import Dataset
    from datasets import Image as ImageFeature
    from datasets.distributed import split_dataset_by_node

    features = getattr(ds, "features", None)
    if features is not None and column in features and isinstance(features[column], ImageFeature):
        ds = ds.cast_column(column, ImageFeature(decode=False))
    if isinstance(ds, Dataset):
        workers = max(1, config.dataloader_num_workers)
        wanted = config.num_shards or world_size * workers * 4
        num_shards = min(wanted, len(ds))
        if num_shards % world_size:
            num_shards -= num_shards % world_size  # whole shards per rank whenever possible
        ds = ds.to_iterable_dataset(num_shards=max(1, num_shards))
    ds = ds.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer_size)
    if world_size > 1:
        if ds.num_shards % world_size:
            logger.warning(
                "%d shards do not divide over %d processes: every rank reads the whole stream and keeps "
                "1 example in %d (still disjoint, but slower)", ds.num_shards, world_size, world_size,
            )
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    return ds


# ------------------------------------------------------------------------------------ transforms
def build_transform(config: TrainingConfig) -> Callable[..., torch.Tensor]:
    """``transform(image, generator=g)`` -> ``(3, resolution, resolution)`` in [-1, 1].

    Random-resized crop (area in ``[crop_scale_min, 1]``) and horizontal flip; ``crop_scale_min=1``
    takes the central square instead of a random crop.
    """
    from ..data.transforms import center_crop_resize, random_resized_crop_and_flip

    size, flip_p = config.resolution, 0.5 if config.random_flip else 0.0
    if config.crop_scale_min >= 1.0:

        def center(image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
            pixels = center_crop_resize(image, size)  # (3, size, size)
            if flip_p and float(torch.rand((), generator=generator)) < flip_p:
                pixels = pixels.flip(-1)
            return pixels

        return center

    def random_crop(image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_resized_crop_and_flip(
            image, size, scale=(config.crop_scale_min, 1.0), flip_p=flip_p, generator=generator
        )

    return random_crop


# ------------------------------------------------------------------------------------ decoding
def decode_image(value: Any) -> tuple[Image.Image, str | None]:
    """A raw image cell (``{"bytes", "path"}``, bytes, a path or a PIL image) -> RGB image, path."""
    path = None
    if isinstance(value, Image.Image):
        image = value
    else:
        if isinstance(value, dict):
            path, data = value.get("path"), value.get("bytes")
        elif isinstance(value, (bytes, bytearray)):
            data = value
        elif isinstance(value, str):
            path, data = value, None
        else:
            raise ValueError(f"unsupported image cell of type {type(value).__name__}")
        image = Image.open(io.BytesIO(data) if data is not None else path)
    image.load()  # force the decode now so a truncated file fails here
    return image.convert("RGB"), path


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, rank, worker, position)."""
    digest = hashlib.sha256("-".join(str(int(p)) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


class ImageStream(torch.utils.data.IterableDataset):
    """Decoded, augmented BATCHES of one rank's raw stream for one epoch (batched here, not by the
    DataLoader, so that each worker knows which unreadable rows belong to a delivered batch).

    Yields dicts: ``pixel_values`` (B, 3, H, W) in [-1, 1], ``id`` (B paths or row keys), ``worker``,
    ``position`` (raw rows of this worker's stream consumed so far) and ``bad`` (unreadable rows
    skipped since this worker's previous batch). A final partial batch is dropped; the unreadable rows
    after the last delivered batch are written to ``trailing_bad[worker]`` (shared memory).
    """

    def __init__(
        self,
        source,
        column: str,
        transform: Callable[..., torch.Tensor],
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int,
        start_positions: dict[int, int] | None = None,
        trailing_bad: torch.Tensor | None = None,
    ):
        super().__init__()
        self.source, self.column, self.transform, self.batch_size = source, column, transform, batch_size
        self.seed, self.epoch, self.rank = seed, epoch, rank
        self.start_positions = dict(start_positions or {})
        self.trailing_bad = trailing_bad if trailing_bad is not None else torch.zeros(1, dtype=torch.long)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        start = self.start_positions.get(worker, 0)
        bad, pixels, ids = 0, [], []
        for position, row in enumerate(self.source, start=1):
            if position <= start:
                continue  # consumed before the checkpoint: skip without decoding
            value = row[self.column]
            row_id = f"rank{self.rank}-worker{worker}-epoch{self.epoch}-row{position}"
            try:
                image, path = decode_image(value)
                generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, self.rank, worker, position))
                pixels.append(self.transform(image, generator=generator))  # (3, H, W)
            except _DECODE_ERRORS as e:
                bad += 1
                where = value.get("path") if isinstance(value, dict) else None
                logger.warning("skipping unreadable image %s: %s: %s", where or row_id, type(e).__name__, e)
                continue
            ids.append(path or row_id)
            if len(pixels) == self.batch_size:
                yield {"pixel_values": torch.stack(pixels), "id": ids, "worker": worker, "position": position, "bad": bad}
                bad, pixels, ids = 0, [], []
        self.trailing_bad[worker] = bad


@dataclass
class DataState:
    """Where this rank is in its data: checkpointed with the training state."""

    epoch: int = 0
    positions: dict[int, int] = field(default_factory=dict)  # worker -> raw rows consumed this epoch
    skipped_images: int = 0  # unreadable images skipped so far (this rank)
    num_workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "positions": {str(k): v for k, v in self.positions.items()},
                "skipped_images": self.skipped_images, "num_workers": self.num_workers}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataState:
        return cls(
            epoch=int(data.get("epoch", 0)),
            positions={int(k): int(v) for k, v in (data.get("positions") or {}).items()},
            skipped_images=int(data.get("skipped_images", 0)),
            num_workers=int(data.get("num_workers", 0)),
        )


class TrainBatches:
    """Endless iterator of training batches for one rank, epoch after epoch, resumable via :class:`DataState`."""

    def __init__(self, config: TrainingConfig, transform: Callable[..., torch.Tensor], rank: int = 0,
                 world_size: int = 1, state: DataState | None = None):
        raw, self.column = load_source(config, world_size)
        self.total_rows = num_source_rows(raw)
        self.source = prepare_rank_stream(raw, self.column, config, rank, world_size)
        self.config, self.transform, self.rank = config, transform, rank
        self._iterator = None
        self._yielded_this_pass = 0
        self.load_state(state or DataState(num_workers=config.dataloader_num_workers))

    def load_state(self, state: DataState) -> None:
        """Continue from a checkpointed position (the next batch is the one after it)."""
        workers = self.config.dataloader_num_workers
        if state.positions and state.num_workers != workers:
            raise ValueError(
                f"the checkpoint's data position was recorded with dataloader_num_workers={state.num_workers}; "
                f"resume with the same value (got {workers})"
            )
        state.num_workers = workers
        self.state = state
        self._iterator = None

    def steps_per_epoch(self, world_size: int) -> int | None:
        """Optimiser steps per epoch (approximate for streams), ``None`` when the size is unknown."""
        if self.total_rows is None:
            return None
        per_rank = self.total_rows // world_size // self.config.train_batch_size
        return max(1, per_rank // self.config.gradient_accumulation_steps)

    def _start_pass(self) -> None:
        self.source.set_epoch(self.state.epoch)
        # One slot per worker, in shared memory so that worker processes can write it.
        self._trailing_bad = torch.zeros(max(1, self.config.dataloader_num_workers), dtype=torch.long).share_memory_()
        stream = ImageStream(
            self.source, self.column, self.transform, batch_size=self.config.train_batch_size,
            seed=self.config.seed, epoch=self.state.epoch, rank=self.rank, start_positions=self.state.positions,
            trailing_bad=self._trailing_bad,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,  # ImageStream yields whole batches
            num_workers=self.config.dataloader_num_workers,
            # Own generator: creating the loader never consumes the global RNG (exact resume).
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        self._iterator = iter(loader)
        self._yielded_this_pass = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._iterator is None:
                self._start_pass()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.state.skipped_images += int(self._trailing_bad.sum())  # after the last full batch
                fresh = not self.state.positions
                if fresh and self._yielded_this_pass == 0:
                    raise RuntimeError(
                        f"rank {self.rank}: its part of the data yields no full batch of {self.config.train_batch_size} "
                        f"readable images (skipped {self.state.skipped_images} unreadable); use more data, "
                        "a smaller --train_batch_size or fewer processes"
                    ) from None
                self.state.epoch += 1
                self.state.positions = {}
                self._iterator = None
                continue
            self._yielded_this_pass += 1
            self.state.positions[int(batch["worker"])] = int(batch["position"])
            self.state.skipped_images += int(batch["bad"])
            return batch
