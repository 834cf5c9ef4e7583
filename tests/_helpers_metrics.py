"""Tiny models and images for the metrics / evaluate-command tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def tiny_vqgan(codebook_size: int = 16, num_levels: int = 2):
    from coda_hf.models.vqgan import VQGANModel

    return VQGANModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4, embed_dim=4,
        mid_block_add_attention=False,
        quantizer={"name": "residual", "num_levels": num_levels, "quantizer": "vq", "shared_codebook": True,
                   "quantizer_kwargs": {"codebook_size": codebook_size}},
    )


def tiny_autoencoder_kl():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, layers_per_block=1,
    )


def write_images(folder: Path, n: int = 5, size: tuple[int, int] = (36, 40), seed: int = 0) -> list[Path]:
    """``n`` smooth random RGB PNGs (half of them in a subfolder, to check recursion)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        path = folder / ("sub" if i % 2 else ".") / f"img_{i}.png"
        image.save(path)
        paths.append(path)
    return paths
