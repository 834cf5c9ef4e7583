#!/usr/bin/env python
"""Seams of tile-wise tokenization: reconstruction error at 64 px tile borders vs tile interiors.

A tokenizer trained on 64 px crops (16 x 16 latents) can tokenize a 256 px photo in three ways, all at the
same 10,880 tokens (16 x 680) and the same bits per pixel:

* ``tiled`` (the bundled model, ``latent_tile_size: 16``): the VAE encodes and decodes the WHOLE photo, the
  quantizer sees each 16 x 16 latent tile on its own (the statistics it was trained on);
* ``per-tile``: every 64 px crop is encoded, quantized and decoded alone and the crops are pasted together
  (the naive way: the convolutions see a hard edge at every crop border);
* ``whole``: no tiling at all (``latent_tile_size: 0``): the multi-scale levels are scaled to the 64 x 64
  latent (sides 4, 8, 12, ... 64), so the coarse levels span tile borders;

and the continuous VAE (no quantization) is the reference. For each, the mean squared error (8-bit) of the
pixels within ``--border`` px of an internal tile border and of the pixels at least 8 px from every border,
their ratio, and the PSNR of the whole photo.

    python benchmarks/bench_tile_seams.py                                   # the bundled models and photos
    python benchmarks/bench_tile_seams.py --output benchmarks/results/bundled/tile_seams.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path

import torch

TILE = 64


def border_masks(height: int, width: int, tile: int = TILE, border: int = 2, interior: int = 8) -> tuple:
    """``(border, interior)`` boolean ``(H, W)`` masks: pixels within ``border`` px of an INTERNAL tile border
    (between two tiles), and pixels at least ``interior`` px from every tile edge (image edges included)."""

    def to_internal_border(size: int) -> torch.Tensor:  # (size,) distance of each pixel to the nearest one
        c, borders = torch.arange(size)[:, None], torch.arange(tile, size, tile)[None, :]  # border b: between b-1 and b
        if borders.numel() == 0:
            return torch.full((size,), size)
        return torch.where(c < borders, borders - 1 - c, c - borders).min(dim=1).values

    def to_tile_edge(size: int) -> torch.Tensor:
        pos = torch.arange(size) % tile
        return torch.minimum(pos, tile - 1 - pos)

    near = (to_internal_border(height) < border)[:, None] | (to_internal_border(width) < border)[None, :]
    far = (to_tile_edge(height) >= interior)[:, None] & (to_tile_edge(width) >= interior)[None, :]
    return near, far


def seam_errors(recon: torch.Tensor, original: torch.Tensor, tile: int = TILE, border: int = 2) -> dict:
    """MSE (8-bit) at internal tile borders, in tile interiors, their ratio and the PSNR; ``(B, 3, H, W)`` in [-1, 1]."""
    from coda_hf.metrics import psnr, to_uint8_range

    err = (to_uint8_range(recon) - to_uint8_range(original)).pow(2).mean(dim=1)  # (B, H, W)
    near, far = border_masks(*err.shape[-2:], tile=tile, border=border)
    mse_border, mse_interior = float(err[:, near].mean()), float(err[:, far].mean())
    return {"mse_border": mse_border, "mse_interior": mse_interior, "border_over_interior": mse_border / mse_interior,
            "psnr": float(psnr(to_uint8_range(recon), to_uint8_range(original)).mean())}  # fmt: skip


@torch.no_grad()
def reconstructions(coda, vae, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three tokenizations of the module docstring and the continuous VAE, ``(B, 3, H, W)`` each."""
    from coda_hf.models.latent_tiles import from_tiles, tile_grid, to_tiles

    tile = coda.latent_tile_size or 16
    tiled, whole = copy.deepcopy(coda), copy.deepcopy(coda)
    tiled.register_to_config(latent_tile_size=tile)
    whole.register_to_config(latent_tile_size=0)
    crops = to_tiles(images, tile * coda.downsample_factor)
    plain = torch.cat([whole.decode(whole.encode(c[None]).indices) for c in crops])  # one 64 px crop at a time
    return {
        "tiled": tiled.decode(tiled.encode(images).indices),
        "per-tile": from_tiles(plain, tile_grid(*images.shape[-2:], tile * coda.downsample_factor)),
        "whole": whole.decode(whole.encode(images).indices),
        "continuous VAE": vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--coda", default=None, help="CodaVQModel directory (default: the bundled photos-coda)")
    p.add_argument("--vae", default=None, help="AutoencoderKL directory (default: the bundled photos-vae)")
    p.add_argument("--photos", nargs="*", default=None, help="same-size photos, sides multiples of 64 (default: the bundled ones)")
    p.add_argument("--border", type=int, default=2, help="pixels on each side of a tile border counted as border")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    from diffusers import AutoencoderKL

    from coda_hf.bundled import bundled_model, bundled_photos
    from coda_hf.demo import load_photos
    from coda_hf.models import CodaVQModel

    coda = CodaVQModel.from_pretrained(args.coda or bundled_model("photos-coda")).eval()
    vae = AutoencoderKL.from_pretrained(args.vae or bundled_model("photos-vae")).eval()
    paths = [Path(p) for p in args.photos] if args.photos else bundled_photos()
    images = load_photos(paths)
    tile = (coda.latent_tile_size or 16) * coda.downsample_factor
    rows = {name: seam_errors(recon, images, tile, args.border) for name, recon in reconstructions(coda, vae, images).items()}
    print(f"{len(paths)} photos {tuple(images.shape[-2:])}, tiles of {tile} px, border +-{args.border} px, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| tokenization | PSNR | MSE at tile borders | MSE in tile interiors | border / interior |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['mse_border']:.1f} | {r['mse_interior']:.1f} | {r['border_over_interior']:.3f} |")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({
            "photos": [p.name for p in paths], "border": args.border, "tile": tile, "results": rows,
            "machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
