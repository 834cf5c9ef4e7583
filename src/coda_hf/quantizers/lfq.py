"""Lookup-free quantization (LFQ, MAGVIT-v2: Yu et al. 2023, "Language Model Beats Diffusion")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BaseQuantizer, register_quantizer
from .layout import channel_projections, linear_channels_first, pack_channels_first, straight_through
from .output import QuantizerOutput
from .stats import UsageTracker


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy (nats) of Bernoulli(p)."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@register_quantizer("lfq")
class LookupFreeQuantizer(BaseQuantizer):
    """Each of ``d = log2(codebook_size)`` channels is quantized to its sign, ``{-1, +1}``.

    Args:
        dim: latent channels ``C``; linear projections ``C -> d`` and ``d -> C`` are added when ``C != d``.
        codebook_size: implicit codebook ``2^d`` (must be a power of two >= 2).
        entropy_weight: weight of ``losses["entropy"] = E[H(q(z))] - diversity_gamma * H(E[q(z)])``
            (training mode only).
        entropy_temperature: ``tau`` of the code distribution ``q(c|z) ~ exp(-||z - c||^2 / tau)``.
        diversity_gamma: weight of the codebook-entropy term inside the entropy loss.
        commitment_weight: weight of ``losses["commitment"] = mse(z, sg[q])``.

    ``q(c|z)`` factorises over bits because the codes are the corners of ``{-1, 1}^d``:
    ``q(bit_i = +1 | z) = sigmoid(4 z_i / tau)``, so the per-sample entropy is a sum of ``d`` binary
    entropies (exact) and is computed in ``O(N d)`` instead of ``O(N 2^d)``. The codebook entropy uses the
    same factorisation of the batch-mean distribution (sum of per-bit entropies of the mean bit
    probabilities, an upper bound of the joint entropy, as in BSQ, Zhao et al. 2024).
    Index: bit ``i`` (1 for ``+1``) has weight ``2^(d-1-i)`` (channel 0 most significant).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 2**10,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.01,
        diversity_gamma: float = 1.0,
        commitment_weight: float = 0.25,
    ):
        super().__init__()
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two >= 2 (2^d codes); got {codebook_size}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be > 0; got {entropy_temperature}")
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)
        self.codebook_dim = self.codebook_size.bit_length() - 1  # d
        self.num_levels = 1
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.diversity_gamma = float(diversity_gamma)
        self.commitment_weight = float(commitment_weight)
        self.register_buffer(
            "_bit_weights", 2 ** torch.arange(self.codebook_dim - 1, -1, -1, dtype=torch.long), persistent=False
        )  # (d,)
        self.project_in, self.project_out = channel_projections(self.dim, self.codebook_dim)
        self.usage = UsageTracker(self.codebook_size)

    # Channels-first throughout, as FSQ: tokens are (B, d, H*W), no permute copies.

    def _codes_to_latents(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(B, d, H*W)`` codes in ``{-1, 1}`` -> ``(B, C, H, W)``."""
        if self.project_out is not None:
            codes = linear_channels_first(codes, self.project_out.weight, self.project_out.bias)
        return codes.reshape(codes.shape[0], -1, height, width)

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        idx = indices[0]  # (B, H, W)
        b, h, w = idx.shape
        bits = (idx.reshape(b, 1, h * w).long() // self._bit_weights[:, None]) % 2  # (B, d, H*W) in {0, 1}
        codes = bits.float() * 2 - 1  # the same op as the forward's `hard`
        return self._codes_to_latents(codes, h, w)

    def entropy_loss(self, x: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """MAGVIT-v2 entropy loss of pre-quantization latents with the ``d`` bits along ``channel_dim``
        (``(N, d)`` tokens by default; the forward passes ``(B, d, N)``), factorised over bits."""
        p_plus = torch.sigmoid(4 * x.float() / self.entropy_temperature)  # q(bit = +1 | z)
        per_sample = _binary_entropy(p_plus).sum(dim=channel_dim).mean()
        token_dims = [i for i in range(p_plus.dim()) if i != channel_dim % p_plus.dim()]
        codebook = _binary_entropy(p_plus.mean(dim=token_dims)).sum()
        return per_sample - self.diversity_gamma * codebook

    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        self._check_input(z)
        b, c, h, w = z.shape
        x = z.reshape(b, c, h * w)
        if self.project_in is not None:
            x = linear_channels_first(x, self.project_in.weight, self.project_in.bias)  # (B, d, H*W)
        bits = x.detach() > 0  # (B, d, H*W)
        hard = bits.to(x.dtype) * 2 - 1
        codes = straight_through(hard, x)  # (B, d, H*W) in {-1, 1}, ST grads
        indices = pack_channels_first(bits, self._bit_weights, self.codebook_size).reshape(b, h, w)
        losses = {"commitment": self.commitment_weight * F.mse_loss(x, hard)}
        if self.training:  # a regulariser on batch statistics: training only (as MAGVIT-v2)
            losses["entropy"] = self.entropy_weight * self.entropy_loss(x, channel_dim=1)
        quantized = self._codes_to_latents(codes, h, w)  # (B, C, H, W) contiguous
        if self.training:
            self.usage.update(indices)
        return self._level_output(quantized, indices, losses, quantized, z, with_losses)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size} (d={self.codebook_dim})"
