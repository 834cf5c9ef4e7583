"""Vector quantization (VQ-VAE, van den Oord et al. 2017) with EMA codebooks and dead-code restart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_, broadcast_
from .base import BaseQuantizer, register_quantizer
from .layout import channel_projections, from_tokens, straight_through, to_tokens
from .output import QuantizerOutput
from .search import nearest_code
from .stats import UsageTracker

# ---------------------------------------------------------------------------------------------
# VectorQuantizer
# ---------------------------------------------------------------------------------------------


@register_quantizer("vq")
class VectorQuantizer(BaseQuantizer):
    """Nearest-neighbour vector quantizer with a learned (or EMA) codebook.

    Args:
        dim: latent channels ``C``.
        codebook_size: number of codes ``K``.
        codebook_dim: code width ``D``; when set and ``!= dim``, linear projections ``C -> D`` (before the
            search) and ``D -> C`` (after) are added. Losses are computed in code space.
        distance: ``"l2"`` or ``"cosine"`` (codes and latents are l2-normalised before the search, as in
            ViT-VQGAN; the quantized vectors are the normalised codes).
        beta: commitment weight (``losses["commitment"] = beta * mse(sg[q], z)``).
        use_ema: update the codebook by exponential moving averages of assigned latents (VQ-VAE appendix,
            Laplace-smoothed cluster sizes) instead of by gradients; then there is no ``"codebook"`` loss.
        ema_decay: EMA decay, also used for the running code-usage estimate of ``restart_threshold``.
        ema_eps: Laplace smoothing epsilon of the EMA cluster sizes.
        restart_after: reset codes unused for this many training steps to random current latents (0: off).
        restart_threshold: reset codes whose running usage (EMA of per-batch counts, starting at 1) falls
            below this (0: off).
        chunk_size: codes per chunk of the nearest-neighbour search (memory ``N * chunk_size``); ``None``:
            automatic (see :func:`nearest_code`), ``0``: the whole codebook at once.
        init_std: codebook initialisation ``N(0, init_std^2)``.

    Dead-code restarts work across processes: counts are all-reduced, replacement vectors are drawn on
    rank 0 and broadcast, so every rank keeps the same codebook.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        distance: str = "l2",
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        restart_after: int = 0,
        restart_threshold: float = 0.0,
        chunk_size: int | None = None,
        init_std: float = 1.0,
    ):
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1; got dim={dim}, codebook_size={codebook_size}")
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance must be 'l2' or 'cosine'; got {distance!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}")
        if restart_after < 0 or restart_threshold < 0:
            raise ValueError(f"restart_after and restart_threshold must be >= 0; got {restart_after}, {restart_threshold}")
        if chunk_size is not None and chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 = whole codebook); got {chunk_size}")
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)
        self.num_levels = 1
        self.codebook_dim = int(codebook_dim) if codebook_dim is not None else self.dim
        self.distance = distance
        self.beta = float(beta)
        self.use_ema = bool(use_ema)
        self.ema_decay = float(ema_decay)
        self.ema_eps = float(ema_eps)
        self.restart_after = int(restart_after)
        self.restart_threshold = float(restart_threshold)
        self.chunk_size = None if chunk_size is None else int(chunk_size)

        self.project_in, self.project_out = channel_projections(self.dim, self.codebook_dim)
        # (K, D) codebook; a Parameter in both modes so state_dict keys do not depend on use_ema.
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.codebook_dim) * init_std)
        self.embedding.requires_grad_(not self.use_ema)
        if self.use_ema:
            self.register_buffer("ema_cluster_size", torch.ones(self.codebook_size))  # (K,)
            self.register_buffer("ema_embed_sum", self.embedding.detach().clone())  # (K, D)
        # Dead-code bookkeeping (persistent: a resumed run keeps restarting the same codes).
        self.register_buffer("code_age", torch.zeros(self.codebook_size, dtype=torch.long))  # steps unused
        self.register_buffer("code_usage", torch.ones(self.codebook_size))  # EMA of per-batch counts
        self.usage = UsageTracker(self.codebook_size)

    # -- codebook ---------------------------------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        """``(K, D)`` codes as used by the search (l2-normalised for cosine distance)."""
        if self.distance == "cosine":
            return F.normalize(self.embedding, dim=-1)
        return self.embedding

    def _project_in(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x) if self.project_in is not None else x
        return F.normalize(x, dim=-1) if self.distance == "cosine" else x

    def _codes_to_latents(self, codes: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """``(N, D)`` code vectors -> ``(B, C, H, W)`` latents (the one path forward and decode share)."""
        if self.project_out is not None:
            codes = self.project_out(codes)
        return from_tokens(codes, batch, height, width)

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        idx = indices[0]  # (B, H, W)
        b, h, w = idx.shape
        codes = F.embedding(idx.reshape(-1).long(), self.codebook())  # (N, D)
        return self._codes_to_latents(codes, b, h, w)

    # -- training-time codebook maintenance ---------------------------------------------------------
    @torch.no_grad()
    def _restart_dead_codes(self, x: torch.Tensor) -> int:
        """Reset dead codes to random rows of ``x`` ``(N, D)`` (drawn on rank 0, broadcast). Returns count."""
        dead = torch.zeros(self.codebook_size, dtype=torch.bool, device=x.device)
        if self.restart_after > 0:
            dead |= self.code_age >= self.restart_after
        if self.restart_threshold > 0:
            dead |= self.code_usage < self.restart_threshold
        n_dead = int(dead.sum())  # identical on every rank: the bookkeeping uses all-reduced counts
        if n_dead == 0 or x.shape[0] == 0:
            return 0
        if x.shape[0] >= n_dead:
            pick = torch.randperm(x.shape[0], device=x.device)[:n_dead]
        else:
            pick = torch.randint(0, x.shape[0], (n_dead,), device=x.device)
        new = x[pick].to(self.embedding.dtype).contiguous()  # (n_dead, D)
        broadcast_(new)
        self.embedding.data[dead] = new
        self.code_age[dead] = 0
        self.code_usage[dead] = 1.0
        if self.use_ema:
            self.ema_cluster_size[dead] = 1.0
            self.ema_embed_sum[dead] = new
        return n_dead

    @torch.no_grad()
    def _update_after_assign(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Usage bookkeeping and (optionally) the EMA codebook update, from all processes' assignments."""
        counts = torch.bincount(idx, minlength=self.codebook_size).to(self.code_usage.dtype)  # (K,)
        if self.use_ema:
            embed_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, x.to(self.ema_embed_sum.dtype))
            packed = all_reduce_(torch.cat([counts.unsqueeze(1), embed_sum], dim=1))  # (K, 1 + D)
            counts, embed_sum = packed[:, 0], packed[:, 1:]
            d = self.ema_decay
            self.ema_cluster_size.mul_(d).add_(counts, alpha=1 - d)
            self.ema_embed_sum.mul_(d).add_(embed_sum, alpha=1 - d)
            n = self.ema_cluster_size.sum()
            smoothed = (self.ema_cluster_size + self.ema_eps) / (n + self.codebook_size * self.ema_eps) * n
            self.embedding.data.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))
        else:
            counts = all_reduce_(counts)
        self.code_usage.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.code_age += 1
        self.code_age[counts > 0] = 0

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        """``(B, C, H, W)`` -> :class:`QuantizerOutput` with one ``(B, H, W)`` index map."""
        self._check_input(z)
        b, _, h, w = z.shape
        z_tokens = to_tokens(z)  # (N, C), N = B*H*W
        x = self._project_in(z_tokens)  # (N, D)
        if self.training and (self.restart_after > 0 or self.restart_threshold > 0):
            self._restart_dead_codes(x.detach())
        codebook = self.codebook()  # (K, D)
        idx = nearest_code(x, codebook, self.chunk_size)  # (N,)
        q = F.embedding(idx, codebook)  # (N, D); grads reach the codebook (non-EMA)
        losses = {}
        if not self.use_ema:
            losses["codebook"] = F.mse_loss(q, x.detach())
        losses["commitment"] = self.beta * F.mse_loss(q.detach(), x)
        if self.training:
            self._update_after_assign(x.detach(), idx)
            self.usage.update(idx)
        quantized = self._codes_to_latents(straight_through(q.detach(), x), b, h, w)
        return self._level_output(quantized, idx.reshape(b, h, w), losses, to_tokens(quantized), z_tokens, with_losses)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"distance={self.distance!r}, use_ema={self.use_ema}"
        )


# Helpers that lived here before they moved to the modules named for them.
_MOVED = {"to_tokens": "layout", "from_tokens": "layout", "linear_channels_first": "layout",
          "pack_channels_first": "layout", "straight_through": "layout", "nearest_code": "search",
          "AUTO_CHUNK_ELEMENTS": "search", "single_level_stats": "stats"}  # fmt: skip


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        where = f"coda_hf.quantizers.{_MOVED[name]}"
        warnings.warn(f"coda_hf.quantizers.vector.{name} moved to {where}", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(where), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
