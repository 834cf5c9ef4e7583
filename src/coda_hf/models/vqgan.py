"""VQGAN trained from scratch (Esser et al. 2021): the baseline next to CODA.

diffusers ``Encoder`` -> ``quant_conv`` -> any :mod:`coda_hf.quantizers` quantizer ->
``post_quant_conv`` -> diffusers ``Decoder``. Same ``encode`` / ``decode`` / ``forward`` interface
as :class:`~coda_hf.models.CodaVQModel`, so trainers, pipelines and priors take either.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..quantizers import build_quantizer
from ..quantizers.output import flatten_indices
from .outputs import CodaEncoderOutput, CodaVQOutput

DEFAULT_QUANTIZER = {"name": "vq", "codebook_size": 1024}


# The same output types as CodaVQModel (one typed output per concept); the names below are aliases.
VQGANEncoderOutput = CodaEncoderOutput
VQGANOutput = CodaVQOutput


class VQGANModel(ModelMixin, ConfigMixin):
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
        quantizer: ``{"name": <registered quantizer>, **kwargs}`` for
            :func:`coda_hf.quantizers.build_quantizer`; ``dim`` defaults to ``embed_dim``. Default
            ``{"name": "vq", "codebook_size": 1024}``. The saved config holds the quantizer's full
            argument set.
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
    ):
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        if not block_out_channels:
            raise ValueError("block_out_channels must list at least one width")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={norm_num_groups} must divide every block_out_channels entry; {bad} do not"
            )
        qcfg = dict(DEFAULT_QUANTIZER if quantizer is None else quantizer)
        if "name" not in qcfg:
            raise ValueError(f"quantizer config needs a 'name' (a registered quantizer); got {qcfg}")
        name = qcfg.pop("name")
        qcfg.setdefault("dim", embed_dim)
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            double_z=False,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.quant_conv = nn.Conv2d(latent_channels, embed_dim, 1)
        self.quantizer = build_quantizer(name, **qcfg)
        if getattr(self.quantizer, "dim", embed_dim) != embed_dim:
            raise ValueError(f"quantizer dim {self.quantizer.dim} must equal embed_dim {embed_dim}")
        self.post_quant_conv = nn.Conv2d(embed_dim, latent_channels, 1)
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        # Store the quantizer's complete, JSON-safe arguments so from_pretrained rebuilds it exactly.
        self.register_to_config(quantizer=self.quantizer.to_dict())

    @property
    def quantizer(self):
        """The quantizer module. (A property: the config key of the same name holds its arguments, and
        diffusers' ``ModelMixin.__getattr__`` would otherwise answer ``model.quantizer`` with that dict.)"""
        return self._modules["quantizer"]

    @quantizer.setter
    def quantizer(self, module):
        self._modules["quantizer"] = module

    # ----------------------------------------------------------------- geometry
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    @property
    def latent_channels(self) -> int:
        """Channels of the quantized latents (``embed_dim``)."""
        return int(self.config.embed_dim)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid of an ``(H, W)`` image; ``ValueError`` unless both are multiples of the factor."""
        f = self.downsample_factor
        if height < f or width < f or height % f or width % f:
            raise ValueError(
                f"image size ({height}, {width}) must be a positive multiple of the downsample factor {f}"
            )
        return height // f, width // f

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level ``(h, w)`` token grids for an ``(H, W)`` IMAGE."""
        return self.quantizer.level_shapes(*self.latent_size(height, width))

    def num_tokens(self, height: int, width: int) -> int:
        return sum(h * w for h, w in self.level_shapes(height, width))

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the VQGAN adaptive GAN weight)."""
        return self.decoder.conv_out.weight

    # ----------------------------------------------------------------- encode / decode
    def _check_images(self, images: torch.Tensor) -> None:
        c = self.config.in_channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != c:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, {c}, H, W) tensor in [-1, 1]; got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor in [-1, 1]; got dtype {images.dtype}")
        self.latent_size(*images.shape[-2:])

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, embed_dim, H/f, W/f)`` continuous latents (before quantization)."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim, h, w)`` latents (quantized or not) -> ``(B, 3, h f, w f)`` images."""
        if (
            not isinstance(latents, torch.Tensor)
            or latents.ndim != 4
            or latents.shape[1] != self.latent_channels
        ):
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a (B, {self.latent_channels}, h, w) tensor; got {shape}")
        return self.decoder(self.post_quant_conv(latents))

    def encode(self, images: torch.Tensor) -> CodaEncoderOutput:
        """``(B, 3, H, W)`` images in ``[-1, 1]`` -> indices per level, quantized latents, token ids."""
        latents = self.encode_latents(images)
        q = self.quantizer(latents)
        return CodaEncoderOutput(
            indices=q.indices, quantized=q.quantized, latents=latents, token_ids=flatten_indices(q.indices)
        )

    def _infer_latent_size(self, num_tokens: int) -> tuple[int, int]:
        for s in range(1, int(math.isqrt(num_tokens)) + 2):
            if self.quantizer.num_tokens(s, s) == num_tokens:
                return s, s
        raise ValueError(
            f"cannot infer a square latent size from {num_tokens} tokens per image; pass latent_size=(h, w)"
        )

    def indices_to_latents(
        self, indices: list[torch.Tensor] | torch.Tensor, latent_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Indices per level, or ``(B, N)`` token ids, -> ``(B, embed_dim, h, w)`` quantized latents.

        ``latent_size``: the LATENT grid ``(h, w)`` for token ids (inferred for square grids when omitted).
        """
        if isinstance(indices, torch.Tensor):
            if indices.ndim != 2:
                raise ValueError(
                    f"token ids must be (B, N); got shape {tuple(indices.shape)} (or pass a list per level)"
                )
            if latent_size is None:
                latent_size = self._infer_latent_size(indices.shape[1])
        return self.quantizer.decode_indices(indices, latent_size=latent_size)

    def decode(
        self, indices: list[torch.Tensor] | torch.Tensor, latent_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Indices (list of ``(B, h_l, w_l)``) or ``(B, N)`` token ids -> ``(B, 3, H, W)`` images in ~[-1, 1]."""
        return self.decode_latents(self.indices_to_latents(indices, latent_size))

    def forward(self, images: torch.Tensor) -> CodaVQOutput:
        """Reconstruct ``images``; returns the sample with the quantizer's losses and statistics."""
        latents = self.encode_latents(images)
        q = self.quantizer(latents)
        return CodaVQOutput(
            sample=self.decode_latents(q.quantized), losses=q.losses, stats=q.stats, indices=q.indices,
            quantized=q.quantized, latents=latents,
        )  # fmt: skip
