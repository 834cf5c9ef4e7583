"""The one output type every quantizer returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class QuantizerOutput:
    """What every quantizer in :mod:`coda_hf.quantizers` returns.

    Attributes:
        quantized: ``(B, C, H, W)`` quantized latents. In training mode gradients reach the
            input through a straight-through estimator; in eval mode this equals
            ``quantizer.indices_to_codes(indices)`` exactly.
        indices: one ``(B, h_l, w_l)`` long tensor per quantization level ``l``. Single-level
            quantizers return a list of one; multi-scale quantizers return each level at its
            own size (``quantizer.level_shapes(H, W)``).
        losses: named, already-weighted scalar losses (e.g. ``"commitment"``, ``"codebook"``,
            ``"entropy"``). Their sum is :attr:`loss`.
        stats: named detached statistics: ``"perplexity"`` (scalar), ``"utilization"``
            (scalar, fraction of codes used in the running window) and ``"quant_error"``
            (``(L,)`` mean squared error of the running reconstruction after each level).
    """

    quantized: torch.Tensor
    indices: list[torch.Tensor]
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """Sum of :attr:`losses` (zero when the quantizer has no loss)."""
        if not self.losses:
            return self.quantized.new_zeros(())
        return torch.stack([v.float() for v in self.losses.values()]).sum()

    @property
    def token_ids(self) -> torch.Tensor:
        """``(B, N)`` tokens in level order, each level flattened row-major.

        ``N = sum(h_l * w_l)``; this is the sequence a prior (MaskGIT, AR) models.
        """
        return flatten_indices(self.indices)


def flatten_indices(indices: list[torch.Tensor]) -> torch.Tensor:
    """``[(B, h_l, w_l)] * L`` -> ``(B, sum h_l w_l)``, level-major then row-major."""
    return torch.cat([idx.reshape(idx.shape[0], -1) for idx in indices], dim=1)


def unflatten_indices(token_ids: torch.Tensor, level_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Inverse of :func:`flatten_indices` for the given per-level ``(h, w)`` shapes."""
    if token_ids.ndim != 2:
        raise ValueError(f"token_ids must be (B, N); got shape {tuple(token_ids.shape)}")
    expected = sum(h * w for h, w in level_shapes)
    if token_ids.shape[1] != expected:
        raise ValueError(
            f"token_ids has {token_ids.shape[1]} tokens per image but the levels {level_shapes} need {expected}"
        )
    out, start = [], 0
    for h, w in level_shapes:
        out.append(token_ids[:, start : start + h * w].reshape(-1, h, w))
        start += h * w
    return out
