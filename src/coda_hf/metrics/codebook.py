"""Codebook statistics over a whole evaluation set: utilization, perplexity, per-level error, tokens.

Counting and perplexity are :class:`coda_hf.quantizers.CodebookCounter` /
:func:`~coda_hf.quantizers.stats.perplexity_from_counts`; this module only adds the per-level
quantization error (paper Figure 4) and the per-image token count, all reducible across processes.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_
from ..quantizers.stats import CodebookCounter


class CodebookStatistics:
    """Accumulates code counts, per-level quantization error and tokens per image.

    ``update(indices, quant_error, batch_size)``: ``indices`` is the list of ``(B, h_l, w_l)``
    index maps of one batch (level order); ``quant_error`` the ``(L,)`` per-level mean squared
    error of that batch (``QuantizerOutput.stats["quant_error"]``), weighted by ``batch_size``.
    Call :meth:`sync` once on every process before :meth:`compute`.
    """

    def __init__(self, codebook_size: int, device: torch.device | str = "cpu"):
        self.counter = CodebookCounter(codebook_size, device=device)
        self.device = torch.device(device)
        self.quant_error_sum: torch.Tensor | None = None  # (L,) float64, sum over images
        self.num_images = torch.zeros((), dtype=torch.float64, device=self.device)
        self.num_tokens = torch.zeros((), dtype=torch.float64, device=self.device)

    @property
    def codebook_size(self) -> int:
        return self.counter.codebook_size

    @torch.no_grad()
    def update(self, indices: list[torch.Tensor], quant_error: torch.Tensor | None = None) -> None:
        if not isinstance(indices, (list, tuple)) or not indices:
            raise ValueError("indices must be a non-empty list of (B, h, w) tensors, one per level")
        batch = indices[0].shape[0]
        self.counter.update(list(indices))
        self.num_images += batch
        self.num_tokens += sum(int(i[0].numel()) for i in indices) * batch
        if quant_error is not None:
            qe = torch.as_tensor(quant_error).detach().reshape(-1).to(self.device, torch.float64) * batch
            if self.quant_error_sum is None:
                self.quant_error_sum = qe.clone()
            elif self.quant_error_sum.shape != qe.shape:
                raise ValueError(f"quant_error has {qe.numel()} levels; earlier batches had {self.quant_error_sum.numel()}")
            else:
                self.quant_error_sum += qe

    @torch.no_grad()
    def sync(self) -> None:
        """Sum counts, errors and image/token counts over all processes (every rank, once)."""
        self.counter.sync()
        for t in (self.num_images, self.num_tokens):
            all_reduce_(t, "sum")
        # A process that saw no batch has no per-level sums yet: agree on the level count first.
        levels = torch.tensor(0 if self.quant_error_sum is None else self.quant_error_sum.numel(), device=self.device)
        all_reduce_(levels, "max")
        if int(levels) == 0:
            return
        if self.quant_error_sum is None:
            self.quant_error_sum = torch.zeros(int(levels), dtype=torch.float64, device=self.device)
        all_reduce_(self.quant_error_sum, "sum")

    def compute(self) -> dict:
        """JSON-safe summary: ``utilization`` (fraction of codes used at least once), ``perplexity``,
        ``codes_used``, ``codebook_size``, ``quant_error`` (list per level), ``tokens_per_image``."""
        n = float(self.num_images)
        if n == 0:
            raise ValueError("CodebookStatistics is empty: call update() first")
        out = {
            "utilization": float(self.counter.utilization()),
            "perplexity": float(self.counter.perplexity()),
            "codes_used": int((self.counter.counts > 0).sum()),
            "codebook_size": self.codebook_size,
            "tokens_per_image": float(self.num_tokens) / n,
        }
        if self.quant_error_sum is not None:
            out["quant_error"] = [float(v) for v in (self.quant_error_sum / n).cpu()]
        return out
