"""Post-training scalar quantization of each latent channel at its quantiles (TokenBridge: Wang et al. 2025,
"Bridging Continuous and Discrete Tokens for Autoregressive Visual Generation", arXiv 2503.16430).

A training-free way to turn a continuous VAE into discrete tokens: every latent channel is cut into
``bins`` intervals holding equal shares of its distribution, and each interval decodes to the mean of the
values in it. The statistics come from training latents (:meth:`QuantileQuantizer.initialize`); nothing is
learnt by gradient. TokenBridge assumes a Gaussian latent (standard-normal quantiles, truncated-normal
means); ``distribution="empirical"`` measures both on the data instead.

Token layout: one level per channel. ``indices[c]`` is the ``(B, H, W)`` bin map of channel ``c``, the
codebook is the ``bins`` values of a channel, so an image costs ``C * H * W`` tokens of ``log2(bins)`` bits
(16 channels of a 16 x 16 latent at 4 bins: 4,096 tokens, 8,192 bits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..distributed import broadcast_
from .base import BaseQuantizer, register_quantizer
from .layout import straight_through
from .output import QuantizerOutput
from .stats import UsageTracker, batch_stats

DISTRIBUTIONS = ("empirical", "gaussian")


def gaussian_bins(bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal quantile bins: ``(bins - 1,)`` boundaries ``Phi^-1(k / bins)`` and ``(bins,)``
    reconstruction values, the truncated-normal means ``(phi(a) - phi(b)) / (Phi(b) - Phi(a))`` (float64)."""
    probs = torch.arange(1, bins, dtype=torch.float64) / bins
    inner = math.sqrt(2.0) * torch.erfinv(2 * probs - 1)  # (bins - 1,) Phi^-1
    edges = torch.cat([torch.tensor([-math.inf], dtype=torch.float64), inner, torch.tensor([math.inf], dtype=torch.float64)])
    density = torch.exp(-0.5 * edges.square()) / math.sqrt(2 * math.pi)  # phi(+-inf) = 0
    return inner, (density[:-1] - density[1:]) * bins  # each bin holds 1 / bins of the mass


def empirical_bins(values: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, N)`` samples -> ``(C, bins - 1)`` boundaries at the empirical quantiles ``k / bins`` and
    ``(C, bins)`` conditional means (the mean of the samples in each bin; an empty bin keeps its boundary
    midpoint). float64."""
    values = values.double()
    ordered = values.sort(dim=1).values  # (C, N); torch.quantile refuses more than 2**24 values
    position = torch.arange(1, bins, dtype=torch.float64, device=values.device) / bins * (values.shape[1] - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp_max(values.shape[1] - 1)
    frac = position - lower
    boundaries = ordered[:, lower] * (1 - frac) + ordered[:, upper] * frac  # (C, bins - 1), linear as torch.quantile
    return boundaries.contiguous(), bin_means(values, boundaries)


def bin_means(values: torch.Tensor, boundaries: torch.Tensor) -> torch.Tensor:
    """``(C, N)`` samples, ``(C, bins - 1)`` sorted boundaries -> ``(C, bins)`` mean of the samples per bin."""
    c, bins = boundaries.shape[0], boundaries.shape[1] + 1
    idx = torch.searchsorted(boundaries, values.contiguous())  # (C, N): bin k holds (b_{k-1}, b_k]
    sums = torch.zeros(c, bins, dtype=values.dtype, device=values.device).scatter_add_(1, idx, values)
    counts = torch.zeros(c, bins, dtype=values.dtype, device=values.device).scatter_add_(1, idx, torch.ones_like(values))
    lo = torch.cat([boundaries[:, :1] - 1, boundaries], dim=1)  # an empty edge bin: one unit beyond its boundary
    hi = torch.cat([boundaries, boundaries[:, -1:] + 1], dim=1)
    return torch.where(counts > 0, sums / counts.clamp_min(1), (lo + hi) / 2)


def lloyd_max(values: torch.Tensor, boundaries: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` Lloyd-Max steps (the MSE-optimal scalar quantizer's fixed point): boundaries move to the
    midpoints of the reconstruction values, the values to the means of their new bins."""
    means = bin_means(values, boundaries)
    for _ in range(iters):
        boundaries = (means[:, 1:] + means[:, :-1]) / 2
        means = bin_means(values, boundaries)
    return boundaries, means


@register_quantizer("quantile")
class QuantileQuantizer(BaseQuantizer):
    """Per-channel scalar quantization at quantile bins, set from data (training-free; see the module docstring).

    Args:
        dim: latent channels ``C``; also the number of levels (one per channel).
        bins: values per channel, the codebook size (>= 2); ``log2(bins)`` bits per token.
        distribution: ``"empirical"``: boundaries at the measured quantiles of each channel, values at the
            measured bin means; ``"gaussian"``: TokenBridge's standard-normal quantile bins and
            truncated-normal means, scaled by each channel's measured mean and standard deviation.
        refine_iters: Lloyd-Max iterations on the measured values after the quantile start (0: the quantile
            bins as they are; more lowers the squared error, and the bins stop holding equal shares).
        max_init_values: at most this many values per channel are used for the statistics (drawn at random).

    Buffers (saved with the model): ``boundaries`` ``(C, bins - 1)``, ``values`` ``(C, bins)`` and the flag
    ``data_initialized``. Before :meth:`initialize` the bins are those of a standard normal (a normalised
    latent's): usable, and :attr:`needs_data_init` stays ``True`` so a training run measures them first.
    """

    def __init__(self, dim: int, bins: int = 4, distribution: str = "empirical", refine_iters: int = 0,
                 max_init_values: int = 2**20):  # fmt: skip
        super().__init__()
        if dim < 1 or bins < 2:
            raise ValueError(f"dim must be >= 1 and bins >= 2; got dim={dim}, bins={bins}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}; got {distribution!r}")
        if refine_iters < 0 or max_init_values < bins:
            raise ValueError(f"refine_iters must be >= 0 and max_init_values >= bins; got {refine_iters}, {max_init_values}")
        self.dim, self.num_levels, self.codebook_size = int(dim), int(dim), int(bins)
        self.distribution, self.refine_iters, self.max_init_values = distribution, int(refine_iters), int(max_init_values)
        boundaries, values = gaussian_bins(self.codebook_size)
        self.register_buffer("boundaries", boundaries.float().repeat(self.dim, 1))  # (C, bins - 1), sorted
        self.register_buffer("values", values.float().repeat(self.dim, 1))  # (C, bins)
        self.register_buffer("data_initialized", torch.tensor(False))
        self.usage = UsageTracker(self.codebook_size)

    @property
    def needs_data_init(self) -> bool:
        return not bool(self.data_initialized)

    @torch.no_grad()
    def initialize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Measure the bins of every channel on ``(B, C, H, W)`` training latents (at most
        ``max_init_values`` values per channel, drawn with ``generator``). Under ``torch.distributed``
        rank 0's bins are broadcast, so every rank quantizes alike."""
        self._check_input(z)
        flat = z.detach().transpose(0, 1).reshape(self.dim, -1)  # (C, B*H*W)
        if flat.shape[1] < self.codebook_size:
            raise ValueError(f"{flat.shape[1]} values per channel cannot set {self.codebook_size} bins")
        if flat.shape[1] > self.max_init_values:
            pick = torch.randperm(flat.shape[1], generator=generator)[: self.max_init_values]
            flat = flat[:, pick.to(flat.device)]
        flat = flat.double()
        if self.distribution == "gaussian":
            unit_boundaries, unit_values = gaussian_bins(self.codebook_size)
            mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True)
            boundaries, values = mean + std * unit_boundaries.to(flat.device), mean + std * unit_values.to(flat.device)
        else:
            boundaries, values = empirical_bins(flat, self.codebook_size)
        if self.refine_iters:
            boundaries, values = lloyd_max(flat, boundaries, self.refine_iters)
        self.boundaries.copy_(broadcast_(boundaries.float().contiguous()))
        self.values.copy_(broadcast_(values.float().contiguous()))
        self.data_initialized.fill_(True)

    def _bin_values(self, idx: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """``(C, B*H*W)`` bin indices -> ``(B, C, H, W)`` values (the one path forward and decode share)."""
        return self.values.gather(1, idx).reshape(self.dim, batch, height, width).transpose(0, 1)

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        if len(indices) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels of indices (one per channel), got {len(indices)}")
        b, h, w = indices[0].shape
        idx = torch.stack([i.reshape(-1).long() for i in indices])  # (C, B*H*W)
        return self._bin_values(idx, b, h, w)

    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        """``(B, C, H, W)`` -> :class:`QuantizerOutput` with ``C`` index maps ``(B, H, W)``; no loss."""
        self._check_input(z)
        if self.training and self.needs_data_init:
            self.initialize(z)
        b, _, h, w = z.shape
        flat = z.detach().transpose(0, 1).reshape(self.dim, -1).to(self.boundaries.dtype)  # (C, B*H*W)
        idx = torch.searchsorted(self.boundaries, flat.contiguous())  # (C, B*H*W) in [0, bins)
        hard = self._bin_values(idx, b, h, w).to(z.dtype)
        quantized = straight_through(hard, z)
        indices = list(idx.reshape(self.dim, b, h, w).unbind(0))  # C maps of (B, H, W)
        if self.training:
            self.usage.update(indices)
        stats = batch_stats(indices, self.codebook_size, self._running_error(hard, z))
        stats["utilization"] = self.usage.utilization()
        return QuantizerOutput(quantized=quantized, indices=indices, losses={}, stats=stats)

    @torch.no_grad()
    def _running_error(self, hard: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(C,)``: the mean squared error of the latent decoded from levels ``0..c`` (the channels not
        decoded yet at 0, a normalised latent's mean), as the residual quantizers' ``quant_error``."""
        z = z.detach().float()
        error = F.mse_loss(hard.float(), z, reduction="none").mean(dim=(0, 2, 3))  # (C,) per channel
        energy = z.square().mean(dim=(0, 2, 3))  # (C,) error of a channel left at 0
        decoded = torch.cumsum(error, 0) + (energy.sum() - torch.cumsum(energy, 0))
        return decoded / self.dim

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, bins={self.codebook_size}, distribution={self.distribution!r}, "
                f"refine_iters={self.refine_iters}")  # fmt: skip
