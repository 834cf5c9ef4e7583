"""Pre-tokenization for MaskGIT prior training: images -> a ``datasets`` token dataset, cached on disk.

The cache directory is named by a fingerprint of (tokenizer weights + config, source dataset, resolution,
columns), so re-running with the same inputs loads it instead of re-encoding, and any change re-encodes.
Columns of the token dataset: ``token_ids`` (``N`` int32, level-major as ``tokenizer.encode(x).token_ids``)
and ``class_labels`` (int64; ``0`` everywhere when the source has no label column).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import torch

from ..image_io import load_pixel_values
from ..quantizers.output import flatten_indices

logger = logging.getLogger(__name__)

TOKEN_COLUMN = "token_ids"
LABEL_COLUMN = "class_labels"


def tokenizer_fingerprint(tokenizer: torch.nn.Module) -> str:
    """SHA-256 of the tokenizer's class, config and every state-dict tensor."""
    h = hashlib.sha256(type(tokenizer).__qualname__.encode())
    config = getattr(tokenizer, "config", None)
    if config is not None:
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        h.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def token_cache_path(
    cache_dir: str | os.PathLike,
    tokenizer: torch.nn.Module,
    dataset: datasets.Dataset,
    resolution: int,
    image_column: str,
    label_column: str | None,
) -> Path:
    """Where :func:`pretokenize_dataset` stores the tokens of this (tokenizer, data, resolution, columns)."""
    key = json.dumps(
        [
            tokenizer_fingerprint(tokenizer),
            dataset._fingerprint,
            len(dataset),
            resolution,
            image_column,
            label_column,
        ]
    )
    return Path(cache_dir) / f"tokens-{hashlib.sha256(key.encode()).hexdigest()[:20]}"


@torch.no_grad()
def pretokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: torch.nn.Module,
    cache_dir: str | os.PathLike,
    resolution: int,
    image_column: str = "image",
    label_column: str | None = "label",
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> datasets.Dataset:
    """Encode every image of ``dataset`` once into a token dataset saved under ``cache_dir``.

    If the fingerprinted cache exists it is loaded and nothing is encoded. The dataset is written to a
    temporary folder and renamed when complete, so an interrupted run never leaves a half cache.

    Args:
        dataset: a map-style image dataset (e.g. ``load_dataset("imagefolder", data_dir=...)["train"]``).
        tokenizer: any coda_hf tokenizer (``encode(images).indices``); put in eval mode here.
        resolution: images take the package's image path (:func:`coda_hf.image_io.load_pixel_values`: shorter
            side to ``resolution``, then the central square), as in training and evaluation.
        image_column / label_column: column names; ``label_column=None`` labels everything 0.
    """
    for column in [image_column] + ([label_column] if label_column else []):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} is not in the dataset (columns: {dataset.column_names})")
    path = token_cache_path(cache_dir, tokenizer, dataset, resolution, image_column, label_column)
    if path.exists():
        logger.info("loading cached tokens from %s", path)
        return datasets.load_from_disk(str(path))

    tokenizer.eval()
    device = torch.device(device) if device is not None else next(tokenizer.parameters()).device
    token_rows, label_rows = [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        images = torch.stack([load_pixel_values(im, resolution) for im in batch[image_column]]).to(device)
        indices = tokenizer.encode(images).indices  # [(B, h_l, w_l)] * L
        token_rows.append(flatten_indices(indices).cpu().numpy().astype(np.int32))  # (B, N)
        labels = batch[label_column] if label_column else [0] * images.shape[0]
        label_rows.append(np.asarray(labels, dtype=np.int64))
    tokens = np.concatenate(token_rows) if token_rows else np.zeros((0, 0), np.int32)
    features = datasets.Features(
        {TOKEN_COLUMN: datasets.Sequence(datasets.Value("int32")), LABEL_COLUMN: datasets.Value("int64")}
    )
    token_dataset = datasets.Dataset.from_dict(
        {TOKEN_COLUMN: list(tokens), LABEL_COLUMN: np.concatenate(label_rows) if label_rows else []},
        features=features,
    )
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    token_dataset.save_to_disk(str(tmp))
    os.replace(tmp, path)
    logger.info("saved %d tokenized images to %s", len(token_dataset), path)
    return datasets.load_from_disk(str(path))


__all__ = [
    "LABEL_COLUMN",
    "TOKEN_COLUMN",
    "pretokenize_dataset",
    "token_cache_path",
    "tokenizer_fingerprint",
]
