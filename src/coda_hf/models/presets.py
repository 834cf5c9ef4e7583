"""Named recipes for :meth:`CodaVQModel.from_vae`: latent factors, quantizer scales and LoRA targets.

Numbers from the CODA paper and the authors' code (see ``coda-facts.md``): FLUX VAE (16 channels, 8x,
shift 0.1159, scale 0.3611, scales 1..32 over 32x32 latents -> 2240 tokens at 256 px), MAR VAE
(16 channels, 16x, scale 0.2325, scales 1..16 over 16x16 latents -> 680 tokens at 256 px). The SD/SDXL
VAEs (4 channels, 8x) use the FLUX scale schedule (32x32 latents at 256 px).
"""

from __future__ import annotations

import copy
from typing import Any

from ..quantizers.multiscale import FLUX_SCALES, MAR_SCALES

# Conv2d layers that get LoRA (peft matches module names by suffix): resnet convs in encoder and decoder.
CONV_TARGETS = ["conv1", "conv2"]
# MAR additionally adapts the down/upsampling convs (authors' code).
CONV_AND_RESAMPLE_TARGETS = ["conv1", "conv2", "downsamplers.0.conv", "upsamplers.0.conv"]

# Released CODA configs: 10 levels, one shared codebook of 65536 codes, attention quantizer.
DEFAULT_CODEBOOK_SIZE = 65536
DEFAULT_LORA_RANK = 32


def coda_quantizer(scales, codebook_size: int = DEFAULT_CODEBOOK_SIZE, **attention_kwargs: Any) -> dict[str, Any]:
    """``{"name": "multiscale", ...}`` config of CODA's multi-scale residual attention quantizer."""
    return {
        "name": "multiscale",
        "scales": list(scales),
        "quantizer": "attention",
        "quantizer_kwargs": {"codebook_size": int(codebook_size), **attention_kwargs},
        "shared_codebook": True,
    }


def _recipe(latent_channels: int, downsample_factor: int, scaling_factor: float, scales, lora_targets=CONV_TARGETS,
            shift_factor: float = 0.0) -> dict[str, Any]:
    """A preset: the VAE's latent shape and factors, CODA's quantizer over ``scales``, rank-32 LoRA."""
    return {
        "latent_channels": latent_channels, "downsample_factor": downsample_factor, "shift_factor": shift_factor,
        "scaling_factor": scaling_factor, "quantizer": coda_quantizer(scales),
        "lora": {"rank": DEFAULT_LORA_RANK, "alpha": DEFAULT_LORA_RANK, "target_modules": list(lora_targets)},
    }  # fmt: skip


PRESETS: dict[str, dict[str, Any]] = {
    "sd-vae": _recipe(4, 8, 0.18215, FLUX_SCALES),
    "sdxl-vae": _recipe(4, 8, 0.13025, FLUX_SCALES),
    "flux-vae": _recipe(16, 8, 0.3611, FLUX_SCALES, shift_factor=0.1159),
    "mar-vae": _recipe(16, 16, 0.2325, MAR_SCALES, CONV_AND_RESAMPLE_TARGETS),
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name``; ``ValueError`` listing the known presets otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
