"""Codebook statistics shared by every quantizer: running utilization, perplexity, eval accumulation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the empirical code distribution; 1 = one code, K = uniform over K codes."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return torch.zeros((), dtype=torch.float32, device=counts.device)
    entropy = torch.special.entr(counts / total).sum()  # entr(0) = 0: unused codes add nothing
    return entropy.exp().float()


class UsageTracker(nn.Module):
    """Running codebook utilization over a window of the last ``window`` training batches.

    Keeps, per code, the step at which it was last hit (``(K,)`` int64), so memory is O(K)
    whatever the window. ``utilization()`` is the fraction of codes hit in the window.
    The buffer is non-persistent: it is training telemetry, not part of the weights.
    """

    def __init__(self, codebook_size: int, window: int = 100):
        super().__init__()
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.window = int(window)
        self.register_buffer("last_seen", torch.full((codebook_size,), -(2**62), dtype=torch.long), persistent=False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)
        # utilization() is O(K); eval calls (no update in between) reuse the last value.
        self._version = 0
        self._cached: tuple[int, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, indices: torch.Tensor | list[torch.Tensor]) -> None:
        """Record one batch of indices (any shape, or a list per level)."""
        if isinstance(indices, (list, tuple)):
            indices = torch.cat([i.reshape(-1) for i in indices])
        self.step += 1
        # index_fill_ with the 0-dim step: no host sync, and cheaper than an index_put of a cloned scalar
        self.last_seen.index_fill_(0, indices.reshape(-1).to(self.last_seen.device), self.step)
        self._version += 1

    @torch.no_grad()
    def sync(self) -> None:
        """Merge the windows of all processes (max of last-seen steps)."""
        all_reduce_(self.last_seen, "max")
        self._version += 1

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .half() etc. replace the buffers
        self._cached = None
        return super()._apply(fn, *args, **kwargs)

    def utilization(self) -> torch.Tensor:
        if self._cached is None or self._cached[0] != self._version:
            hit = torch.count_nonzero(self.last_seen > self.step - self.window)
            self._cached = (self._version, hit.float() / self.codebook_size)
        return self._cached[1]


class CodebookCounter:
    """Accumulates code counts over a whole evaluation set; reducible across processes.

    >>> c = CodebookCounter(16); c.update(torch.tensor([0, 1, 1])); float(c.utilization())
    0.125
    """

    def __init__(self, codebook_size: int, device: torch.device | str = "cpu"):
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor | list[torch.Tensor]) -> None:
        if isinstance(indices, (list, tuple)):
            indices = torch.cat([i.reshape(-1) for i in indices])
        flat = indices.reshape(-1).to(self.counts.device)
        if flat.numel() and (flat.min() < 0 or flat.max() >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}); got [{int(flat.min())}, {int(flat.max())}]")
        self.counts += torch.bincount(flat, minlength=self.codebook_size)

    def sync(self) -> None:
        """Sum counts over all processes (call on every rank)."""
        all_reduce_(self.counts, "sum")

    def utilization(self) -> torch.Tensor:
        return (self.counts > 0).float().mean()

    def perplexity(self) -> torch.Tensor:
        return perplexity_from_counts(self.counts)


def perplexity_from_indices(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Perplexity of one batch of indices (any shape), in O(N + K) without a sort or an O(K) logarithm.

    ``H = -sum_k p_k log p_k = log N - (1/N) sum_k c_k log c_k = log N - mean_t log c_(k_t)``: every
    token ``t`` contributes the log count of its own code, so only ``N`` logarithms are taken. Equal to
    :func:`perplexity_from_counts` of the batch's histogram.
    """
    flat = indices.reshape(-1)
    if flat.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=flat.device)
    counts = torch.bincount(flat, minlength=codebook_size)  # (K,)
    mean_log_count = counts[flat].float().log().mean()
    # clamped to its range [1, K]: float32 rounding put a uniform batch at K + 6e-6
    return (math.log(flat.numel()) - mean_log_count).exp().clamp(1.0, float(codebook_size))


def batch_stats(indices: list[torch.Tensor], codebook_size: int, quant_error: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-batch perplexity (over all levels' indices together) plus the given quantization error (detached)."""
    flat = torch.cat([i.reshape(-1) for i in indices]) if len(indices) > 1 else indices[0].reshape(-1)
    return {"perplexity": perplexity_from_indices(flat, codebook_size), "quant_error": quant_error.detach().float()}


def single_level_stats(
    indices: torch.Tensor, codebook_size: int, quantized: torch.Tensor, z: torch.Tensor, tracker: UsageTracker
) -> dict[str, torch.Tensor]:
    """``perplexity`` (batch), ``utilization`` (running window) and ``quant_error`` ``(1,)`` MSE.

    ``quantized`` and ``z`` may be given in any common layout (e.g. both as ``(N, C)`` tokens, which
    avoids a strided pass over the channels-last output).
    """
    quant_error = F.mse_loss(quantized.detach().float(), z.detach().float()).reshape(1)
    stats = batch_stats([indices], codebook_size, quant_error)
    stats["utilization"] = tracker.utilization()
    return stats
