"""Evaluation images from a local folder, parquet / webdataset shards or a Hub dataset, batched per process.

Images are center-cropped to a square and resized (bicubic) to ``resolution``, then mapped to
``(B, 3, H, W)`` float tensors in ``[-1, 1]``. Datasets are streamed, so only the images used are read.
An unreadable image is skipped with a warning and counted (:func:`image_batches` ``skipped``), never fatal.

Splits come only from the ``split`` option and the dataset's own split files: a folder of images is every
image in it whatever the file names (``datasets``' split-by-file-name convention for ``imagefolder`` does not
apply), and shards named ``{split}-*`` (``coda-hf data`` writes ``train-*`` / ``eval-*``) form that split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "img", "jpg", "jpeg", "png", "webp")


def _loader_for(path: Path, split: str | None = None) -> tuple[str, dict]:
    """``datasets`` builder name and its kwargs for a local path.

    In a folder of shards named ``{split}-*`` (``coda-hf data`` writes ``train-*`` / ``eval-*``), ``split``
    selects its own files; otherwise every shard is one ``"train"`` split. A folder of images is one
    ``"train"`` split of all its images.
    """
    from ..image_io import list_image_files

    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return "parquet", {"data_files": [str(path)]}
        if suffix == ".tar":
            return "webdataset", {"data_files": [str(path)]}
        raise ValueError(f"--data {path}: a single file must be a .parquet or a webdataset .tar shard")
    if path.is_dir():
        for suffix, builder in ((".parquet", "parquet"), (".tar", "webdataset")):
            files = sorted(str(p) for p in path.rglob(f"*{suffix}"))
            named = [f for f in files if split and Path(f).name.startswith(f"{split}-")]
            if named:
                return builder, {"data_files": {split: named}}
            if files and split not in (None, "train"):
                raise ValueError(f"--data {path}: --split {split!r} needs shards named {split}-*; none found")
            if files:
                return builder, {"data_files": files}
        if split not in (None, "train"):
            raise ValueError(f"--data {path} is a folder of images (one split); --split {split!r} only selects "
                             "split-named shards (train-* / eval-*)")  # fmt: skip
        images = list_image_files(path)
        if not images:
            raise FileNotFoundError(f"--data {path} holds no images, parquet or webdataset .tar shards")
        return "imagefolder", {"data_files": {"train": images}}
    raise FileNotFoundError(f"--data {path} does not exist")


def load_image_dataset(data: str | None = None, dataset_name: str | None = None, split: str | None = None):
    """A streaming ``datasets.IterableDataset`` of images.

    ``data``: a folder of images (searched recursively; ``imagefolder``), a folder or file of
    ``.parquet`` shards, or of webdataset ``.tar`` shards. ``dataset_name``: a Hub dataset id
    (needs ``split``). ``split`` defaults to ``"train"`` for local data (``datasets``' name for
    unsplit files).
    """
    import datasets

    if (data is None) == (dataset_name is None):
        raise ValueError("give exactly one of data (a local path) or dataset_name (a Hub dataset)")
    if dataset_name is not None:
        if split is None:
            raise ValueError(f"dataset_name={dataset_name!r} needs a split (e.g. 'validation')")
        return datasets.load_dataset(dataset_name, split=split, streaming=True)
    builder, kwargs = _loader_for(Path(data), split)
    return datasets.load_dataset(builder, split=split or "train", streaming=True, **kwargs)


def image_column(dataset) -> str:
    """Name of the image column: the first ``datasets.Image`` feature, else a usual image key."""
    import datasets

    features = getattr(dataset, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    names = list(features) or list(getattr(dataset, "column_names", None) or [])
    for key in IMAGE_KEYS:
        if key in names:
            return key
    if not names:  # streaming webdataset without declared features: peek at one example
        names = list(next(iter(dataset)))
        for key in IMAGE_KEYS:
            if key in names:
                return key
    raise ValueError(f"the dataset has no image column; columns: {names}")


def preprocess_image(image, resolution: int) -> torch.Tensor:
    """PIL image, path or array -> ``(3, resolution, resolution)`` in ``[-1, 1]``.

    The package's evaluation transform: :func:`coda_hf.image_io.load_image` (mode conversions) then
    :func:`coda_hf.data.transforms.center_crop_resize` (central square, bicubic resize).
    """
    from ..data.transforms import center_crop_resize
    from ..image_io import load_image

    return center_crop_resize(load_image(image), int(resolution))


def image_batches(
    dataset,
    resolution: int,
    batch_size: int,
    num_images: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    skipped: list[str] | None = None,
) -> Iterator[torch.Tensor]:
    """``(B, 3, R, R)`` batches of THIS process's share of the first ``num_images`` images.

    The first ``num_images`` examples (all when ``None``) are split between ``world_size``
    processes by ``datasets.distributed.split_dataset_by_node``; each image goes to exactly one.
    Unreadable images are skipped with a warning; their names are appended to ``skipped`` when given.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    from ..image_io import ImageLoadError

    if batch_size < 1 or resolution < 1:
        raise ValueError(f"batch_size and resolution must be >= 1; got {batch_size}, {resolution}")
    column = image_column(dataset)
    features = getattr(dataset, "features", None) or {}
    if isinstance(features.get(column), datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))  # decode here: a bad file is skipped
    if num_images is not None:
        dataset = dataset.take(int(num_images))
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    batch: list[torch.Tensor] = []
    for position, example in enumerate(dataset):
        cell = example[column]
        try:
            batch.append(preprocess_image(cell, resolution))
        except ImageLoadError as e:
            name = (cell.get("path") if isinstance(cell, dict) else None) or f"example {position} (rank {rank})"
            logger.warning("skipping unreadable image %s: %s", name, e)
            if skipped is not None:
                skipped.append(str(name))
            continue
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
