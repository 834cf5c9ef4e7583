"""The attention quantizer's tiled kernels: the fused training function and the eval argmax search."""

from __future__ import annotations

import pytest
import torch

import coda_hf.quantizers.attention_fused as fused
from coda_hf.quantizers import AttentionQuantizer, MultiScaleResidualQuantizer
from coda_hf.quantizers.attention import entropy_terms
from coda_hf.quantizers.attention_fused import attention_argmax, fused_soft_assign, row_max


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def reference(q, k, v, scale, temperature):
    """The five outputs written out with whole (N, K) matrices."""
    logits = q @ k.t() * scale
    soft = logits.softmax(-1)
    logp = (logits / temperature).log_softmax(-1)
    return logits.argmax(-1), soft @ v, soft @ v.detach(), -(logp.exp() * logp).sum(), logp.exp().sum(0)


@pytest.fixture
def small_tiles(monkeypatch):
    """128 codes per tile so that tiny codebooks still span several code tiles."""
    monkeypatch.setattr(fused, "FUSED_CODE_BLOCK", 128)


@pytest.mark.parametrize("codes", [300, 256])  # 300: ragged last tile and the plain-max fallback of row_max
def test_fused_matches_reference_values_and_gradients_float64(small_tiles, codes):
    q, k, v = (randn(45, 6, seed=1, dtype=torch.float64), randn(codes, 6, seed=2, dtype=torch.float64),
               randn(codes, 5, seed=3, dtype=torch.float64))  # fmt: skip
    weights = randn(45, 5, seed=4, dtype=torch.float64), randn(45, 5, seed=5, dtype=torch.float64)
    g_ent, g_probs = randn((), seed=6, dtype=torch.float64), randn(codes, seed=7, dtype=torch.float64)
    results = []
    for fn in (reference, lambda *a: fused_soft_assign(*a, elements=16 * 128)):  # 16 tokens x 128 codes per tile
        params = [t.clone().requires_grad_(True) for t in (q, k, v)]
        idx, soft_v, st, ent, probs = fn(*params, 0.7, 0.2)
        loss = (soft_v * weights[0]).sum() + (st * weights[1]).sum() + ent * g_ent + (probs * g_probs).sum()
        loss.backward()
        results.append((idx, soft_v, st, ent, probs, *(p.grad for p in params)))
    ref, got = results
    assert torch.equal(ref[0], got[0])
    for a, b in zip(ref[1:], got[1:]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_fused_gradcheck_float64(small_tiles):
    """Finite differences of soft V, the summed sample entropy and the summed probabilities (several tiles)."""
    inputs = [randn(n, d, seed=s, dtype=torch.float64).requires_grad_(True) for n, d, s in ((7, 3, 0), (260, 3, 1), (260, 2, 2))]

    def outputs(q, k, v):
        _, soft_v, _, ent, probs = fused_soft_assign(q, k, v, 0.9, 0.5, True, 3 * 128)
        return soft_v, ent, probs

    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_fused_straight_through_output_sends_no_gradient_to_values():
    q, k, v = (randn(5, 4, seed=s).requires_grad_(True) for s in range(3))
    _, _, st, _, _ = fused_soft_assign(q, k.detach().requires_grad_(True), v, 1.0, 0.5)
    st.sum().backward()
    assert v.grad is None and q.grad is not None


def test_fused_without_entropy_returns_zeros_and_matches():
    q, k, v = randn(9, 4, seed=1), randn(200, 4, seed=2), randn(200, 3, seed=3)
    idx, soft_v, _, ent, probs = fused_soft_assign(q, k, v, 0.5, 0.01, entropy=False)
    ref = reference(q, k, v, 0.5, 0.01)
    assert torch.equal(idx, ref[0]) and float(ent) == 0.0 and not probs.any()
    torch.testing.assert_close(soft_v, ref[1])


def test_fused_low_temperature_entropy_float32():
    """T = 0.01 (the paper's): most entropy terms underflow; the clamped exponentials change nothing visible."""
    q = torch.nn.functional.rms_norm(randn(64, 16, seed=1), (16,))
    k = torch.nn.functional.rms_norm(randn(1024, 16, seed=2), (16,))
    v = randn(1024, 8, seed=3)
    got = fused_soft_assign(q, k, v, 0.25, 0.01, elements=8 * 256)
    ent, probs = entropy_terms(q @ k.t() * 0.25, 0.01)
    torch.testing.assert_close(got[3], ent, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[4], probs, rtol=1e-4, atol=1e-6)


def test_fused_tiles_never_exceed_the_element_budget(monkeypatch, small_tiles):
    shapes = []
    original = fused._scores

    def spy(buffer, q, k, t0, tn, c0, kc, scale):
        out = original(buffer, q, k, t0, tn, c0, kc, scale)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(fused, "_scores", spy)
    q, k, v = (randn(100, 4, seed=1).requires_grad_(True), randn(512, 4, seed=2).requires_grad_(True),
               randn(512, 3, seed=3).requires_grad_(True))  # fmt: skip
    _, soft_v, _, ent, probs = fused_soft_assign(q, k, v, 1.0, 0.1, elements=8 * 128)
    (soft_v.sum() + ent + probs.pow(2).sum()).backward()
    assert shapes and max(r * c for r, c in shapes) <= 8 * 128
    # every tile is visited by the forward, the probability pass, and two backward passes
    assert len(shapes) == 4 * (-(-100 // 8)) * (512 // 128)


def test_row_max_first_index_ties_and_nan():
    s = randn(6, 256, seed=0)
    s[1, 70] = s[1, 200] = s[1].max() + 1  # tie across groups
    s[2, 3] = s[2, 5] = s[2].max() + 1  # tie inside a group
    s[3, 130] = float("nan")
    values, indices = row_max(s)
    assert torch.equal(indices, s.argmax(-1))
    torch.testing.assert_close(values, s.max(-1).values, equal_nan=True)
    odd = randn(3, 100, seed=1)  # width not a multiple of the group: plain max
    assert torch.equal(row_max(odd)[1], odd.argmax(-1))


def test_attention_argmax_equals_the_full_argmax():
    q, k = randn(37, 8, seed=1), randn(640, 8, seed=2)
    k[100] = k[600] = k[5]  # duplicate codes: ties go to the first
    expected = (q @ k.t()).argmax(-1)
    for chunk in (1, 5, 37, 100):
        assert torch.equal(attention_argmax(q, k, chunk), expected)
    assert torch.equal(fused._traced_argmax(q, k), expected)


def _quantizer_pair(cls_kwargs, **kw):
    """The same quantizer twice, reference path (fused_threshold=None) and fused (0)."""
    out = []
    for threshold in (None, 0):
        torch.manual_seed(0)
        out.append(cls_kwargs(fused_threshold=threshold, **kw).double().train())
    return out


@pytest.mark.parametrize("stack", [False, True])
def test_quantizer_fused_path_equals_reference_path_float64(small_tiles, stack):
    """Indices, output, both losses (per-sample and batch entropy) and every gradient of the quantizer."""
    kw = dict(codebook_size=320, hidden_dim=8, entropy_temperature=0.05, entropy_weight=0.3, beta=0.2)
    if stack:
        build = lambda **o: MultiScaleResidualQuantizer(dim=4, scales=[1, 3, 6], quantizer_kwargs={**kw, **o})  # noqa: E731
    else:
        build = lambda **o: AttentionQuantizer(dim=4, **kw, **o)  # noqa: E731
    z = randn(2, 4, 6, 6, seed=1, dtype=torch.float64)
    g = randn(2, 4, 6, 6, seed=2, dtype=torch.float64)
    results = []
    for q in _quantizer_pair(build):
        x = z.clone().requires_grad_(True)
        out = q(x)
        ((out.quantized * g).sum() + out.loss).backward()
        results.append((out, x.grad, {n: p.grad for n, p in q.named_parameters()}))
    (ref, ref_gz, ref_gp), (got, got_gz, got_gp) = results
    assert all(torch.equal(a, b) for a, b in zip(ref.indices, got.indices))
    torch.testing.assert_close(got.quantized, ref.quantized, rtol=1e-12, atol=1e-12)
    assert set(got.losses) == set(ref.losses) == {"quant", "entropy"}
    for name in ref.losses:  # the reference computes the entropy terms in float32
        torch.testing.assert_close(got.losses[name], ref.losses[name].double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_gz, ref_gz, rtol=1e-5, atol=1e-7)
    for name, grad in ref_gp.items():
        torch.testing.assert_close(got_gp[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fused_threshold_selects_the_path(monkeypatch):
    calls = []
    original = fused._assign_op
    monkeypatch.setattr(fused, "_assign_op", lambda *a: calls.append(a[0].shape[0]) or original(*a))
    z = randn(1, 4, 4, 4, seed=1)  # 16 tokens x 64 codes = 1024 scores
    for threshold, expected in ((1024, [16]), (1025, []), (None, []), (0, [16])):
        calls.clear()
        AttentionQuantizer(dim=4, codebook_size=64, fused_threshold=threshold).train()(z)
        assert calls == expected, threshold
    calls.clear()
    q = AttentionQuantizer(dim=4, codebook_size=64, fused_threshold=0).eval()
    with torch.no_grad():
        with_losses = q(z)  # eval losses through the fused kernel too
        assert calls == [16]
        assert torch.equal(q(z, with_losses=False).indices[0], with_losses.indices[0]) and calls == [16]
    assert AttentionQuantizer(dim=4).fused_threshold == 2**22
    with pytest.raises(ValueError, match="fused_threshold"):
        AttentionQuantizer(dim=4, fused_threshold=-1)


def test_fused_eval_losses_equal_reference_eval_losses():
    z = randn(2, 4, 5, 5, seed=3)
    outs = []
    for threshold in (None, 0):
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(AttentionQuantizer(dim=4, codebook_size=200, fused_threshold=threshold).eval()(z))
    assert torch.equal(outs[0].indices[0], outs[1].indices[0])
    for name in ("quant", "entropy"):
        torch.testing.assert_close(outs[1].losses[name], outs[0].losses[name], rtol=1e-4, atol=1e-6)
