"""Lloyd's k-means for data-dependent codebook initialisation (the one implementation of the package).

Used by the attention quantizer's ``init="data"`` (``init_kmeans_iters``): codes sampled from the data
are moved to the centroids of their cells, which lowers the quantization error of the starting codebook
(``benchmarks/bench_attention_init.py``, BENCHMARKS.md), and an emptied cell restarts where the error is
large, so no code starts dead. Assignment is the chunked
nearest-code search of :func:`coda_hf.quantizers.search.nearest_code` over blocks of rows, so memory stays
bounded whatever the number of points.
"""

from __future__ import annotations

import torch

from .search import nearest_code


def sample_rows(x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` rows of ``(N, D)`` ``x`` at random: without replacement when ``N >= k``, else with.

    The indices are drawn on the CPU (``generator`` is a CPU generator, or ``None`` for the global one),
    so the pick does not depend on the device ``x`` lives on.
    """
    n = x.shape[0]
    if n < 1:
        raise ValueError("cannot sample rows of an empty tensor")
    if n >= k:
        pick = torch.randperm(n, generator=generator)[:k]
    else:
        pick = torch.randint(n, (k,), generator=generator)
    return x[pick.to(x.device)]


# Rows per assignment block: the (rows, code chunk) distance blocks stay ~64 MiB whatever N is.
ASSIGN_ROWS = 2**16


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``(N,)`` index of the nearest centroid for each row of ``(N, D)`` ``x``, in blocks of rows."""
    return torch.cat([nearest_code(x[start : start + ASSIGN_ROWS], centroids) for start in range(0, x.shape[0], ASSIGN_ROWS)])


@torch.no_grad()
def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` Lloyd iterations of k-means on ``(N, D)`` rows; returns ``(centroids (k, D), counts (k,))``.

    Starts from ``init`` ``(k, D)`` or from :func:`sample_rows`. A centroid left without points restarts on
    a point drawn with probability proportional to its squared error (the k-means++ weighting; distinct
    points, ``generator`` a CPU generator or ``None``), so no code stays dead while the data has at least
    ``k`` distinct points. ``counts``: points per centroid under the returned centroids' assignment.
    Computed in float32 whatever ``x``'s dtype.
    """
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"kmeans needs (N >= 1, D) rows; got {tuple(x.shape)}")
    if k < 1 or iters < 0:
        raise ValueError(f"kmeans needs k >= 1 and iters >= 0; got k={k}, iters={iters}")
    x = x.detach().float()
    centroids = sample_rows(x, k, generator) if init is None else init.detach().float().clone()
    if centroids.shape != (k, x.shape[1]):
        raise ValueError(f"init must have shape ({k}, {x.shape[1]}); got {tuple(centroids.shape)}")
    for _ in range(iters):
        idx = assign(x, centroids)  # (N,)
        counts = torch.bincount(idx, minlength=k)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)  # (k, D)
        alive = counts > 0
        centroids[alive] = sums[alive] / counts[alive].unsqueeze(1).float()
        empty = (~alive).nonzero().squeeze(1)  # (e,)
        if empty.numel():
            # k-means++ weighting: restart on points drawn with probability ~ their squared error
            err = (x - centroids[idx]).pow(2).sum(1).cpu()  # (N,)
            n_new = min(empty.numel(), int((err > 0).sum()))
            if n_new:  # (no error left: the data has fewer distinct points than k)
                pick = torch.multinomial(err, n_new, replacement=False, generator=generator)
                centroids[empty[:n_new]] = x[pick.to(x.device)]
    counts = torch.bincount(assign(x, centroids), minlength=k)
    return centroids, counts
