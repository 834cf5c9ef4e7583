"""Cutting photographs into multi-scale square tiles, and splitting photos into train / eval by group."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Tile", "iter_multiscale_tiles", "resize_short_side", "split_groups"]

#: Default zoom levels: the photo is resized so that its short side is ``level * tile_size``.
DEFAULT_LEVELS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Tile:
    """One square tile cut from a resized photo."""

    image: Image.Image  # (tile_size, tile_size) RGB
    level: int  # the photo's short side was resized to level * tile_size
    x: int  # left edge in the resized photo, pixels
    y: int  # top edge in the resized photo, pixels


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Resize ``image`` (keeping aspect) so that ``min(w, h) == short_side``; downscaling uses Lanczos."""
    w, h = image.size
    factor = short_side / min(w, h)
    size = (max(short_side, round(w * factor)), max(short_side, round(h * factor)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0 if factor < 0.5 else None)


def iter_multiscale_tiles(
    image: Image.Image, tile_size: int, levels: Sequence[int] = DEFAULT_LEVELS, stride: int | None = None
) -> Iterator[Tile]:
    """Yield ``tile_size`` squares of ``image`` at several zoom levels.

    For each ``level`` the photo is resized so its short side is ``level * tile_size`` (level 1 = the
    whole photo's central square, larger levels = finer detail); levels that would need upscaling are
    skipped. Tiles are cut on a grid of step ``stride`` (default ``tile_size``: non-overlapping) that is
    centred in the resized photo.
    """
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    stride = tile_size if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not levels or any(int(lv) != lv or lv < 1 for lv in levels):
        raise ValueError(f"levels must be positive integers, got {list(levels)}")
    image = image.convert("RGB")
    for level in sorted(set(levels)):
        short = level * tile_size
        if short > min(image.size):
            continue  # never upscale a photo
        resized = resize_short_side(image, short)
        w, h = resized.size
        nx, ny = (w - tile_size) // stride + 1, (h - tile_size) // stride + 1
        x0 = (w - ((nx - 1) * stride + tile_size)) // 2
        y0 = (h - ((ny - 1) * stride + tile_size)) // 2
        for j in range(ny):
            for i in range(nx):
                x, y = x0 + i * stride, y0 + j * stride
                yield Tile(resized.crop((x, y, x + tile_size, y + tile_size)), level, x, y)


def split_groups(
    group_to_source: Mapping[str, str], eval_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split photo groups into ``(train_groups, eval_groups)``, stratified by source, deterministic in ``seed``.

    A group holds every photo of one scene (a stereo pair, two views of a wall), so a scene is never in
    both splits. Within each source ``round(eval_fraction * n)`` groups go to eval (at least one when the
    source has two or more groups and ``eval_fraction > 0``).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    by_source: dict[str, list[str]] = {}
    for group, source in group_to_source.items():
        by_source.setdefault(source, []).append(group)
    rng = np.random.default_rng(seed)
    train, evaluation = [], []
    for source in sorted(by_source):
        groups = sorted(by_source[source])
        order = rng.permutation(len(groups))
        n_eval = int(math.floor(eval_fraction * len(groups) + 0.5))
        if eval_fraction > 0 and len(groups) >= 2:
            n_eval = min(max(n_eval, 1), len(groups) - 1)
        evaluation += [groups[k] for k in order[:n_eval]]
        train += [groups[k] for k in order[n_eval:]]
    return sorted(train), sorted(evaluation)
