"""Measures of a MaskGIT prior shared by the benchmark scripts (``train_bundled.py``, ``generation.py``).

* :func:`shard_batches`: ``(images, labels)`` batches of a parquet shard folder's split, through the package's
  one image path (``coda_hf.image_io``);
* :func:`masked_token_metrics`: the MaskGIT objective on held-out images' tokens (cross-entropy in nats per
  masked token, masked-token accuracy), seeded mask draws;
* :func:`effnet_statistics`: FD-EffNet Gaussian statistics of image batches in ``[-1, 1]``;
* :func:`sample`: images from a ``CodaMaskGitPipeline`` (class-balanced or unconditional), timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch


def shard_batches(folder: Path, split: str, batch_size: int = 64, label_column: str | None = None,
                  limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``((B, 3, H, W) in [-1, 1], (B,) long labels)`` batches of the images of ``folder/split-*.parquet`` at
    their own size (labels 0 without ``label_column``); the first ``limit`` images only if given."""
    from coda_hf.data.shards import load_image_shards
    from coda_hf.image_io import pil_to_tensor, to_rgb

    rows = load_image_shards(folder, split, streaming=False)
    n = len(rows) if limit is None else min(limit, len(rows))
    for start in range(0, n, batch_size):
        chunk = rows[start : min(start + batch_size, n)]
        images = torch.stack([pil_to_tensor(to_rgb(im)) for im in chunk["image"]])
        labels = chunk[label_column] if label_column else [0] * images.shape[0]
        yield images, torch.as_tensor(labels, dtype=torch.long)


def masked_token_metrics(pipe, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], repeats: int = 4) -> dict:
    """Mean masked-token cross-entropy (nats per masked token) and accuracy of ``pipe``'s prior on the tokens
    its tokenizer gives ``batches`` (``repeats`` seeded mask draws per image, the class labels as given)."""
    from coda_hf.training.maskgit_trainer import maskgit_loss

    prior, tokenizer = pipe.transformer.eval(), pipe.tokenizer.eval()
    device = next(prior.parameters()).device
    generator = torch.Generator().manual_seed(0)
    losses, accuracies, weights = [], [], []
    with torch.no_grad():
        for images, labels in batches:
            tokens = tokenizer.encode(images.to(device)).token_ids
            labels = (labels if prior.config.num_classes > 1 else torch.zeros_like(labels)).to(device)
            for _ in range(repeats):
                out = maskgit_loss(prior, pipe.scheduler, tokens, labels, class_drop_prob=0.0, generator=generator)
                losses.append(float(out.loss))
                accuracies.append(float(out.masked_accuracy))
                weights.append(tokens.shape[0])
    total = sum(weights)
    return {"cross_entropy": sum(v * w for v, w in zip(losses, weights)) / total,
            "accuracy": sum(v * w for v, w in zip(accuracies, weights)) / total, "mask_draws_per_image": repeats}  # fmt: skip


def effnet_statistics(batches: Iterable[torch.Tensor], features=None):
    """FD-EffNet ``FrechetStatistics`` of image batches in ``[-1, 1]`` (``features``: reuse an extractor; the
    batches go to its device)."""
    from coda_hf.metrics import FrechetStatistics, effnet_features

    features = features or effnet_features()
    stats = FrechetStatistics(features.dim)
    device = next(features.parameters()).device
    with torch.no_grad():
        for images in batches:
            stats.update(features(images.to(device)))
    return stats


def sample(pipe, n: int, num_inference_steps: int, num_classes: int, guidance_scale: float = 1.0,
           batch_size: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """``(images (n, 3, H, W) in [-1, 1], class labels (n,), seconds per image)``: class ``i % num_classes``
    for image ``i`` (a prior trained without labels has the one class 0, the distribution it was trained on)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % max(num_classes, 1)
    images = []
    start = time.perf_counter()
    with torch.no_grad():
        for b in range(0, n, batch_size):
            chunk = labels[b : b + batch_size]
            out = pipe(class_labels=chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                       generator=generator, output_type="pt")  # fmt: skip
            images.append(out.images.cpu() * 2 - 1)  # "pt": [0, 1]; .cpu() waits for a GPU, so the time is real
    return torch.cat(images), labels, (time.perf_counter() - start) / n


__all__ = ["effnet_statistics", "masked_token_metrics", "sample", "shard_batches"]
