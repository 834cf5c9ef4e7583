"""Exact attention argmax on CPU, screened with bfloat16 scores.

The eval search ``argmax_k q_n . k_k`` over a large codebook is bound by writing and re-reading the
``(tokens, K)`` float32 scores. Here every score is first computed in bfloat16 (half the bytes, and
CPUs with AVX512-BF16 / AMX multiply bf16 several times faster than float32), with a per-token shift
``c_n`` folded into the product so that the scores near the maximum are small numbers:

    S~_nk = bf16( q~_n . k~_k - c_n )       c_n: slightly below the best score of a few sampled codes

``q~ . k~`` is either plain (``q_hi . k_hi``, 8-bit roundings) or split (``q_hi . k_hi + q_hi . k_lo +
q_lo . k_hi`` with ``x = x_hi + x_lo``, 16 bits, three times the products), chosen per block of tokens:
the split is needed where scores cancel large terms (the ``"data"`` layout's ``2 f.v - |v|^2``). Each
screened score is within ``R_n + u |S~| + e_n`` of the exact ``s - c``: ``R_n`` bounds what the rounding
or the split leaves out (per coordinate or by Cauchy-Schwarz, whichever is smaller), ``u = 2^-8`` is the
bf16 rounding of the output and ``e_n`` the float32 accumulation. So every code whose exact score can be
the maximum has a screened score within ``D_n = 2 R_n + 2.1 (u |M_n| + e_n)`` of the screened maximum
``M_n``. Per group of :data:`SCREEN_GROUP` codes only the group maximum is kept (a max over the bf16 bits
read as int16: for non-negative numbers it orders like the floats, and a group whose maximum is negative
is below any positive threshold anyway); the codes of the candidate groups are then scored in float32,
those within float32 rounding of the best in float64, and the first best index wins, as in ``argmax``.
Each distinct key is searched once (duplicates tie exactly, and the first index wins). Tokens where the
bound cannot be applied (a non-positive threshold, non-finite input) take the float32 search of
:func:`.attention_fused.attention_argmax`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention_fused import attention_argmax

# Codes per group of the screen: one int16 maximum per group and token is kept.
SCREEN_GROUP = 64
# Tokens per bf16 score tile: (64, 65,536) bf16 = 8 MiB in one reused buffer.
SCREEN_TOKENS = 64
# Tokens per call of the screen: bounds its (tokens, K / SCREEN_GROUP) group maxima (24 MiB at 65,536 codes).
SCREEN_BLOCK = 4096
# Keys gathered at a time to score the candidate groups (4 MiB of float32).
RESOLVE_ELEMENTS = 2**20
# Codes sampled (evenly spaced) to estimate each token's best score for the shift.
SHIFT_SAMPLE = 512
# The screen pays off from this many codes (smaller codebooks keep the float32 search).
SCREEN_MIN_CODES = 16384

_U = 2.0**-8  # unit roundoff of bfloat16 (8 significand bits)


def screen_supported(queries: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether :func:`screened_argmax` applies: float32 on a CPU with native bf16 products, a codebook of
    at least :data:`SCREEN_MIN_CODES` codes, outside traced graphs."""
    return (
        queries.device.type == "cpu"
        and queries.dtype == torch.float32
        and keys.dtype == torch.float32
        and keys.shape[0] >= SCREEN_MIN_CODES
        and not torch.compiler.is_compiling()
        and native_bf16()
    )


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 products are emulated."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@dataclass(frozen=True)
class ScreenKeys:
    """What the screen needs of the ``(K, h)`` keys, computed once per codebook state."""

    keys: torch.Tensor  # (K', h) float32: the distinct keys in order of first occurrence, padded to whole groups
    index: torch.Tensor  # (K',) long: each row's first index in the codebook
    codebook: torch.Tensor  # (K, h) float32: the keys as given (the float32 fallback searches them)
    plain_t: torch.Tensor  # (h + 2, K') bf16: rows k_hi and two rows of ones (for the shift)
    split_t: torch.Tensor  # (3 h + 2, K') bf16: rows k_hi, k_hi, k_lo and two rows of ones
    sample: torch.Tensor  # (<= SHIFT_SAMPLE + 1, h) evenly spaced keys: the shift's estimate of the best score
    size: tuple[torch.Tensor, torch.Tensor]  # max_k |k_k| (a scalar) and max_k |k_ki| per coordinate i (h,)
    rounding: tuple[torch.Tensor, torch.Tensor]  # the same two maxima of k - k_hi
    low: tuple[torch.Tensor, torch.Tensor]  # of k_lo
    rest: tuple[torch.Tensor, torch.Tensor]  # and of what the split leaves, k - k_hi - k_lo

    @classmethod
    def build(cls, codebook: torch.Tensor) -> ScreenKeys:
        codebook = codebook.detach().float().contiguous()
        keys, index = _distinct_rows(codebook)
        hi, lo = split_bf16(keys)
        ones = torch.ones(keys.shape[0], 2, dtype=torch.bfloat16)
        plain_t, split_t = (torch.cat(rows, dim=1).t().contiguous() for rows in ([hi, ones], [hi, hi, lo, ones]))
        sample = keys[:: max(1, keys.shape[0] // SHIFT_SAMPLE)].contiguous()
        rounding = keys - hi.float()
        return cls(keys, index, codebook, plain_t, split_t, sample, _maxima(keys), _maxima(rounding),
                   _maxima(lo.float()), _maxima(rounding - lo.float()))  # fmt: skip


def _distinct_rows(codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``(K, h)`` ``codebook`` ordered by first occurrence, and those first indices, padded
    with copies of the last row to whole groups. Duplicate codes (common after a data initialisation) tie
    exactly, and the first index wins such ties, so only the first copy needs searching; ordering by first
    occurrence keeps "first index" the tie rule between distinct rows too."""
    k = codebook.shape[0]
    unique, inverse = torch.unique(codebook, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), k, dtype=torch.long).scatter_reduce(0, inverse, torch.arange(k), "amin")
    order = first.argsort()
    keys, index = unique[order], first[order]
    pad = -keys.shape[0] % SCREEN_GROUP  # copies after the original: they lose its ties, and map to its index
    return torch.cat([keys, keys[-1:].expand(pad, -1)]).contiguous(), torch.cat([index, index[-1:].expand(pad)])


def split_bf16(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ hi + lo`` in bf16: ``hi = bf16(x)``, ``lo = bf16(x - hi)`` (16 significant bits together)."""
    hi = x.to(torch.bfloat16)
    return hi, (x - hi.float()).to(torch.bfloat16)


def _maxima(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.norm(dim=-1).max(), rows.abs().amax(dim=0)


def dot_bound(x: torch.Tensor, maxima: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``(N,)`` bound on ``max_k sum_i |x_ni| |r_ki|`` (so on ``|x_n . r_k|``) for rows ``r`` with
    :func:`_maxima` ``maxima``: the smaller of Cauchy-Schwarz and the per-coordinate bound. The second is the
    tight one when keys put much of their norm where queries have little (the ``"nearest"`` layout's
    padding coordinate)."""
    norm_max, coord_max = maxima
    return torch.minimum(x.norm(dim=-1) * norm_max, x.abs() @ coord_max)


@torch.no_grad()
def screened_argmax(queries: torch.Tensor, screen: ScreenKeys, split: bool | None = None) -> torch.Tensor:
    """``argmax_k q_n . k_k`` (first index of the exact maximum) for ``(N, h)`` float32 queries. ``split``:
    multiply split bf16 pairs (``True``), plain bf16 (``False``) or choose per block of tokens (``None``)."""
    parts = [_screened_block(queries[start : start + SCREEN_BLOCK], screen, split)
             for start in range(0, queries.shape[0], SCREEN_BLOCK)]  # fmt: skip
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def _screened_block(queries: torch.Tensor, screen: ScreenKeys, split: bool | None) -> torch.Tensor:
    n = queries.shape[0]
    augmented, keys_t, margin = _shifted_queries(queries, screen, split)
    group_max = _group_maxima(augmented, keys_t)  # (N, K' / SCREEN_GROUP) float32
    top = group_max.amax(dim=-1)  # (N,) the screened maximum M_n
    threshold = top - 2.1 * _U * top.abs() - margin
    exact = threshold > 0  # NaN-safe: a NaN threshold falls back
    out = torch.empty(n, dtype=torch.long)
    rows = exact.nonzero()[:, 0]
    token, group = (group_max[rows] >= threshold[rows, None]).nonzero().unbind(1)  # candidate (token, group) pairs
    out[rows] = screen.index[_resolve(queries, screen, rows, token, group)]
    rest = (~exact).nonzero()[:, 0]
    if rest.numel():
        out[rest] = attention_argmax(queries[rest], screen.codebook, SCREEN_TOKENS)
    return out


def _shifted_queries(queries: torch.Tensor, screen: ScreenKeys, split: bool | None):
    """The bf16 rows multiplied with the keys' (``[q_hi, -c_hi, -c_lo]`` against ``[k_hi, 1, 1]``, or split:
    ``[q_hi, q_lo, q_hi, -c_hi, -c_lo]`` against ``[k_hi, k_hi, k_lo, 1, 1]``), the keys' rows, and the margin
    ``D_n`` less its output-rounding term ``2.1 u |M_n|``: twice the input error ``R_n`` plus the float32
    accumulation. The split costs three times the products but its ``R_n`` is ``u`` times smaller; it is
    used when the plain ``R_n`` would leave more than one sampled code near the sampled best."""
    hi, lo = split_bf16(queries)
    hi_f, lo_f = hi.float(), lo.float()
    scale = dot_bound(queries, screen.size)  # A_n >= |q . k| for every code
    # plain: R_n >= |q . k - q_hi . k_hi| = |(q - q_hi) . k + q_hi . (k - k_hi)|
    residual = dot_bound(queries - hi_f, screen.size) + dot_bound(hi_f, screen.rounding)
    sampled = queries @ screen.sample.t()  # (N, S)
    best = sampled.amax(dim=-1)
    if split is None:
        split = bool(((sampled >= (best - 2.0 * residual)[:, None]).sum(-1) > 1).float().mean() > 0.5)
    if split:  # R_n >= |q_lo . k_lo + q_rest . k + (q_hi + q_lo) . k_rest|
        residual = (dot_bound(lo_f, screen.low) + dot_bound(queries - hi_f - lo_f, screen.size)
                    + dot_bound(hi_f + lo_f, screen.rest))  # fmt: skip
    # c_n below the sampled best (by more than every error): scores near the maximum become small positive numbers
    shift = best - 4.0 * residual - 2.0**-10 * scale  # (N,)
    c_hi, c_lo = split_bf16(-shift)
    augmented = torch.cat([hi, lo, hi] if split else [hi], dim=1)
    augmented = torch.cat([augmented, c_hi[:, None], c_lo[:, None]], dim=1)
    # float32 sum of the exact products (<= terms 2^-24 sum |terms|) and the split of c (<= u^2 |c|)
    terms = augmented.shape[1]
    accumulation = 1.1 * terms * 2.0**-24 * (3.0 * scale + shift.abs()) + 2.0**-15 * shift.abs()
    return augmented, screen.split_t if split else screen.plain_t, 2.0 * residual + 2.1 * accumulation


def _group_maxima(augmented: torch.Tensor, keys_t: torch.Tensor) -> torch.Tensor:
    """``(N, K / SCREEN_GROUP)`` maxima of the screened scores (exact for groups holding a score >= 0)."""
    n, k = augmented.shape[0], keys_t.shape[1]
    groups = k // SCREEN_GROUP
    maxima = torch.empty(n, groups, dtype=torch.int16)
    tile = torch.empty(min(n, SCREEN_TOKENS) * k, dtype=torch.bfloat16)  # reused: no page faults per tile
    for start in range(0, n, SCREEN_TOKENS):
        rows = augmented[start : start + SCREEN_TOKENS]
        scores = torch.mm(rows, keys_t, out=tile[: rows.shape[0] * k].view(rows.shape[0], k))
        # bf16 bits as int16: the same order as the floats for non-negative values
        torch.amax(scores.view(torch.int16).view(-1, groups, SCREEN_GROUP), dim=-1, out=maxima[start : start + rows.shape[0]])
    return maxima.view(torch.bfloat16).float()


def _resolve(queries: torch.Tensor, screen: ScreenKeys, rows: torch.Tensor, token: torch.Tensor,
             group: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """First exact argmax of each of ``rows`` over its candidate groups (``(token, group)`` pairs, ``token``
    indexing ``rows``): float32 scores of the candidate groups, then float64 scores of the codes within
    float32 rounding of each row's best."""
    h = screen.keys.shape[1]
    q = queries[rows]  # (n, h)
    blocks = screen.keys.view(-1, SCREEN_GROUP, h)
    scores = q.new_empty(group.numel(), SCREEN_GROUP)  # (P, G) float32
    step = max(1, RESOLVE_ELEMENTS // (SCREEN_GROUP * h))  # pairs per gather of (pairs, G, h) keys
    for start in range(0, group.numel(), step):
        part = slice(start, start + step)
        torch.bmm(blocks[group[part]], q[token[part]][:, :, None], out=scores[part, :, None])
    best = _scatter(scores.amax(dim=-1), token, rows.numel(), "amax")
    # a float32 dot product of h terms is within h 2^-24 sum_i |q_i k_i| of the exact one
    tol = 2.1 * h * 2.0**-24 * dot_bound(q, screen.size)  # (n,)
    pair, within = (scores >= (best - tol)[token, None]).nonzero().unbind(1)
    code, owner = group[pair] * SCREEN_GROUP + within, token[pair]
    exact = (screen.keys[code].double() * q[owner].double()).sum(dim=-1)  # (m,) float64
    top = _scatter(exact, owner, rows.numel(), "amax")
    # among the codes reaching the row's maximum, the lowest index (argmax's first index)
    tied = torch.where(exact == top[owner], code, torch.iinfo(torch.long).max)
    return _scatter(tied, owner, rows.numel(), "amin")


def _scatter(values: torch.Tensor, index: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    """``(size,)`` reduction (``"amax"`` / ``"amin"``) of ``values`` grouped by ``index``."""
    info = torch.finfo if values.is_floating_point() else torch.iinfo
    fill = info(values.dtype).min if reduce == "amax" else info(values.dtype).max
    return torch.full((size,), fill, dtype=values.dtype).scatter_reduce(0, index, values, reduce)
