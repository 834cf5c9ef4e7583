"""Finite scalar quantization (FSQ, Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

from __future__ import annotations

import math

import torch

from .base import BaseQuantizer, register_quantizer
from .layout import channel_projections, linear_channels_first, pack_channels_first, straight_through
from .output import QuantizerOutput
from .stats import UsageTracker


@register_quantizer("fsq")
class FSQuantizer(BaseQuantizer):
    """Each of ``d = len(levels)`` channels is bounded and rounded to ``levels[i]`` values.

    Args:
        dim: latent channels ``C``; linear projections ``C -> d`` and ``d -> C`` are added when ``C != d``.
        levels: values per channel, e.g. ``[8, 5, 5, 5]`` (implicit codebook ``prod(levels)`` = 1000).
        eps: the paper's ``1e-3`` margin of the bound.

    Bound (paper, appendix A.1): ``half_l = (L - 1)(1 + eps) / 2``, ``offset = 0.5`` for even ``L`` else 0,
    ``shift = atanh(offset / half_l)``, ``bounded = tanh(z + shift) * half_l - offset``; round with a
    straight-through gradient, then divide by ``L // 2`` so codes lie in ``[-1, 1]``. The integer code of
    channel ``i`` lies in ``[-(L_i // 2), (L_i - 1) - L_i // 2]``; the index packs the digits
    ``code_i + L_i // 2`` in mixed radix with channel 0 least significant.
    """

    def __init__(self, dim: int, levels: list[int] = (8, 5, 5, 5), eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels] if isinstance(levels, (list, tuple)) else levels
        if not isinstance(levels, list) or not levels or any(v < 2 for v in levels):
            raise ValueError(f"levels must be a non-empty list of ints >= 2; got {levels!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self.dim = int(dim)
        self.levels = levels
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.num_levels = 1
        self.eps = float(eps)
        lv = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), lv[:-1]]), dim=0)  # (d,) mixed radix
        half_l = (lv.double() - 1) * (1 + self.eps) / 2
        offset = (lv % 2 == 0).double() * 0.5
        # Constants of the bound and the packing, (d,) each; derived from `levels`, so not saved.
        # basis . (L // 2) as a Python int, from `levels` alone: no device sync, and buildable on the meta device
        self._pack_offset = sum(v // 2 * math.prod(levels[:i]) for i, v in enumerate(levels))
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_levels", lv // 2, persistent=False)  # integer code + L // 2 = digit
        self.register_buffer("_half_width", (lv // 2).float(), persistent=False)
        self.register_buffer("_bound_scale", half_l.float(), persistent=False)
        self.register_buffer("_bound_offset", offset.float(), persistent=False)
        self.register_buffer("_bound_shift", torch.atanh(offset / half_l).float(), persistent=False)
        self.project_in, self.project_out = channel_projections(self.dim, self.codebook_dim)
        self.usage = UsageTracker(self.codebook_size)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` -> values in ``(-L/2, L/2)`` per channel, shifted so even ``L`` rounds to ``L`` values."""
        return self._squash(x + self._bound_shift, channel_dim=-1)

    def _squash(self, shifted: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """``tanh(shifted) * half_l - offset`` with the ``(d,)`` constants laid along ``channel_dim``."""
        shape = [-1] + [1] * (-channel_dim - 1)  # (d,) for the last dim, (d, 1) for dim -2
        return torch.addcmul(-self._bound_offset.view(shape), torch.tanh(shifted), self._bound_scale.view(shape))

    # The forward pass works channels-first on ``(B, d, H*W)``: the projections are batched matmuls on
    # the NCHW input, so no (B, H, W, C) permute copy is made and the output is contiguous NCHW.

    def _bounded(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, d, H*W)`` float32 bounded values (:meth:`bound`, channels-first)."""
        b, c, h, w = z.shape
        x = z.reshape(b, c, h * w).float()
        if self.project_in is not None:  # tanh(W z + bias + shift): the shift rides on the bias
            x = linear_channels_first(x, self.project_in.weight.float(), self.project_in.bias.float() + self._bound_shift)
        else:
            x = x + self._bound_shift[:, None]  # (d, 1) over the H*W tokens
        return self._squash(x, channel_dim=-2)

    def _codes_to_latents(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(B, d, H*W)`` integer-valued codes -> ``(B, C, H, W)``: normalise to ``[-1, 1]``, project out.

        The ``1 / (L // 2)`` normalisation is folded into the ``(C, d)`` output weight. Forward and
        :meth:`indices_to_codes` both go through here, so their outputs agree bit for bit.
        """
        b = codes.shape[0]
        if self.project_out is not None:
            weight = self.project_out.weight.float() / self._half_width  # (C, d)
            x = linear_channels_first(codes, weight, self.project_out.bias.float())
        else:
            x = codes / self._half_width[:, None]
        return x.reshape(b, -1, height, width)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` integer codes -> ``(...)`` long indices in ``[0, prod(levels))``."""
        return self._pack(codes.round().long())

    def _pack(self, int_codes: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` long codes -> ``(...)`` indices: digits ``code + L // 2`` in mixed radix."""
        return ((int_codes + self._half_levels) * self._basis).sum(dim=-1)

    def _pack_channels_first(self, hard: torch.Tensor) -> torch.Tensor:
        """``(B, d, N)`` integer-valued float codes -> ``(B, N)`` long indices (same packing as :meth:`_pack`):
        ``sum_i (code_i + L_i // 2) * basis_i = basis . code + basis . (L // 2)``."""
        return pack_channels_first(hard, self._basis, self.codebook_size) + self._pack_offset

    def indices_to_integer_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(...)`` long indices -> ``(..., d)`` integer codes (as float)."""
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels
        return (digits - self._half_levels).float()

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        idx = indices[0]  # (B, H, W)
        b, h, w = idx.shape
        codes = self.indices_to_integer_codes(idx.reshape(b, h * w))  # (B, H*W, d)
        return self._codes_to_latents(codes.transpose(1, 2).contiguous(), h, w)

    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        self._check_input(z)
        b, _, h, w = z.shape
        bounded = self._bounded(z)  # (B, d, H*W)
        hard = bounded.detach().round()  # (B, d, H*W) integer codes
        codes = straight_through(hard, bounded)  # ST grads
        indices = self._pack_channels_first(hard).reshape(b, h, w)  # (B, H, W)
        quantized = self._codes_to_latents(codes, h, w).to(z.dtype)  # (B, C, H, W) contiguous
        if self.training:
            self.usage.update(indices)
        return self._level_output(quantized, indices, {}, quantized, z, with_losses)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, levels={self.levels}, codebook_size={self.codebook_size}"
