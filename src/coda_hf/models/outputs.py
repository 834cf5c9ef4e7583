"""Typed outputs of :class:`~coda_hf.models.CodaVQModel` (one dataclass per concept)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class CodaEncoderOutput(BaseOutput):
    """``CodaVQModel.encode`` result.

    Attributes:
        indices: one ``(B, h_l, w_l)`` long tensor per quantization level ``l``.
        quantized: ``(B, C, h, w)`` quantized NORMALISED latents ``(vae_latent - shift) * scale``
            (what :meth:`CodaVQModel.decode_latents` consumes).
        latents: ``(B, C, h, w)`` continuous normalised latents before quantization.
        token_ids: ``(B, N)`` level-major flattened indices, ``N = sum_l h_l w_l`` (the prior's sequence).
        stats: the quantizer's detached statistics of this batch (``QuantizerOutput.stats``: ``"quant_error"``
            ``(L,)``, ``"perplexity"``, ``"utilization"``), so an evaluation needs no second quantization.
    """

    indices: list[torch.Tensor]
    quantized: torch.Tensor
    latents: torch.Tensor
    token_ids: torch.Tensor
    stats: dict[str, torch.Tensor] | None = None


@dataclass
class CodaVQOutput(BaseOutput):
    """``CodaVQModel.forward`` result: reconstruction plus the quantizer's losses and statistics.

    Attributes:
        sample: ``(B, 3, H, W)`` reconstruction, approximately in ``[-1, 1]``.
        losses: named, already-weighted scalar quantizer losses (``QuantizerOutput.losses``).
        stats: named detached quantizer statistics (``QuantizerOutput.stats``).
        indices: one ``(B, h_l, w_l)`` tensor per level.
        quantized: ``(B, C, h, w)`` quantized normalised latents.
        latents: ``(B, C, h, w)`` continuous normalised latents.
    """

    sample: torch.Tensor
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    indices: list[torch.Tensor]
    quantized: torch.Tensor
    latents: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """Sum of the quantizer losses (zero when there are none)."""
        if not self.losses:
            return self.sample.new_zeros(())
        return torch.stack([v.float() for v in self.losses.values()]).sum()
