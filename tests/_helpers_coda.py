"""Tiny CODA models for tests (AutoencoderKL with widths (8, 16), 4 latent channels, 32 px images)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from coda_hf.models import CodaVQModel

TINY_QUANTIZER = {"name": "multiscale", "scales": [1, 2, 4], "quantizer": "attention",
                  "quantizer_kwargs": {"codebook_size": 32}}  # fmt: skip
TINY_LORA = {"rank": 2, "alpha": 4, "target_modules": ["conv1", "conv2"]}


def tiny_vae(seed: int = 0, latent_channels: int = 4, scaling_factor: float = 0.5, shift_factor=None) -> AutoencoderKL:
    """Random AutoencoderKL, downsample factor 2 (two blocks), 32 px sample size."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=latent_channels, norm_num_groups=8,
        sample_size=32, scaling_factor=scaling_factor, shift_factor=shift_factor,
    ).eval()  # fmt: skip


def perturb_lora(model: CodaVQModel, std: float = 0.05, seed: int = 1) -> None:
    """Make LoRA matter: lora_B starts at zero, so give it random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def tiny_coda(lora=None, seed: int = 0, **kwargs) -> CodaVQModel:
    """Tiny CodaVQModel from :func:`tiny_vae` with LoRA (perturbed so it changes outputs)."""
    model = CodaVQModel.from_vae(tiny_vae(seed), quantizer=TINY_QUANTIZER, lora=TINY_LORA if lora is None else lora,
                                 **kwargs)  # fmt: skip
    perturb_lora(model)
    return model.eval()


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(B, 3, size, size) smooth random images in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
