"""Evaluation images from a local folder, parquet / webdataset shards or a Hub dataset, batched per process.

Images are center-cropped to a square and resized (bicubic) to ``resolution``, then mapped to
``(B, 3, H, W)`` float tensors in ``[-1, 1]``. Datasets are streamed, so only the images used are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

IMAGE_KEYS = ("image", "img", "jpg", "jpeg", "png", "webp")


def _loader_for(path: Path, split: str | None = None) -> tuple[str, dict]:
    """``datasets`` builder name and its kwargs for a local path.

    In a folder of shards named ``{split}-*`` (``coda-hf data`` writes ``train-*`` / ``eval-*``), ``split``
    selects its own files; otherwise every shard is one ``"train"`` split.
    """
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
            if files:
                return builder, {"data_files": files}
        return "imagefolder", {"data_dir": str(path)}
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
) -> Iterator[torch.Tensor]:
    """``(B, 3, R, R)`` batches of THIS process's share of the first ``num_images`` images.

    The first ``num_images`` examples (all when ``None``) are split between ``world_size``
    processes by ``datasets.distributed.split_dataset_by_node``; each image goes to exactly one.
    """
    from datasets.distributed import split_dataset_by_node

    if batch_size < 1 or resolution < 1:
        raise ValueError(f"batch_size and resolution must be >= 1; got {batch_size}, {resolution}")
    column = image_column(dataset)
    if num_images is not None:
        dataset = dataset.take(int(num_images))
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    batch: list[torch.Tensor] = []
    for example in dataset:
        batch.append(preprocess_image(example[column], resolution))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
