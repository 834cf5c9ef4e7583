"""Multi-scale residual quantization (VAR: Tian et al. 2024), as CODA uses it with its attention quantizer.

At level ``k`` the current residual is area-downsampled to ``(h_k, w_k)``, quantized, bicubic-upsampled back
to the latent size and subtracted; the quantized latent is the sum of the upsampled levels. All levels share
one codebook by default. Token layout: level-major, each level row-major, ``N = sum_k h_k w_k``
(CODA-MAR, 16x16 latents: 680 tokens; CODA-FLUX, 32x32 latents: 2240 tokens).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .base import register_quantizer
from .residual import StackedQuantizer

# Scales of the released CODA models (10 levels each).
MAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # 16x16 latents (MAR VAE, 16x downsampling)
FLUX_SCALES = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)  # 32x32 latents (FLUX VAE, 8x downsampling)


def scaled_size(scale: int, reference: int, size: int) -> int:
    """Side of a level for a latent side ``size``: ``round(scale * size / reference)``, at least 1.

    Rounds half up (not Python's half-to-even) so the layout does not depend on parity. Integer
    arithmetic, ``floor((2 scale size + reference) / (2 reference))``, so that a symbolic ``size``
    (``torch.export`` with a dynamic image size) stays an integer expression.
    """
    if scale == reference:
        return size
    return max(1, (2 * scale * size + reference) // (2 * reference))


def _same_size(x: torch.Tensor, size: tuple[int, int]) -> bool:
    """``x``'s spatial size is ``size``; symbolic sizes (export) count only when provably equal."""
    return all(statically_known_true(a == b) for a, b in zip(x.shape[-2:], size))


def _area_matrix(out_size: int, in_size: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, in)`` matrix of adaptive average pooling: row ``j`` averages inputs
    ``[floor(j in / out), ceil((j + 1) in / out))``, the windows of ``F.interpolate(mode="area")``."""
    j = torch.arange(out_size, device=like.device)
    t = torch.arange(in_size, device=like.device)
    start, end = (j * in_size) // out_size, ((j + 1) * in_size + out_size - 1) // out_size  # (out,)
    inside = (t[None, :] >= start[:, None]) & (t[None, :] < end[:, None])  # (out, in)
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="area")`` as two matrix products ``A_h x A_w^T`` (equal up to float
    rounding); used when exporting, where the sizes may be symbolic."""
    rows = _area_matrix(size[0], x.shape[-2], x)  # (h, H)
    cols = _area_matrix(size[1], x.shape[-1], x)  # (w, W)
    return rows @ x @ cols.t()  # (B, C, h, w)


@register_quantizer("multiscale")
class MultiScaleResidualQuantizer(StackedQuantizer):
    """VAR-style multi-scale residual quantizer (CODA).

    Args:
        dim: latent channels ``C`` (passed on to the inner quantizer).
        scales: strictly increasing level sides for a square latent of side ``scales[-1]`` (the reference
            size), e.g. :data:`MAR_SCALES` for 16x16 latents.
        quantizer: registered name of the inner single-level quantizer (default ``"attention"``, CODA).
        quantizer_kwargs: JSON-safe keyword arguments of the inner quantizer (``dim`` is filled in).
        shared_codebook: one inner quantizer (one codebook) for all levels, as CODA; ``False``: one per level.

    Latent size policy: level ``k`` of an ``(H, W)`` latent has size
    ``(round(s_k H / S), round(s_k W / S))`` (at least 1), ``S = scales[-1]``. For a square latent of the
    reference side this is exactly ``(s_k, s_k)``; other sizes and non-square latents are scaled
    proportionally, and the last level is always the full ``(H, W)``. Use :meth:`level_shapes` to get the
    layout of a given latent size.
    """

    def __init__(
        self,
        dim: int,
        scales: list[int] = MAR_SCALES,
        quantizer: str = "attention",
        quantizer_kwargs: dict[str, Any] | None = None,
        shared_codebook: bool = True,
    ):
        super().__init__()
        if not isinstance(scales, (list, tuple)) or not scales:
            raise ValueError(f"scales must be a non-empty list of ints; got {scales!r}")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in scales):
            raise ValueError(f"scales must be positive ints; got {list(scales)}")
        if any(b <= a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be strictly increasing; got {list(scales)}")
        self.scales = [int(s) for s in scales]
        self._init_stack(dim, len(self.scales), quantizer, quantizer_kwargs, shared_codebook)

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level ``(h_k, w_k)`` for an ``(H, W)`` latent (see the size policy in the class docstring)."""
        if height < 1 or width < 1:
            raise ValueError(f"latent size must be positive; got ({height}, {width})")
        ref = self.scales[-1]
        return [(scaled_size(s, ref, height), scaled_size(s, ref, width)) for s in self.scales]

    def _down(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if _same_size(x, size):  # the top level: area resampling to the same size is the identity
            return x
        if torch.compiler.is_exporting():  # ONNX has no adaptive pooling for sizes known only at run time
            return area_resize(x, size)
        return F.interpolate(x, size=size, mode="area")

    def _up(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if _same_size(x, size):  # bicubic resampling to the same size is the identity too
            return x
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scales={self.scales}, shared_codebook={self.shared_codebook}"
