"""The architectures of the authors' released CODA tokenizers (LeapLabTHU/CODA, arXiv 2503.17760).

The released files hold raw state dicts only; everything else (the VAE config, codebook size, query/key
width, LoRA rank and targets, the scale schedule, the latent normalisation) comes from the authors'
training scripts and configs and is fixed here per preset:

* ``"flux-vae"`` (CODA-FLUX): the FLUX.1 VAE (diffusers ``AutoencoderKL``, 16 channels, 8x), 65,536 codes,
  scales 1..32 (2,240 tokens at 256 px), LoRA rank 32 on ``conv1``/``conv2``;
* ``"mar-vae"`` (CODA-MAR): the MAR KL-16 VAE, an LDM-style VAE that diffusers' ``AutoencoderKL``
  represents exactly (``AttnDownEncoderBlock2D`` for the encoder's attention level, ``Downsample2D``
  with padding 0 = the LDM asymmetric ``(0, 1, 0, 1)`` pad, 1x1-conv attention = ``Linear``), 16,384
  codes, scales 1..16 (680 tokens at 256 px), LoRA rank 32 on ``conv1``/``conv2`` and the up/downsample
  convs.

``architecture`` overrides (:func:`original_spec`) describe a checkpoint the authors' code trained at
another size (the tests' tiny checkpoints use them); the released files need none.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from ...quantizers.multiscale import FLUX_SCALES, MAR_SCALES
from ..presets import CONV_AND_RESAMPLE_TARGETS, CONV_TARGETS

# The authors' attention quantizer: RMSNorm(eps=1e-5) on queries and keys (coda/models/attention.py).
ORIGINAL_RMS_NORM_EPS = 1e-5
ORIGINAL_REPO = "https://github.com/LeapLabTHU/CODA"
ORIGINAL_COMMIT = "5358d045f7a057b5d75a39e6e987fd65a6a32ade"
RELEASED_HUB_REPO = "shuidi0020/CODA"  # the authors' model zoo (README of LeapLabTHU/CODA)

# FLUX.1 VAE (black-forest-labs/FLUX.1-dev, vae/config.json).
FLUX_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "act_fn": "silu", "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611,
    "shift_factor": 0.1159, "latents_mean": None, "latents_std": None, "force_upcast": True,
    "use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": True,
}  # fmt: skip

# MAR KL-16 VAE (the authors' MARAutoencoderKL: ch 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks, encoder
# attention at 16x16 = the last level, GroupNorm(32, eps 1e-6), quant_conv / post_quant_conv).
MAR_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4 + ["AttnDownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"] * 5, "block_out_channels": [128, 128, 256, 256, 512],
    "layers_per_block": 2, "act_fn": "silu", "latent_channels": 16, "norm_num_groups": 32, "sample_size": 256,
    "scaling_factor": 0.2325, "shift_factor": None, "latents_mean": None, "latents_std": None, "force_upcast": True,
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}  # fmt: skip

# Keys of ``architecture`` overrides.
OVERRIDABLE = ("vae_config", "codebook_size", "attn_dim", "lora_rank", "scales")


@dataclass(frozen=True)
class OriginalSpec:
    """Everything about one released CODA model that its state dicts do not say.

    ``vae_layout``: ``"diffusers"`` (keys as diffusers' ``AutoencoderKL``) or ``"ldm"`` (the MAR/LDM names
    ``encoder.down.{i}.block.{j}``, ``mid.attn_1``...). ``paper``: the authors' reported figures for the
    model card (paper Table 2, ImageNet 256x256).
    """

    preset: str
    title: str
    vae_layout: str
    vae_config: dict[str, Any]
    codebook_size: int
    attn_dim: int
    lora_rank: int
    lora_targets: list[str]
    scales: list[int]
    shift_factor: float
    scaling_factor: float
    hub_folder: str
    base_vae: str
    paper: dict[str, Any] = field(default_factory=dict)


ORIGINAL_SPECS: dict[str, OriginalSpec] = {
    "flux-vae": OriginalSpec(
        preset="flux-vae", title="CODA-FLUX", vae_layout="diffusers", vae_config=FLUX_VAE_CONFIG,
        codebook_size=65536, attn_dim=32, lora_rank=32, lora_targets=list(CONV_TARGETS), scales=list(FLUX_SCALES),
        shift_factor=0.1159, scaling_factor=0.3611, hub_folder="flux_v65536",
        base_vae="black-forest-labs/FLUX.1-dev (vae/)",
        paper={"rfid": 0.43, "psnr": 25.9, "ssim": 77.1, "utilization": 100, "train_iters": "50K"},
    ),
    "mar-vae": OriginalSpec(
        preset="mar-vae", title="CODA-MAR", vae_layout="ldm", vae_config=MAR_VAE_CONFIG,
        codebook_size=16384, attn_dim=32, lora_rank=32, lora_targets=list(CONV_AND_RESAMPLE_TARGETS),
        scales=list(MAR_SCALES), shift_factor=0.0, scaling_factor=0.2325, hub_folder="mar_v16384",
        base_vae="jadechoghari/mar (kl16.safetensors, the MAR KL-16 VAE)",
        # Table 2 has two CODA-MAR rows: 1.43 with 16,384 codes (this release) and 1.34 with 65,536.
        paper={"rfid": 1.43, "psnr": 22.0, "ssim": 59.4, "utilization": 100, "train_iters": "50K"},
    ),
}  # fmt: skip


def original_spec(preset: str, architecture: dict[str, Any] | None = None) -> OriginalSpec:
    """The spec of ``preset``, with ``architecture`` overrides (keys :data:`OVERRIDABLE`; ``vae_config``
    entries update the preset's VAE config). ``ValueError`` for an unknown preset or key."""
    if preset not in ORIGINAL_SPECS:
        raise ValueError(
            f"unknown preset {preset!r} for the authors' checkpoints; known: {sorted(ORIGINAL_SPECS)}"
        )
    spec = ORIGINAL_SPECS[preset]
    spec = replace(spec, vae_config=copy.deepcopy(spec.vae_config), lora_targets=list(spec.lora_targets))
    if not architecture:
        return spec
    if not isinstance(architecture, dict):
        raise ValueError(f"architecture overrides must be a JSON object; got {type(architecture).__name__}")
    unknown = sorted(set(architecture) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"architecture overrides: unknown keys {unknown}; allowed: {list(OVERRIDABLE)}")
    changes = {k: copy.deepcopy(v) for k, v in architecture.items() if k != "vae_config"}
    vae_config = {**spec.vae_config, **dict(architecture.get("vae_config") or {})}
    return replace(spec, vae_config=vae_config, **changes)
