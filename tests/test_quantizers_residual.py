"""AttentionQuantizer, ResidualQuantizer and MultiScaleResidualQuantizer: options and math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coda_hf.quantizers import (
    AttentionQuantizer,
    MultiScaleResidualQuantizer,
    ResidualQuantizer,
    VectorQuantizer,
    build_quantizer,
)
from coda_hf.quantizers.attention import ATTENTION_CHUNK_ELEMENTS, entropy_penalty, entropy_terms
from coda_hf.quantizers.layout import from_tokens, to_tokens
from coda_hf.quantizers.multiscale import FLUX_SCALES, MAR_SCALES, scaled_size


def randn(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(requires_grad)


def attention(seed=0, **kw) -> AttentionQuantizer:
    torch.manual_seed(seed)
    cfg = dict(dim=8, codebook_size=64, hidden_dim=16)
    cfg.update(kw)
    return AttentionQuantizer(**cfg)


# ---------------------------------------------------------------------------------------------
# AttentionQuantizer
# ---------------------------------------------------------------------------------------------


def manual_attention(q: AttentionQuantizer, f: torch.Tensor):
    """The method written out once more from the paper's description: (N, C) -> logits, soft, idx, V."""
    qn = F.rms_norm(f @ q.q_proj.weight.t() + q.q_proj.bias, (q.hidden_dim,), q.q_norm.weight, q.q_norm.eps)
    e = q.embedding
    kn = F.rms_norm(e @ q.k_proj.weight.t() + q.k_proj.bias, (q.hidden_dim,), q.k_norm.weight, q.k_norm.eps)
    values = e @ q.v_proj.weight.t() + q.v_proj.bias  # (K, C)
    logits = qn @ kn.t() / math.sqrt(q.hidden_dim)  # (N, K)
    return logits, logits.softmax(-1), logits.argmax(-1), values


def test_attention_training_losses_follow_ibq_and_magvit_formulas():
    q = attention(beta=0.3, entropy_weight=0.2, entropy_temperature=0.5).train()
    z = randn(2, 8, 3, 5)
    out = q(z)
    f = to_tokens(z)
    logits, soft, idx, values = manual_attention(q, f)
    assert torch.equal(out.indices[0].reshape(-1), idx)
    hard = values[idx]
    torch.testing.assert_close(to_tokens(out.quantized), hard, rtol=1e-5, atol=1e-5)
    quant = F.mse_loss(soft @ values, f) + (1 + 0.3) * F.mse_loss(hard, f)
    torch.testing.assert_close(out.losses["quant"], quant, rtol=1e-5, atol=1e-6)
    p = (logits / 0.5).softmax(-1)
    sample_h = -(p * p.log()).sum(-1).mean()
    avg = p.mean(0)
    expected = 0.2 * (sample_h - (-(avg * avg.log()).sum()))
    torch.testing.assert_close(out.losses["entropy"], expected, rtol=1e-5, atol=1e-6)
    assert set(out.losses) == {"quant", "entropy"}


def test_attention_ibq_straight_through_gradients():
    """Value of onehot @ V; gradient to the input through soft @ sg[V], to V through the hard code only."""
    q = attention(entropy_weight=0.0).train()
    z = randn(1, 8, 2, 3, requires_grad=True)
    g = randn(1, 8, 2, 3, seed=4)
    (q(z).quantized * g).sum().backward()
    grad_z, grad_v = z.grad.clone(), q.v_proj.weight.grad.clone()

    z2 = z.detach().clone().requires_grad_(True)
    q.zero_grad()
    logits, soft, idx, values = manual_attention(q, to_tokens(z2))
    onehot = F.one_hot(idx, q.codebook_size).float()
    st = from_tokens((onehot - soft.detach() + soft) @ values, 1, 2, 3)  # the paper's formula
    (st * g).sum().backward()
    torch.testing.assert_close(grad_z, z2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_v, q.v_proj.weight.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 0, None])
def test_attention_eval_indices_identical_to_unchunked_and_training(chunk_size):
    q = attention(codebook_size=300, chunk_size=chunk_size)
    z = randn(3, 8, 9, 7)
    q.train()
    train_out = q(z)
    _, _, full_idx, _ = manual_attention(q, to_tokens(z))
    q.eval()
    with torch.no_grad():
        out = q(z)
    assert torch.equal(out.indices[0], train_out.indices[0])
    assert torch.equal(out.indices[0].reshape(-1), full_idx)
    assert torch.equal(out.quantized, q.indices_to_codes(out.indices))
    for name in ("quant", "entropy"):  # chunked eval losses = the training formulas' values
        torch.testing.assert_close(out.losses[name], train_out.losses[name].detach(), rtol=1e-4, atol=1e-5)


def test_attention_eval_never_builds_the_full_score_matrix():
    q = attention(codebook_size=256, chunk_size=10).eval()
    rows = []
    original = q.logits

    def spy(queries, keys):
        rows.append(queries.shape[0])
        return original(queries, keys)

    q.logits = spy
    with torch.no_grad():
        q(randn(2, 8, 8, 8))  # 128 tokens
    assert max(rows) == 10 and sum(rows) == 128
    q.chunk_size = None  # automatic: ATTENTION_CHUNK_ELEMENTS / K rows
    rows.clear()
    q2 = attention(codebook_size=ATTENTION_CHUNK_ELEMENTS // 4).eval()
    assert q2._eval_chunk(10_000) == 4
    q2.logits, original = spy, q2.logits
    with torch.no_grad():
        q2(randn(1, 8, 3, 3))
    assert rows == [4, 4, 1]


def test_attention_options_entropy_off_eval_losses_off_and_dims():
    q = attention(entropy_weight=0.0, codebook_dim=4, hidden_dim=12, init_std=0.1, eval_losses=False)
    assert q.embedding.shape == (64, 4)
    assert q.k_proj.in_features == 4 and q.k_proj.out_features == 12 and q.v_proj.out_features == 8
    assert q.q_proj.in_features == 8 and q.q_proj.out_features == 12
    assert float(q.embedding.detach().std()) < 0.2
    out = q(randn(2, 8, 3, 3))
    assert set(out.losses) == {"quant"}
    q.eval()
    assert q(randn(2, 8, 3, 3)).losses == {}
    d = AttentionQuantizer(dim=6, codebook_size=16)
    assert d.codebook_dim == 6 and d.hidden_dim == 6
    assert d.beta == 0.05 and d.entropy_weight == 0.05 and d.entropy_temperature == 0.01


def test_attention_queries_and_keys_are_rms_normalised():
    q = attention()
    rms = lambda x: x.pow(2).mean(-1).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(q.queries(randn(5, 8))), torch.ones(5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rms(q.keys()), torch.ones(64), rtol=1e-4, atol=1e-4)


def test_entropy_penalty_extremes():
    k = 8
    uniform_codes_confident = torch.eye(k) * 100.0  # each sample sure of a different code
    ent, probs = entropy_terms(uniform_codes_confident, temperature=1.0)
    assert float(entropy_penalty(ent, probs, k)) == pytest.approx(-math.log(k), abs=1e-4)
    collapsed = torch.zeros(k, k)  # every sample uniform: sample entropy = codebook entropy
    ent, probs = entropy_terms(collapsed, temperature=1.0)
    assert float(entropy_penalty(ent, probs, k)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(codebook_size=0), "codebook_size"),
        (dict(entropy_temperature=0.0), "entropy_temperature"),
        (dict(chunk_size=-1), "chunk_size"),
        (dict(hidden_dim=0), "hidden_dim"),
        (dict(codebook_dim=0), "codebook_dim"),
    ],
)
def test_attention_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        attention(**kw)


# ---------------------------------------------------------------------------------------------
# ResidualQuantizer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_residual_equals_manual_level_loop(shared):
    torch.manual_seed(0)
    r = ResidualQuantizer(dim=8, num_levels=3, quantizer="vq", quantizer_kwargs={"codebook_size": 16},
                          shared_codebook=shared)
    assert len(r.quantizers) == (1 if shared else 3)
    assert all(isinstance(m, VectorQuantizer) for m in r.quantizers)
    r.eval()
    z = randn(2, 8, 4, 4)
    with torch.no_grad():
        out = r(z)
        residual, total, losses, errors = z, torch.zeros_like(z), {}, []
        for level in range(3):
            lvl = r.quantizers[0 if shared else level](residual)
            assert torch.equal(lvl.indices[0], out.indices[level])
            total, residual = total + lvl.quantized, residual - lvl.quantized
            for k, v in lvl.losses.items():
                losses[k] = losses.get(k, 0) + v
            errors.append(F.mse_loss(total, z))
    torch.testing.assert_close(out.quantized, total)
    assert set(out.losses) == set(losses) == {"codebook", "commitment"}
    for k in losses:
        torch.testing.assert_close(out.losses[k], losses[k])
    torch.testing.assert_close(out.stats["quant_error"], torch.stack(errors))


def test_residual_gradient_to_input_is_identity_for_straight_through_inner():
    torch.manual_seed(0)
    r = ResidualQuantizer(dim=8, num_levels=4, quantizer="vq", quantizer_kwargs={"codebook_size": 16})
    z = randn(2, 8, 3, 3, requires_grad=True)
    g = randn(2, 8, 3, 3, seed=2)
    (r(z).quantized * g).sum().backward()
    torch.testing.assert_close(z.grad, g, rtol=1e-5, atol=1e-6)


def test_residual_utilization_shared_vs_per_level():
    torch.manual_seed(0)
    kw = dict(dim=4, num_levels=2, quantizer="fsq", quantizer_kwargs={"levels": [3, 3]})
    shared = ResidualQuantizer(shared_codebook=True, **kw)
    per_level = ResidualQuantizer(shared_codebook=False, **kw)
    z = randn(2, 4, 4, 4)
    out_s, out_p = shared(z), per_level(z)
    used = torch.cat([i.reshape(-1) for i in out_s.indices]).unique().numel()
    assert float(out_s.stats["utilization"]) == pytest.approx(used / 9)
    per = [i.unique().numel() / 9 for i in out_p.indices]
    assert float(out_p.stats["utilization"]) == pytest.approx(sum(per) / 2)
    assert shared.codebook_size == 9 and shared.num_tokens(4, 4) == 32


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_levels=0), "at least one level"),
        (dict(quantizer="nope"), "unknown quantizer"),
        (dict(quantizer_kwargs={"dim": 3, "codebook_size": 8}), "dim"),
        (
            dict(quantizer="residual", quantizer_kwargs={"quantizer": "fsq", "quantizer_kwargs": {"levels": [3, 3]}}),
            "inner quantizer must have one",
        ),
        (dict(quantizer_kwargs=[1, 2]), "quantizer_kwargs"),
    ],
)
def test_residual_bad_config(kw, match):
    cfg = dict(dim=8, num_levels=2, quantizer="vq", quantizer_kwargs={"codebook_size": 8})
    cfg.update(kw)
    with pytest.raises(ValueError, match=match):
        ResidualQuantizer(**cfg)


# ---------------------------------------------------------------------------------------------
# MultiScaleResidualQuantizer
# ---------------------------------------------------------------------------------------------


def test_multiscale_defaults_are_coda():
    m = MultiScaleResidualQuantizer(dim=4, quantizer_kwargs={"codebook_size": 16})
    assert m.scales == list(MAR_SCALES) and m.shared_codebook and len(m.quantizers) == 1
    assert isinstance(m.quantizers[0], AttentionQuantizer) and m.num_levels == 10


@pytest.mark.parametrize("scales, side, tokens", [(MAR_SCALES, 16, 680), (FLUX_SCALES, 32, 2240)])
def test_multiscale_token_counts_of_the_released_models(scales, side, tokens):
    torch.manual_seed(0)
    m = MultiScaleResidualQuantizer(dim=4, scales=list(scales), quantizer_kwargs={"codebook_size": 16}).eval()
    assert m.level_shapes(side, side) == [(s, s) for s in scales]
    assert m.num_tokens(side, side) == tokens
    with torch.no_grad():
        out = m(randn(1, 4, side, side))
    assert out.token_ids.shape == (1, tokens)
    assert torch.equal(m.decode_indices(out.token_ids, latent_size=(side, side)), out.quantized)


def test_multiscale_size_policy_scales_proportionally():
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4, 8], quantizer_kwargs={"codebook_size": 16})
    assert m.level_shapes(8, 8) == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert m.level_shapes(4, 12) == [(1, 2), (1, 3), (2, 6), (4, 12)]  # round half up, at least 1
    assert m.level_shapes(16, 16) == [(2, 2), (4, 4), (8, 8), (16, 16)]
    assert scaled_size(1, 8, 4) == 1 and scaled_size(3, 8, 4) == 2 and scaled_size(1, 16, 1) == 1
    with pytest.raises(ValueError, match="latent size"):
        m.level_shapes(0, 4)
    m.eval()
    with torch.no_grad():
        out = m(randn(2, 4, 4, 12))
    assert [tuple(i.shape[1:]) for i in out.indices] == m.level_shapes(4, 12)
    assert torch.equal(m.indices_to_codes(out.indices), out.quantized)


@pytest.mark.parametrize("inner", ["attention", "vq"])
def test_multiscale_equals_manual_area_bicubic_loop(inner):
    torch.manual_seed(0)
    kw = {"codebook_size": 32}
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 3, 6], quantizer=inner, quantizer_kwargs=kw).eval()
    z = randn(2, 4, 6, 6)
    with torch.no_grad():
        out = m(z)
        residual, total = z, torch.zeros_like(z)
        for level, s in enumerate([1, 3, 6]):
            x = F.interpolate(residual, size=(s, s), mode="area") if s != 6 else residual
            lvl = m.quantizers[0](x)
            assert torch.equal(lvl.indices[0], out.indices[level])
            up = F.interpolate(lvl.quantized, size=(6, 6), mode="bicubic") if s != 6 else lvl.quantized
            total, residual = total + up, residual - up
    torch.testing.assert_close(out.quantized, total)
    torch.testing.assert_close(out.stats["quant_error"][-1], F.mse_loss(total, z))


def test_multiscale_per_level_codebooks_and_gradients():
    torch.manual_seed(0)
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4], quantizer_kwargs={"codebook_size": 16},
                                    shared_codebook=False)
    assert len(m.quantizers) == 3 and m.level_quantizer(2) is m.quantizers[2]
    z = randn(2, 4, 4, 4, requires_grad=True)
    out = m(z)
    (out.quantized.square().sum() + out.loss).backward()
    assert z.grad.abs().sum() > 0
    for inner in m.quantizers:  # every level's codebook and projections learn
        assert inner.embedding.grad.abs().sum() > 0 and inner.q_proj.weight.grad.abs().sum() > 0
    names = {k.split(".")[1] for k in m.state_dict() if k.startswith("quantizers.")}
    assert names == {"0", "1", "2"}


@pytest.mark.parametrize(
    "scales, match",
    [([], "non-empty"), ([2, 1], "strictly increasing"), ([1, 1, 2], "strictly increasing"), ([0, 2], "positive"),
     ([1, 2.5], "positive ints")],
)
def test_multiscale_bad_scales(scales, match):
    with pytest.raises(ValueError, match=match):
        MultiScaleResidualQuantizer(dim=4, scales=scales)


def test_build_by_name_with_nested_json_kwargs():
    m = build_quantizer("multiscale", dim=4, scales=[1, 2], quantizer="fsq", quantizer_kwargs={"levels": [3, 3]})
    assert m.to_dict() == {"name": "multiscale", "dim": 4, "scales": [1, 2], "quantizer": "fsq",
                           "quantizer_kwargs": {"levels": [3, 3]}, "shared_codebook": True}


def test_attention_aligned_init_keys_are_queries_of_values():
    q = attention(codebook_size=512, codebook_dim=6, hidden_dim=16)
    e = q.embedding.detach()
    torch.testing.assert_close(q.k_proj(e), q.q_proj(q.v_proj(e)), rtol=1e-5, atol=1e-5)
    # before any training the chosen code already points along the feature: error below the variance
    z = randn(4, 8, 8, 8)
    q.eval()
    with torch.no_grad():
        err = float(q(z).stats["quant_error"][0]) / float(z.var())
    assert err < 0.9  # measured ~0.6; a code unrelated to the input gives > 1
    independent = attention(codebook_size=512, codebook_dim=6, hidden_dim=16, init="independent")
    assert not torch.allclose(independent.k_proj(e), independent.q_proj(independent.v_proj(e)), atol=1e-3)


def test_multiscale_with_aligned_attention_stays_bounded_at_initialisation():
    torch.manual_seed(0)
    m = MultiScaleResidualQuantizer(dim=8, quantizer_kwargs={"codebook_size": 256, "hidden_dim": 32}).eval()
    z = randn(2, 8, 16, 16)
    with torch.no_grad():
        err = m(z).stats["quant_error"] / float(z.var())  # (10,)
    assert float(err.max()) < 2.5, err  # measured 1.1-1.9 over seeds; init="independent": 8-70


@pytest.mark.parametrize("name", ["attention", "multiscale"])
def test_training_output_value_is_exactly_the_decoded_codes(name):
    """The straight-through terms add exactly zero: a training forward's value is the hard code sum."""
    torch.manual_seed(0)
    if name == "attention":
        q = attention()
    else:
        q = MultiScaleResidualQuantizer(dim=8, scales=[1, 2, 4], quantizer_kwargs={"codebook_size": 32})
    out = q.train()(randn(2, 8, 4, 4, requires_grad=True))
    with torch.no_grad():
        assert torch.equal(q.indices_to_codes(out.indices), out.quantized.detach())


def test_stacked_indices_with_wrong_level_sizes_are_rejected():
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4], quantizer_kwargs={"codebook_size": 16})
    good = [torch.zeros(1, s, s, dtype=torch.long) for s in (1, 2, 4)]
    assert m.indices_to_codes(good).shape == (1, 4, 4, 4)
    bad = [torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long), good[2]]
    with pytest.raises(ValueError, match="level 1"):
        m.decode_indices(bad)
    with pytest.raises(ValueError, match="expected 3 levels"):
        m.indices_to_codes(good[:2])


def test_attention_train_chunk_size_checkpoints_with_identical_results():
    z = randn(2, 8, 5, 5, requires_grad=True)
    g = randn(2, 8, 5, 5, seed=9)
    results = []
    for chunk in (0, 7):
        q = attention(codebook_size=128, train_chunk_size=chunk).train()
        z.grad = None
        out = q(z)
        ((out.quantized * g).sum() + out.loss).backward()
        grads = {k: p.grad.clone() for k, p in q.named_parameters()}
        results.append((out, z.grad.clone(), grads))
    (a, gz_a, gp_a), (b, gz_b, gp_b) = results
    assert torch.equal(a.indices[0], b.indices[0]) and torch.equal(a.quantized, b.quantized)
    for k in a.losses:
        torch.testing.assert_close(a.losses[k], b.losses[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gz_a, gz_b, rtol=1e-4, atol=1e-6)
    for k in gp_a:
        torch.testing.assert_close(gp_a[k], gp_b[k], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="train_chunk_size"):
        attention(train_chunk_size=-1)


def test_attention_eval_key_cache_follows_parameter_updates():
    """The eval search reuses the codebook keys across calls/levels, never after the parameters change."""
    q = attention().eval()
    z = randn(2, 8, 4, 4)
    first = q(z).indices[0]
    assert q._eval_keys() is q._eval_keys()  # reused while nothing changed
    with torch.no_grad():
        torch.testing.assert_close(q._eval_keys(), q.keys())
    opt = torch.optim.SGD(q.parameters(), lr=10.0)
    q.train()
    sum(q(z).losses.values()).backward()
    opt.step()  # in-place update: version counters move
    q.eval()
    with torch.no_grad():
        torch.testing.assert_close(q._eval_keys(), q.keys())
    other = attention(seed=3).eval()
    q.load_state_dict(other.state_dict())
    assert torch.equal(q(z).indices[0], other(z).indices[0])
    q.double()
    with torch.no_grad():
        assert q._eval_keys().dtype == torch.float64
        torch.testing.assert_close(q._eval_keys(), q.keys())
    assert first.shape == (2, 4, 4)


# ---------------------------------------------------------------------------------------------
# AttentionQuantizer initialisations: "nearest" (exact nearest-neighbour argmax) and "data"
# ---------------------------------------------------------------------------------------------


def _values_are_rows_of(values: torch.Tensor, tokens: torch.Tensor) -> bool:
    """Every ``(K, C)`` value equals one of the ``(N, C)`` tokens."""
    gap = (values[:, None, :] - tokens[None, :, :]).abs().amax(dim=-1)  # (K, N) max-abs differences
    return bool((gap.min(dim=1).values < 1e-5).all())


@pytest.mark.parametrize("scale", [1.0, 0.01])  # 0.01: the small residuals of fine levels
def test_attention_nearest_init_argmax_is_nearest_value(scale):
    q = attention(codebook_size=256, init="nearest", hidden_dim=None)
    assert (q.codebook_dim, q.hidden_dim) == (10, 10)  # dim + 2
    z = randn(2, 8, 6, 6) * scale
    tokens = to_tokens(z)
    expected = torch.cdist(tokens, q.values().detach()).argmin(dim=1)
    for mode in (q.eval, q.train):
        mode()
        assert torch.equal(q(z).indices[0].reshape(-1), expected)


def test_attention_nearest_init_logits_follow_squared_distance():
    q = attention(codebook_size=128, init="nearest", init_sharpness=7.0, hidden_dim=24)
    f = to_tokens(randn(1, 8, 3, 3, seed=2))  # (9, C)
    v = q.values().detach()
    with torch.no_grad():
        logits = q.logits(q.queries(f), q.keys())  # (9, K)
    sq = f.pow(2).sum(-1, keepdim=True)
    expected = 7.0 * (sq - torch.cdist(f, v).pow(2)) / (1 + sq).sqrt()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)


def test_attention_init_validation():
    with pytest.raises(ValueError, match="init must be one of"):
        attention(init="kmeans")
    with pytest.raises(ValueError, match="codebook_dim >= dim \\+ 2"):
        attention(init="nearest", codebook_dim=9)
    with pytest.raises(ValueError, match="hidden_dim >= dim \\+ 2"):
        attention(init="data", hidden_dim=9)
    with pytest.raises(ValueError, match="init_sharpness must be > 0"):
        attention(init="nearest", init_sharpness=0.0)
    with pytest.raises(ValueError, match="needs init='data'"):
        attention(init="nearest").data_init(torch.randn(4, 8))
    with pytest.raises(ValueError, match="features must be"):
        attention(init="data").data_init(torch.randn(4, 7))
    with pytest.raises(ValueError, match="values must have shape"):
        attention(init="nearest").nearest_init(torch.randn(3, 8))
    with pytest.raises(ValueError, match="nearest_init needs codebook_dim"):
        attention().nearest_init(torch.randn(64, 8))  # aligned init: codebook_dim = dim
    independent = attention(init="independent", codebook_size=512, codebook_dim=6)
    e = independent.embedding.detach()
    assert not torch.allclose(independent.k_proj(e), independent.q_proj(independent.v_proj(e)), atol=1e-3)


@pytest.mark.parametrize("n_images", [2, 1])  # 128 tokens >= K = 64 (no repeats); 16 < K (with replacement)
def test_attention_data_init_samples_the_first_training_batch(n_images):
    q = attention(init="data", hidden_dim=None)
    z = randn(n_images, 8, 8, 8) if n_images == 2 else randn(1, 8, 4, 4)
    tokens = to_tokens(z)
    q.eval()
    q(z)
    assert not bool(q.data_initialized)  # eval never initialises
    q.train()
    out = q(z)
    values = q.values().detach()
    assert bool(q.data_initialized) and _values_are_rows_of(values, tokens)
    exact = (to_tokens(out.quantized.detach()) - tokens).abs().amax(dim=-1) < 1e-5  # (N,)
    if n_images == 2:  # sampled without replacement: each sampled token is its own nearest code
        assert torch.unique(values, dim=0).shape[0] == q.codebook_size
        assert int(exact.sum()) >= q.codebook_size
    else:  # 16 tokens < 64 codes: every token is a code
        assert bool(exact.all())
    q(randn(2, 8, 8, 8, seed=5))  # a second training batch does not re-sample
    torch.testing.assert_close(q.values().detach(), values)
    # the flag is state: a reloaded quantizer keeps its codebook on its next training forward
    fresh = attention(seed=1, init="data", hidden_dim=None)
    fresh.load_state_dict(q.state_dict())
    assert bool(fresh.data_initialized)
    fresh.train()
    fresh(randn(2, 8, 8, 8, seed=6))
    torch.testing.assert_close(fresh.values().detach(), values)


def test_attention_data_init_flag_is_cached_but_follows_the_buffer(monkeypatch):
    q = attention(init="data", hidden_dim=None)
    blank = {k: v.clone() for k, v in q.state_dict().items()}
    q.train()
    q(randn(2, 8, 8, 8))
    reads = []
    original = torch.Tensor.__bool__

    def spy(t):
        reads.append(t)
        return original(t)

    monkeypatch.setattr(torch.Tensor, "__bool__", spy)
    assert not q.needs_data_init
    reads.clear()
    for _ in range(3):  # no further host reads of the buffer while it is unchanged
        assert not q.needs_data_init
    assert not any(t is q.data_initialized for t in reads)
    q.load_state_dict(blank)  # written in place: read again
    assert q.needs_data_init
    q.data_initialized = torch.tensor(True)  # replaced
    assert not q.needs_data_init


@pytest.mark.parametrize("shared", [True, False])
def test_stack_data_init_gives_each_codebook_the_levels_it_quantizes(shared, monkeypatch):
    torch.manual_seed(0)
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4], shared_codebook=shared,
                                    quantizer_kwargs={"codebook_size": 16, "init": "data"})  # fmt: skip
    calls = []
    original = AttentionQuantizer.data_init

    def spy(self, features, generator=None):
        calls.append((self, features.shape[0]))
        return original(self, features, generator)

    monkeypatch.setattr(AttentionQuantizer, "data_init", spy)
    z = randn(2, 4, 4, 4)
    assert m.needs_data_init
    m.train()
    m(z)
    assert not m.needs_data_init
    per_level = [2 * 1, 2 * 4, 2 * 16]  # B * h_l * w_l tokens
    if shared:  # one codebook on the tokens of all levels, once per pass
        assert calls == [(m.quantizers[0], sum(per_level))] * 2
    else:  # level by level, once each
        assert calls == [(m.quantizers[i], n) for i, n in enumerate(per_level)]
    assert all(bool(q.data_initialized) for q in m.quantizers)
    m(z)
    m.initialize(z)  # nothing pending: a no-op
    assert len(calls) == (2 if shared else 3)  # initialised once
    with pytest.raises(ValueError, match="expects latents of shape"):
        m.initialize(z[0])
    vq = VectorQuantizer(dim=4, codebook_size=8)
    before = vq.embedding.detach().clone()
    vq.initialize(z)  # quantizers without a data-dependent start: a no-op
    assert vq.needs_data_init is False and torch.equal(vq.embedding, before)


def test_multiscale_data_init_beats_random_values_on_real_structure():
    """On smooth latents, codes sampled from the residuals quantize better than N(0, 1) codes."""
    g = torch.Generator().manual_seed(0)
    z = F.interpolate(torch.randn(8, 4, 4, 4, generator=g), size=8, mode="bicubic") * 0.5
    errors = {}
    for init in ("nearest", "data"):
        torch.manual_seed(0)
        m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4, 8], quantizer_kwargs={"codebook_size": 64, "init": init})
        m.train()
        m(z[:4])  # "data" samples this batch; no optimiser step
        m.eval()
        with torch.no_grad():
            errors[init] = float(m(z[4:]).stats["quant_error"][-1])
    assert errors["data"] < 0.7 * errors["nearest"], errors
