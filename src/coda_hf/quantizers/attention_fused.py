"""Blocked kernels of the attention quantizer (:mod:`.attention`): the eval argmax search and a fused
training function, both over ``(token block, code block)`` tiles that never hold the ``(N, K)`` scores.

They take already projected and normalised ``(N, h)`` queries, ``(K, h)`` keys and ``(K, C)`` values, so
they do not depend on how the quantizer parametrises them.

Training (:func:`fused_soft_assign`): the IBQ straight-through output and the losses need, per token, only
the soft mixture ``softmax(s) V`` (``s = scale * q k^T``), the argmax and, for the MAGVIT entropy penalty,
the entropy of ``p = softmax(s / T)``; the batch-entropy term needs ``sum_n p_n`` (``(K,)``). These are
FlashAttention-style online-softmax statistics (Dao et al. 2022, arXiv 2205.14135): the forward pass keeps
a running max, normaliser and mixture per token over code blocks, and a second pass sums ``p`` once
every token's normaliser is known. Backward recomputes each tile's scores from the saved per-token
statistics. Memory: ``O(block)`` scores plus ``O(N (C + 4) + K (h + C))``, independent of ``N * K``.
"""

from __future__ import annotations

import torch

# Scores per tile of the fused training kernel: 2^20 float32 = 4 MiB per temporary.
FUSED_BLOCK_ELEMENTS = 2**20
# Codes per tile (a multiple of ARGMAX_GROUP): wide tiles keep the per-token loop short.
FUSED_CODE_BLOCK = 4096
# Group width of :func:`row_max`: rows are reduced by group maxima first (a vectorised max is much
# faster than argmax on CPU), then the winning group is searched.
ARGMAX_GROUP = 64


def row_max(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, k)`` -> ``(values (n,), indices (n,))``: the maximum of each row and its FIRST index,
    exactly as ``scores.max(-1)`` / ``scores.argmax(-1)`` (ties and NaNs included).

    A row's first maximum lies in the first group of :data:`ARGMAX_GROUP` columns whose maximum is the
    row maximum: one vectorised pass of group maxima, then ``argmax`` over ``k / ARGMAX_GROUP`` group
    maxima and over one gathered group per row.
    """
    n, k = scores.shape
    g = ARGMAX_GROUP
    if k % g or k < 2 * g or not scores.is_contiguous():
        values, indices = scores.max(dim=-1)
        return values, indices
    group_max = scores.view(n, k // g, g).amax(dim=-1)  # (n, k/g)
    values, group = group_max.max(dim=-1)  # (n,), first group holding the maximum
    cols = group[:, None] * g + torch.arange(g, device=scores.device)  # (n, g)
    within = scores.gather(1, cols).argmax(dim=-1)  # first maximum inside that group
    return values, group * g + within


# Codes per step of the search inside a traced graph (torch.compile, ONNX export): a static loop over the
# codebook with a running argmax, so the graph holds (N, TRACED_CODE_BLOCK) scores whatever N.
TRACED_CODE_BLOCK = 8192


@torch.no_grad()
def attention_argmax(queries: torch.Tensor, keys: torch.Tensor, chunk: int) -> torch.Tensor:
    """``argmax_k q_n . k_k`` for ``(N, h)`` queries and ``(K, h)`` keys, ``chunk`` tokens at a time.

    Equals ``(queries @ keys.t()).argmax(-1)`` (every score is the same per-row dot product); the
    ``(chunk, K)`` score tile lives in one reused buffer (a fresh multi-MiB allocation per chunk costs
    page faults comparable to the matmul) and the argmax is :func:`row_max`. Inside a traced graph
    (``torch.compile``, export), where ``N`` may be symbolic, the loop runs over code blocks instead.
    """
    if torch.compiler.is_compiling():
        return _traced_argmax(queries, keys)
    n = queries.shape[0]
    out = torch.empty(n, dtype=torch.long, device=queries.device)
    keys_t = keys.t()
    buffer = queries.new_empty(min(chunk, n) * keys.shape[0])  # flat (chunk, K) tile
    for start in range(0, n, chunk):
        q = queries[start : start + chunk]
        scores = torch.mm(q, keys_t, out=buffer[: q.shape[0] * keys.shape[0]].view(q.shape[0], -1))
        out[start : start + chunk] = row_max(scores)[1]
    return out


def _traced_argmax(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """:func:`attention_argmax` as a static loop over code blocks with a running (max, first index)."""
    best_val = best_idx = None
    for c0 in range(0, keys.shape[0], TRACED_CODE_BLOCK):
        val, idx = (queries @ keys[c0 : c0 + TRACED_CODE_BLOCK].t()).max(dim=-1)  # (N,)
        if best_val is None:
            best_val, best_idx = val, idx
        else:
            better = val > best_val  # strict: ties keep the earlier (first) index
            best_val, best_idx = torch.where(better, val, best_val), torch.where(better, idx + c0, best_idx)
    return best_idx


def _exp_(x: torch.Tensor) -> torch.Tensor:
    """``exp`` in place, arguments clamped at ``log`` of the dtype's smallest normal number.

    On CPU, ``exp`` of arguments whose result underflows (below about -87 in float32) leaves the
    vectorised path and costs about ten times more; the entropy distribution at ``T = 0.01`` puts most
    scores there. The clamp changes each such term by less than ``1e-37`` (float32) instead of 0.
    """
    return x.clamp_(min=_LOG_TINY[x.dtype]).exp_()


_LOG_TINY = {dt: float(torch.tensor(torch.finfo(dt).tiny, dtype=torch.float64).log()) + 1.0
             for dt in (torch.float32, torch.float64)}  # fmt: skip


def _tiles(n: int, k: int, elements: int) -> tuple[int, int]:
    """``(tokens, codes)`` per tile for ``n`` tokens, ``k`` codes and about ``elements`` scores per tile."""
    codes = min(k, FUSED_CODE_BLOCK)
    return max(1, min(n, elements // codes)), codes


@torch.library.custom_op("coda_hf::attention_assign", mutates_args=())
def _assign_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, temperature: float, entropy: bool, elements: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward kernel: ``(idx, soft V, soft V again, m, lse, lz2, H, sum_n p_n)`` (see :func:`_forward_stats`).

    A custom operator, so that ``torch.compile`` / export see one opaque node instead of tracing (and
    unrolling) the tile loops; ``soft V`` is returned twice because its two copies carry different
    gradients (the second is the IBQ straight-through path, which does not reach the values).
    """
    with torch.autocast(q.device.type, enabled=False):
        idx, z_soft, m, lse, lz2, ent = _forward_stats(q, k, v, scale, temperature, entropy, elements)
        probs = _prob_sum(q, k, m, lz2, scale, temperature, elements) if entropy else q.new_zeros(k.shape[0])
    return idx, z_soft, z_soft.clone(), m, lse, lz2, ent, probs


@_assign_op.register_fake
def _(q, k, v, scale, temperature, entropy, elements):
    n, e = q.shape[0], q.shape[0] if entropy else 0
    soft = q.new_empty(n, v.shape[1])
    return (q.new_empty(n, dtype=torch.long), soft, torch.empty_like(soft), q.new_empty(n), q.new_empty(n),
            q.new_empty(e), q.new_empty(e), q.new_empty(k.shape[0]))  # fmt: skip


@torch.library.custom_op("coda_hf::attention_assign_backward", mutates_args=())
def _assign_backward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, z_soft: torch.Tensor, m: torch.Tensor, lse: torch.Tensor,
    lz2: torch.Tensor, ent: torch.Tensor, g_soft: torch.Tensor | None, g_st: torch.Tensor | None,
    g_ent: torch.Tensor | None, g_probs: torch.Tensor | None, scale: float, temperature: float, elements: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward kernel: ``(dq, dk, dv)`` (:func:`_backward`; ``dv`` is zero without ``g_soft``)."""
    with torch.autocast(q.device.type, enabled=False):
        dq, dk, dv = _backward(q, k, v, z_soft, m, lse, lz2, ent, g_soft, g_st, g_ent, g_probs, scale, temperature,
                               elements)  # fmt: skip
    return dq, dk.contiguous(), torch.zeros_like(v) if dv is None else dv.contiguous()


@_assign_backward_op.register_fake
def _(q, k, v, z_soft, m, lse, lz2, ent, g_soft, g_st, g_ent, g_probs, scale, temperature, elements):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, scale, temperature, entropy, elements = inputs
    idx, z_soft, _, m, lse, lz2, ent, _ = output
    ctx.mark_non_differentiable(idx, m, lse, lz2)
    ctx.set_materialize_grads(False)  # outputs without a gradient arrive as None: their tile work is skipped
    ctx.save_for_backward(q, k, v, z_soft, m, lse, lz2, ent)
    ctx.config = (scale, temperature, entropy, elements)


def _assign_backward(ctx, _g_idx, g_soft, g_st, _g_m, _g_lse, _g_lz2, g_ent, g_probs):
    q, k, v, z_soft, m, lse, lz2, ent = ctx.saved_tensors
    scale, temperature, entropy, elements = ctx.config
    if not entropy:
        g_ent = g_probs = None
    dq, dk, dv = _assign_backward_op(q, k, v, z_soft, m, lse, lz2, ent, g_soft, g_st, g_ent, g_probs, scale,
                                     temperature, elements)  # fmt: skip
    return dq, dk, dv if g_soft is not None else None, None, None, None, None


torch.library.register_autograd("coda_hf::attention_assign", _assign_backward, setup_context=_setup_context)


def fused_soft_assign(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, temperature: float,
    entropy: bool = True, elements: int = FUSED_BLOCK_ELEMENTS,
):  # fmt: skip
    """``(idx, soft V, soft sg[V], sum_n H(p_n), sum_n p_n)`` of the attention quantizer, in tiles.

    Inputs: ``queries (N, h)``, ``keys (K, h)``, ``values (K, C)``, ``scale`` (``s = scale q k^T``), the
    temperature ``T`` of the entropy distribution ``p = softmax(s / T)``, ``entropy`` (compute the two
    entropy outputs; else zeros), ``elements`` (scores per tile). Outputs as
    :meth:`AttentionQuantizer._soft_assign <coda_hf.quantizers.attention.AttentionQuantizer._soft_assign>`;
    the gradient of ``soft sg[V]`` reaches queries and keys only (IBQ straight-through path). Computed in
    float32 (float64 for float64 inputs) with autocast off; differentiable in queries, keys and values.
    """
    dtype = torch.promote_types(torch.promote_types(queries.dtype, values.dtype), torch.float32)
    q, k, v = queries.to(dtype), keys.to(dtype), values.to(dtype)
    idx, z_soft, st, _, _, _, ent, probs = _assign_op(q, k, v, float(scale), float(temperature), bool(entropy), int(elements))
    ent_sum = ent.sum() if entropy else q.new_zeros(())
    return idx, z_soft.to(values.dtype), st.to(values.dtype), ent_sum, probs


def _workspace(count: int, rows: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
    """``count`` flat buffers of ``rows * cols`` elements, allocated once per call and reused by every tile
    (on CPU a fresh multi-MiB tensor per tile costs page faults comparable to the tile's arithmetic)."""
    return [like.new_empty(rows * cols) for _ in range(count)]


def _view(buffer: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous ``(rows, cols)`` tile at the start of a flat workspace buffer."""
    return buffer[: rows * cols].view(rows, cols)


def _scores(buffer, q, k, t0, tn, c0, kc, scale):
    """Scores ``scale * q k^T`` of one tile into ``buffer`` (recomputed: the same values as the forward's)."""
    qb, kb = q[t0 : t0 + tn], k[c0 : c0 + kc]
    return torch.mm(qb, kb.t(), out=_view(buffer, qb.shape[0], kb.shape[0])).mul_(scale)


def _log_p(s, m, lz2, temperature):
    """``log p = (s - m) / T - lz2`` of a tile of scores ``s`` (``p = softmax(s / T)``), in place."""
    return s.sub_(m[:, None]).div_(temperature).sub_(lz2[:, None])


def _forward_stats(q, k, v, scale, temperature, entropy, elements):
    """Per-token online statistics over code tiles.

    Returns ``idx (N,)``, ``soft V (N, C)``, ``m (N,)`` (max score), ``lse (N,)`` (log-sum-exp of the
    scores), ``lz2 (N,)`` (``log sum_j exp((s_j - m) / T)``) and ``H (N,)`` (entropy of ``p``); the
    last two are empty without ``entropy``.
    """
    n, kk = q.shape[0], k.shape[0]
    tn, kc = _tiles(n, kk, elements)
    scores_buf, exp_buf = _workspace(2, tn, kc, q)
    idx = torch.empty(n, dtype=torch.long, device=q.device)
    z_soft = q.new_empty(n, v.shape[1])
    m_all, lse = q.new_empty(n), q.new_empty(n)
    lz2, ent = q.new_empty(n if entropy else 0), q.new_empty(n if entropy else 0)
    for t0 in range(0, n, tn):
        rows = slice(t0, t0 + tn)
        m = None
        for c0 in range(0, kk, kc):
            s = _scores(scores_buf, q, k, t0, tn, c0, kc, scale)  # (tn, kc)
            bm, bi = row_max(s)
            if m is None:
                new_m, best = bm, bi
            else:
                best = torch.where(bm > m, bi + c0, best)  # strict: ties keep the earlier (first) index
                new_m = torch.maximum(m, bm)
            x = s.sub_(new_m[:, None])  # s - max <= 0
            e1 = torch.clamp(x, min=_LOG_TINY[x.dtype], out=_view(exp_buf, *x.shape)).exp_()
            l1_b, acc_b = e1.sum(1), e1 @ v[c0 : c0 + kc]
            if entropy:  # p = softmax(s / T); d = (s - max) / T; e1's buffer is free again
                d = x.div_(temperature).clamp_(min=_LOG_TINY[x.dtype])
                e2 = torch.exp(d, out=e1)
                l2_b = e2.sum(1)
                w2_b = e2.mul_(d).sum(1)
            if m is None:
                l1, acc = l1_b, acc_b
                if entropy:
                    l2, w2 = l2_b, w2_b
            else:
                a = (m - new_m).exp()
                l1, acc = l1 * a + l1_b, acc * a[:, None] + acc_b
                if entropy:
                    dm = (m - new_m) / temperature
                    a2 = dm.exp()
                    w2, l2 = a2 * (w2 + l2 * dm) + w2_b, l2 * a2 + l2_b  # rescaled to the new max
            m = new_m
        idx[rows], z_soft[rows], m_all[rows], lse[rows] = best, acc / l1[:, None], m, m + l1.log()
        if entropy:
            lz2[rows] = l2.log()
            ent[rows] = lz2[rows] - w2 / l2  # H = log Z - E_p[d]
    return idx, z_soft, m_all, lse, lz2, ent


def _prob_sum(q, k, m, lz2, scale, temperature, elements):
    """``sum_n p_n`` ``(K,)``: a second pass over the tiles once every token's normaliser is known."""
    n, kk = q.shape[0], k.shape[0]
    tn, kc = _tiles(n, kk, elements)
    (scores_buf,) = _workspace(1, tn, kc, q)
    probs = q.new_zeros(kk)
    for t0 in range(0, n, tn):
        rows = slice(t0, t0 + tn)
        for c0 in range(0, kk, kc):
            s = _scores(scores_buf, q, k, t0, tn, c0, kc, scale)
            probs[c0 : c0 + kc] += _exp_(_log_p(s, m[rows], lz2[rows], temperature)).sum(0)
    return probs


def _backward(q, k, v, z_soft, m, lse, lz2, ent, g_soft, g_st, g_ent, g_probs, scale, temperature, elements):
    """Gradients ``(dq, dk, dv)`` from the saved statistics, scores recomputed tile by tile.

    With ``G = (g_soft + g_st) V^T`` and ``soft = softmax(s)``: ``ds = soft (G - <soft, G>)`` plus, for
    the entropy outputs, ``(p / T) (g_probs - <p, g_probs> - g_ent (log p + H))``; ``dv = soft^T g_soft``.
    ``<p, g_probs>`` needs a pass over all codes before the tiles (``E`` below).
    """
    n, kk = q.shape[0], k.shape[0]
    tn, kc = _tiles(n, kk, elements)
    scores_buf, soft_buf, ds_buf = _workspace(3, tn, kc, q)
    grads = [g.to(q.dtype) for g in (g_soft, g_st) if g is not None]
    g_sum = sum(grads) if grads else torch.zeros_like(z_soft)  # (N, C)
    d_soft = (g_sum * z_soft).sum(1)  # (N,) <soft, G> = (g_soft + g_st) . soft V
    entropy = g_ent is not None or g_probs is not None
    g_ent = q.new_zeros(n) if g_ent is None else g_ent.to(q.dtype)  # (N,) gradient of each token's entropy
    g_probs = None if g_probs is None else g_probs.to(q.dtype)
    e_probs = q.new_zeros(n)  # (N,) <p_n, g_probs>
    if g_probs is not None:
        for t0 in range(0, n, tn):
            rows = slice(t0, t0 + tn)
            for c0 in range(0, kk, kc):
                log_p = _log_p(_scores(scores_buf, q, k, t0, tn, c0, kc, scale), m[rows], lz2[rows], temperature)
                e_probs[rows] += _exp_(log_p) @ g_probs[c0 : c0 + kc]
    # dk and dv accumulate transposed: (h, K) += q^T ds is about twice as fast on CPU as (K, h) += ds^T q
    dq, dk_t = torch.zeros_like(q), k.new_zeros(k.shape[1], kk)
    dv_t = v.new_zeros(v.shape[1], kk) if g_soft is not None else None
    for t0 in range(0, n, tn):
        rows = slice(t0, t0 + tn)
        for c0 in range(0, kk, kc):
            cols = slice(c0, c0 + kc)
            s = _scores(scores_buf, q, k, t0, tn, c0, kc, scale)
            soft = _exp_(torch.sub(s, lse[rows, None], out=_view(soft_buf, *s.shape)))  # (tn, kc) softmax(s)
            if dv_t is not None:
                dv_t[:, cols].addmm_(g_soft[rows].to(q.dtype).t(), soft)
            ds = torch.mm(g_sum[rows], v[cols].t(), out=_view(ds_buf, *s.shape))
            ds.sub_(d_soft[rows, None]).mul_(soft)
            if entropy:
                log_p = _log_p(s, m[rows], lz2[rows], temperature)
                coef = torch.add(log_p, ent[rows, None], out=soft)  # soft's buffer is free again
                coef.mul_(-g_ent[rows, None]).sub_(e_probs[rows, None])
                if g_probs is not None:
                    coef += g_probs[None, cols]
                ds += _exp_(log_p).mul_(coef).div_(temperature)
            ds.mul_(scale)
            dq[rows].addmm_(ds, k[cols])
            dk_t[:, cols].addmm_(q[rows].t(), ds)
    return dq, dk_t.t(), None if dv_t is None else dv_t.t()
