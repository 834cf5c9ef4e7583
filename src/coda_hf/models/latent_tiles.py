"""Latent tiles: a ``(B, C, H, W)`` map as ``T x T`` tiles quantized on their own, and back.

Used by the tokenizers' ``latent_tile_size`` option (:class:`~coda_hf.models.tokenizer_mixin.DiscreteTokenizerMixin`):
the encoder and decoder see the WHOLE image (convolutions, no seams of their own) while the quantizer sees
each ``T x T`` latent tile as one image, so a tokenizer trained on ``T * f`` pixel crops tokenizes a larger
image with exactly the token statistics it was trained on.

Tile order: row-major over the ``(H / T, W / T)`` tile grid, image-major over the batch: tile ``(i, j)`` of
image ``b`` is entry ``b * nh * nw + i * nw + j``. An index map of one level, ``(B * nh * nw, h, w)``, becomes
the ``(B, nh * h, nw * w)`` MOSAIC with tile ``(i, j)``'s ``h x w`` codes at block ``(i, j)``.
"""

from __future__ import annotations

import torch


def tile_grid(height: int, width: int, tile: int) -> tuple[int, int]:
    """``(nh, nw)`` tiles of an ``(H, W)`` map; ``ValueError`` unless both sides are multiples of ``tile``."""
    if tile < 1 or height % tile or width % tile:
        raise ValueError(f"a ({height}, {width}) latent does not split into {tile} x {tile} tiles")
    return height // tile, width // tile


def to_tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B * nh * nw, C, T, T)`` (tile order in the module docstring)."""
    b, c, h, w = x.shape
    nh, nw = tile_grid(h, w, tile)
    return x.reshape(b, c, nh, tile, nw, tile).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, tile, tile)


def from_tiles(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B * nh * nw, C, h, w)`` -> ``(B, C, nh * h, nw * w)``: the inverse of :func:`to_tiles`."""
    nh, nw = grid
    n, c, h, w = x.shape
    b = n // (nh * nw)
    return x.reshape(b, nh, nw, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * h, nw * w)


def to_mosaic(indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One level's per-tile codes ``(B * nh * nw, h, w)`` -> the ``(B, nh * h, nw * w)`` mosaic."""
    return from_tiles(indices[:, None], grid)[:, 0]


def from_mosaic(indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A ``(B, nh * h, nw * w)`` mosaic -> the per-tile codes ``(B * nh * nw, h, w)`` (inverse of :func:`to_mosaic`)."""
    nh, nw = grid
    b, height, width = indices.shape
    if height % nh or width % nw:
        raise ValueError(f"an index map of size ({height}, {width}) does not split into a {nh} x {nw} tile grid")
    h, w = height // nh, width // nw
    return indices.reshape(b, nh, h, nw, w).permute(0, 1, 3, 2, 4).reshape(b * nh * nw, h, w)


__all__ = ["from_mosaic", "from_tiles", "tile_grid", "to_mosaic", "to_tiles"]
