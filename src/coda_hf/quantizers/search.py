"""Nearest-code search (L2) over a codebook in chunks: the VQ assignment and the k-means step."""

from __future__ import annotations

import torch

# Elements of one (N, chunk) distance block when chunk_size is automatic (8 MiB of float32).
AUTO_CHUNK_ELEMENTS = 2**21


@torch.no_grad()
def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Index of the nearest (L2) code for each row of ``x``, searching the codebook in chunks.

    ``x``: ``(N, D)``, ``codebook``: ``(K, D)`` -> ``(N,)`` long. Uses
    ``argmin_k ||x||^2 - 2 x.c_k + ||c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k)`` with one matmul per
    chunk of ``chunk_size`` codes, keeping a running min / argmin, so peak memory is ``N * chunk_size``
    floats whatever ``K``. Ties go to the lowest index (as an unchunked ``argmin``).
    ``chunk_size=None`` picks ``AUTO_CHUNK_ELEMENTS / N`` codes (at least 256): a distance block of a few
    MiB stays in cache, which is faster than one big matmul; ``0`` searches the whole codebook at once.
    """
    n, k = x.shape[0], codebook.shape[0]
    if chunk_size is None:
        chunk_size = max(256, AUTO_CHUNK_ELEMENTS // max(n, 1))
    if chunk_size <= 0 or chunk_size >= k:
        chunk_size = k
    # ||c||^2 - 2 x.c as ONE matmul of augmented operands (no broadcast bias copy per chunk):
    # [x, 1] @ [-2c, ||c||^2]^T.  (N, D + 1) and (K, D + 1)
    x = torch.cat([x.detach(), x.new_ones(n, 1)], dim=1)
    codebook = codebook.detach().to(x.dtype)
    codes = torch.cat([codebook * -2.0, codebook.pow(2).sum(dim=1, keepdim=True)], dim=1)
    best_dist = best_idx = None
    for start in range(0, k, chunk_size):
        dist_chunk = x @ codes[start : start + chunk_size].t()  # (N, k_c)
        d_min, i_min = dist_chunk.min(dim=1)
        if best_dist is None:
            best_dist, best_idx = d_min, i_min
        else:
            better = d_min < best_dist  # strict: earlier chunk wins ties
            best_dist = torch.where(better, d_min, best_dist)
            best_idx = torch.where(better, i_min + start, best_idx)
    if best_idx is None:  # n == 0
        return torch.zeros(n, dtype=torch.long, device=x.device)
    return best_idx
