"""The bf16-screened eval search of the attention quantizer: the exact argmax, whatever the CPU."""

from __future__ import annotations

import pytest
import torch

import coda_hf.quantizers.attention_screen as screen_module
from coda_hf.quantizers import AttentionQuantizer
from coda_hf.quantizers.attention_fused import attention_argmax
from coda_hf.quantizers.attention_screen import ScreenKeys, screen_supported, screened_argmax
from coda_hf.quantizers.layout import to_tokens


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def exact_argmax(q, k):
    """First index of the maximum of the float64 scores of the float32 inputs."""
    return (q.double() @ k.double().t()).argmax(-1)


@pytest.fixture
def small_blocks(monkeypatch):
    """Several token blocks and tiles at test size."""
    monkeypatch.setattr(screen_module, "SCREEN_BLOCK", 100)
    monkeypatch.setattr(screen_module, "SCREEN_TOKENS", 16)


SPLITS = [None, True, False]  # automatic, split bf16 pairs, plain bf16


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("dim", [4, 16])
def test_screened_argmax_is_the_exact_argmax(small_blocks, dim, split):
    q, k = randn(300, dim, seed=1), randn(2048, dim, seed=2)
    k = k / k.norm(dim=-1, keepdim=True) * torch.linspace(0.5, 2.0, 2048)[:, None]  # uneven key norms
    q[:50] *= 1e-3  # small and large queries: the bound scales with |q|
    q[50:100] *= 1e3
    assert torch.equal(screened_argmax(q, ScreenKeys.build(k), split), exact_argmax(q, k))


@pytest.mark.parametrize("split", SPLITS)
def test_screened_argmax_on_a_data_initialised_codebook(small_blocks, split):
    """The "data" layout scores ``2 f.v - |v|^2`` with large cancelling terms, and sampling features with
    replacement leaves duplicate codes (the screen searches each distinct key once, codes padded to groups)."""
    quantizer = AttentionQuantizer(dim=4, codebook_size=1000, init="data", init_kmeans_iters=0).train()
    quantizer.initialize(randn(1, 4, 20, 20, seed=12), torch.Generator().manual_seed(0))  # 400 features, 1000 codes
    keys = quantizer.keys().detach()
    assert torch.unique(keys, dim=0).shape[0] < 500
    q = quantizer.queries(randn(500, 4, seed=13) * 1.5).detach()
    assert torch.equal(screened_argmax(q, ScreenKeys.build(keys), split), exact_argmax(q, keys))


def test_the_automatic_choice_splits_where_plain_bf16_cannot_separate_the_codes():
    quantizer = AttentionQuantizer(dim=4, codebook_size=1024, init="data", init_kmeans_iters=0).train()
    quantizer.initialize(randn(1, 4, 32, 32, seed=14), torch.Generator().manual_seed(0))
    dense = ScreenKeys.build(quantizer.keys().detach())
    spread = ScreenKeys.build(randn(1024, 16, seed=15))
    assert screen_module._shifted_queries(quantizer.queries(randn(64, 4, seed=16)).detach(), dense, None)[1] is dense.split_t
    assert screen_module._shifted_queries(randn(64, 16, seed=17), spread, None)[1] is spread.plain_t


def test_screened_argmax_ties_and_near_ties_go_to_the_exact_first_index(small_blocks):
    q, k = randn(64, 8, seed=3), randn(1024, 8, seed=4)
    best = exact_argmax(q, k)
    k[900] = k[best[0]]  # a duplicate after the original: the original wins
    k[int(best[1]) + 1 : int(best[1]) + 2] = k[best[1]]
    k[3] = k[best[2]] * (1 + 2e-6)  # a near tie below bf16 resolution, in another group: the larger wins
    k[best[2]] *= 1 - 2e-6
    expected = exact_argmax(q, k)
    assert expected[2] == 3 and expected[0] == best[0]
    assert torch.equal(screened_argmax(q, ScreenKeys.build(k)), expected)


def test_screened_argmax_falls_back_where_the_bound_does_not_apply(small_blocks):
    q, k = randn(40, 8, seed=5), randn(512, 8, seed=6)
    q[0] = 0.0  # every score 0: the first code, as argmax
    q[1, 2] = float("nan")  # the float32 search's answer for NaN scores
    q[2] = -k.sum(0)  # scores of mixed sign around 0
    got = screened_argmax(q, ScreenKeys.build(k))
    assert torch.equal(got, attention_argmax(q, k, 7))
    assert torch.equal(got[3:], exact_argmax(q[3:], k))
    assert screened_argmax(q[:0], ScreenKeys.build(k)).shape == (0,)


def test_screen_supported_only_where_it_pays_and_is_exact(monkeypatch):
    monkeypatch.setattr(screen_module, "native_bf16", lambda: True)
    k = randn(screen_module.SCREEN_MIN_CODES, 4)
    assert screen_supported(randn(3, 4), k)
    assert not screen_supported(randn(3, 4).double(), k.double())  # float64 keeps the float32-style search
    assert not screen_supported(randn(3, 4), k[:-1])  # below SCREEN_MIN_CODES
    assert screen_supported(randn(3, 4), torch.cat([k, k[:1]]))  # not whole groups: padded
    monkeypatch.setattr(screen_module, "native_bf16", lambda: False)  # emulated bf16 is slower than float32
    assert not screen_supported(randn(3, 4), k)


def test_quantizer_eval_search_uses_the_screen_and_rebuilds_it_after_a_change(monkeypatch):
    monkeypatch.setattr(screen_module, "native_bf16", lambda: True)
    monkeypatch.setattr(screen_module, "SCREEN_MIN_CODES", 512)
    builds, build = [], ScreenKeys.build
    monkeypatch.setattr(ScreenKeys, "build", staticmethod(lambda k: builds.append(1) or build(k)))
    quantizer = AttentionQuantizer(dim=4, codebook_size=512, init="independent", eval_losses=False).eval()
    z = randn(2, 4, 6, 6, seed=7)
    f = to_tokens(z)
    expected = exact_argmax(quantizer.queries(f).detach(), quantizer.keys().detach()).reshape(2, 6, 6)
    assert torch.equal(quantizer(z).indices[0], expected)
    quantizer(z)
    assert len(builds) == 1  # the screen is cached with the keys
    with torch.no_grad():
        quantizer.embedding.mul_(2.0)
    quantizer(z)
    assert len(builds) == 2


def test_screened_argmax_resolves_codes_closer_than_float32_rounding(small_blocks):
    q, k = randn(300, 16, seed=8), randn(1024, 16, seed=9) * 0.1
    base = randn(16, seed=10)
    k[64:192] = base + randn(128, 16, seed=11) * 1e-7  # 128 codes within float32 rounding of each other
    q = q * 0.3 + base
    expected = exact_argmax(q, k)
    assert (attention_argmax(q, k, 16) != expected).any()  # float32 scores cannot order them all
    assert torch.equal(screened_argmax(q, ScreenKeys.build(k)), expected)


def test_an_explicit_chunk_size_keeps_the_float32_search(monkeypatch):
    import coda_hf.quantizers.attention as attention_module

    monkeypatch.setattr(screen_module, "native_bf16", lambda: True)
    monkeypatch.setattr(screen_module, "SCREEN_MIN_CODES", 512)
    monkeypatch.setattr(attention_module, "screened_argmax", lambda *a: pytest.fail("the screen ran"))
    quantizer = AttentionQuantizer(dim=4, codebook_size=512, init="independent", eval_losses=False, chunk_size=7).eval()
    z = randn(1, 4, 5, 5, seed=8)
    expected = attention_argmax(quantizer.queries(to_tokens(z)).detach(), quantizer.keys().detach(), 7)
    assert torch.equal(quantizer(z).indices[0].flatten(), expected)
