"""Token layouts of latents, the channel projections and the straight-through estimator that the
single-level quantizers (:mod:`.vector`, :mod:`.gumbel`, :mod:`.fsq`, :mod:`.lfq`, :mod:`.attention`) share."""

from __future__ import annotations

import torch
from torch import nn


def to_tokens(z: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B*H*W, C)`` tokens, row-major over ``(B, H, W)``."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_tokens(x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """``(B*H*W, C)`` tokens -> ``(B, C, H, W)`` (inverse of :func:`to_tokens`; a channels-last view)."""
    return x.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


def linear_channels_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear layer on channels-first tokens: ``(B, C_in, N)`` -> ``(B, C_out, N)`` in one batched matmul.

    Applying ``nn.Linear`` to a ``(B, C, H, W)`` latent needs a permute copy to ``(B*H*W, C)`` and back;
    on CPU with a handful of channels that copy costs more than the matmul itself.
    """
    return torch.baddbmm(bias[None, :, None], weight.expand(x.shape[0], -1, -1), x)


def pack_channels_first(digits: torch.Tensor, weights: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """``(B, d, N)`` integer-valued float digits, ``(d,)`` integer place values -> ``(B, N)`` long indices.

    ``sum_i digits_i * weights_i`` as one small matmul; exact in float32 while ``codebook_size <= 2**24``
    and in float64 beyond.
    """
    dtype = torch.float32 if codebook_size <= 2**24 else torch.float64
    return torch.matmul(weights.to(dtype), digits.to(dtype)).long()


def channel_projections(dim: int, code_dim: int) -> tuple[nn.Linear | None, nn.Linear | None]:
    """``(project_in C -> D, project_out D -> C)`` linear layers, or ``(None, None)`` when ``C == D``."""
    if code_dim == dim:
        return None, None
    return nn.Linear(dim, code_dim), nn.Linear(code_dim, dim)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Value of ``hard`` (bit-exact), gradient of ``soft`` (straight-through estimator).

    Written ``hard + (soft - soft.detach())`` rather than ``soft + (hard - soft).detach()`` because
    ``x - x == 0`` exactly in floating point, so eval outputs equal ``indices_to_codes`` bit for bit.
    """
    if not soft.requires_grad:  # inference: nothing to route (and x - x == 0, so the value is the same)
        return hard
    return hard + (soft - soft.detach())


__all__ = ["channel_projections", "from_tokens", "linear_channels_first", "pack_channels_first", "straight_through",
           "to_tokens"]  # fmt: skip
