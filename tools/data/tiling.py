"""Cutting photographs into multi-scale square tiles, and splitting photos into train / validation / eval by group."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Tile", "iter_multiscale_tiles", "resize_short_side", "split_groups", "split_photo_groups"]

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
    """Split photo groups into ``(train_groups, eval_groups)``: :func:`split_photo_groups` without a
    validation split."""
    split = split_photo_groups(group_to_source, eval_fraction, seed)
    return split["train"], split["eval"]


def split_photo_groups(
    group_to_source: Mapping[str, str], eval_fraction: float, seed: int, validation_fraction: float = 0.0
) -> dict[str, list[str]]:
    """Split photo groups into ``{"train", "validation", "eval"}`` group lists, stratified by source,
    deterministic in ``seed``.

    A group holds every photo of one scene (a stereo pair, two views of a wall), so a scene is never in
    two splits. Within each source the groups are permuted once (``seed``); the first
    ``round(eval_fraction * n)`` go to eval (at least one when the source has two or more groups and
    ``eval_fraction > 0``), the next ``round(validation_fraction * n)`` to validation (at least one when
    ``validation_fraction > 0`` and two or more groups are left), the rest to train. The eval groups do not
    depend on ``validation_fraction``: adding a validation split only moves train groups, so eval figures
    stay comparable with those of a dataset prepared without one.
    """
    for name, value in (("eval_fraction", eval_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if eval_fraction + validation_fraction >= 1.0:
        raise ValueError(f"eval_fraction + validation_fraction must be < 1 (train keeps the rest); got "
                         f"{eval_fraction} + {validation_fraction}")  # fmt: skip
    by_source: dict[str, list[str]] = {}
    for group, source in group_to_source.items():
        by_source.setdefault(source, []).append(group)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "validation": [], "eval": []}
    for source in sorted(by_source):
        groups = sorted(by_source[source])
        order = rng.permutation(len(groups))
        n_eval = _held_out(eval_fraction, len(groups), len(groups))
        n_val = _held_out(validation_fraction, len(groups), len(groups) - n_eval)
        out["eval"] += [groups[k] for k in order[:n_eval]]
        out["validation"] += [groups[k] for k in order[n_eval : n_eval + n_val]]
        out["train"] += [groups[k] for k in order[n_eval + n_val :]]
    return {name: sorted(groups) for name, groups in out.items()}


def _held_out(fraction: float, total: int, available: int) -> int:
    """Groups of a source held out for a split, of the ``available`` ones: ``round(fraction * total)``; when
    ``fraction > 0`` and ``available >= 2``, at least one and at most ``available - 1`` (one stays in train)."""
    n = int(math.floor(fraction * total + 0.5))
    if fraction > 0 and available >= 2:
        return min(max(n, 1), available - 1)
    return min(n, available)
