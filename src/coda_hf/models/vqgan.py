"""VQGAN trained from scratch (Esser et al. 2021): the baseline next to CODA.

diffusers ``Encoder`` -> ``quant_conv`` -> any :mod:`coda_hf.quantizers` quantizer ->
``post_quant_conv`` -> diffusers ``Decoder``. Same ``encode`` / ``decode`` / ``forward`` interface
as :class:`~coda_hf.models.CodaVQModel`, so trainers, pipelines and priors take either.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..quantizers.base import quantizer_from_config
from .outputs import CodaEncoderOutput, CodaVQOutput
from .tokenizer_mixin import DiscreteTokenizerMixin, check_latent_tile_size

DEFAULT_QUANTIZER = {"name": "vq", "codebook_size": 1024}


# The same output types as CodaVQModel (one typed output per concept); the names below are aliases.
VQGANEncoderOutput = CodaEncoderOutput
VQGANOutput = CodaVQOutput


class VQGANModel(DiscreteTokenizerMixin, ModelMixin, ConfigMixin):
    """VQGAN from scratch with a pluggable quantizer.

    Args:
        in_channels / out_channels: image channels.
        block_out_channels: encoder/decoder widths per resolution; the downsample factor is
            ``2 ** (len(block_out_channels) - 1)``. Taming's f16 VQGAN: ``(128, 128, 256, 256, 512)``.
        layers_per_block: ResNet blocks per resolution.
        norm_num_groups: GroupNorm groups (must divide every width).
        act_fn: activation.
        latent_channels: encoder output channels (taming ``z_channels``).
        embed_dim: quantizer channels; ``quant_conv`` maps ``latent_channels -> embed_dim``.
        mid_block_add_attention: self-attention in the encoder/decoder middle blocks.
        quantizer: ``{"name": <registered quantizer>, **kwargs}``, checked and typed by the quantizer's own
            signature (:func:`~coda_hf.quantizers.base.quantizer_config`); ``dim`` defaults to ``embed_dim``. Default
            ``{"name": "vq", "codebook_size": 1024}``. The saved config holds the quantizer's full
            argument set.
        latent_tile_size: ``T > 0`` quantizes each ``T x T`` latent tile on its own (encoder and decoder see
            the whole image); 0 (default): the whole latent. See :class:`~coda_hf.models.CodaVQModel`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        latent_channels: int = 256,
        embed_dim: int = 256,
        mid_block_add_attention: bool = True,
        quantizer: dict[str, Any] | None = None,
        latent_tile_size: int = 0,
    ):
        super().__init__()
        check_latent_tile_size(latent_tile_size)
        block_out_channels = tuple(block_out_channels)
        if not block_out_channels:
            raise ValueError("block_out_channels must list at least one width")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={norm_num_groups} must divide every block_out_channels entry; {bad} do not"
            )
        # diffusers' Encoder / Decoder of this shape (what the two sides share)
        shape = {"block_out_channels": block_out_channels, "layers_per_block": layers_per_block,
                 "norm_num_groups": norm_num_groups, "act_fn": act_fn, "mid_block_add_attention": mid_block_add_attention}  # fmt: skip
        levels = len(block_out_channels)
        self.encoder = Encoder(in_channels=in_channels, out_channels=latent_channels,
                               down_block_types=("DownEncoderBlock2D",) * levels, double_z=False, **shape)  # fmt: skip
        self.quant_conv = nn.Conv2d(latent_channels, embed_dim, 1)
        self.quantizer = quantizer_from_config(DEFAULT_QUANTIZER if quantizer is None else quantizer, embed_dim, "embed_dim")
        self.post_quant_conv = nn.Conv2d(embed_dim, latent_channels, 1)
        self.decoder = Decoder(in_channels=latent_channels, out_channels=out_channels,
                               up_block_types=("UpDecoderBlock2D",) * levels, **shape)  # fmt: skip
        # Store the quantizer's complete, JSON-safe arguments so from_pretrained rebuilds it exactly.
        self.register_to_config(quantizer=self.quantizer.to_dict())

    # ----------------------------------------------------------------- geometry
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the quantized latents (``embed_dim``)."""
        return int(self.config.embed_dim)

    @property
    def image_channels(self) -> int:
        return int(self.config.in_channels)

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the VQGAN adaptive GAN weight)."""
        return self.decoder.conv_out.weight

    # ----------------------------------------------------------------- encode / decode
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, embed_dim, H/f, W/f)`` continuous latents (before quantization)."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim, h, w)`` latents (quantized or not) -> ``(B, 3, h f, w f)`` images."""
        self._check_latents(latents)
        return self.decoder(self.post_quant_conv(latents))
