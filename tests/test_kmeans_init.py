"""k-means (quantizers/kmeans.py) and the attention quantizer's k-means-refined data initialisation."""

from __future__ import annotations

import pytest
import torch

from coda_hf.quantizers import AttentionQuantizer, MultiScaleResidualQuantizer
from coda_hf.quantizers.kmeans import kmeans, sample_rows
from coda_hf.quantizers.layout import to_tokens
from coda_hf.quantizers.residual import DATA_INIT_PASSES
from coda_hf.quantizers.search import nearest_code


def _sse(x: torch.Tensor, codes: torch.Tensor) -> float:
    return float((x - codes[nearest_code(x, codes)]).pow(2).sum())


def _blobs(n_per: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(n_per, 2, generator=g) for c in centres])
    return x, centres


def test_kmeans_finds_separated_clusters_and_counts_them():
    x, centres = _blobs()
    init = centres + torch.tensor([[1.5, -1.0], [-1.2, 1.0], [1.0, -1.4], [-1.0, -1.0]])  # a rough start
    found, counts = kmeans(x, 4, iters=10, init=init)
    order = nearest_code(centres, found)
    assert sorted(order.tolist()) == [0, 1, 2, 3]  # one centroid per blob
    torch.testing.assert_close(found[order], centres, atol=0.05, rtol=0)
    assert counts.tolist() == [50, 50, 50, 50] and counts.dtype == torch.long
    assert not torch.allclose(init, found, atol=0.5)  # the start is not modified in place


def test_kmeans_restarts_empty_centroids_and_never_raises_the_error():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 3, generator=g)
    start = x[:1].repeat(16, 1)  # 16 copies of one point: 15 are empty after the first assignment
    _, counts = kmeans(x, 16, iters=8, init=start, generator=torch.Generator().manual_seed(0))
    assert bool((counts > 0).all()) and int(counts.sum()) == 400
    few = torch.tensor([[0.0], [1.0]])  # 2 distinct points, 3 centroids: one stays empty, no error
    assert sorted(kmeans(few.repeat(5, 1), 3, iters=3)[1].tolist()) == [0, 5, 5]
    sampled = sample_rows(x, 16, torch.Generator().manual_seed(0))
    errors = [_sse(x, kmeans(x, 16, iters=i, init=sampled)[0]) for i in (0, 1, 3, 10)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.8 * errors[0], errors
    torch.testing.assert_close(kmeans(x, 16, iters=0, init=sampled)[0], sampled)  # 0 iterations: the start


def test_block_assignment_equals_one_search(monkeypatch):
    from coda_hf.quantizers import kmeans as kmeans_module

    x, codes = torch.randn(1000, 3), torch.randn(40, 3)
    monkeypatch.setattr(kmeans_module, "ASSIGN_ROWS", 64)  # 16 blocks, the last one partial
    assert torch.equal(kmeans_module.assign(x, codes), nearest_code(x, codes))


def test_sample_rows_is_seeded_and_without_replacement_when_it_can():
    x = torch.arange(20.0).unsqueeze(1)
    a = sample_rows(x, 10, torch.Generator().manual_seed(3))
    b = sample_rows(x, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.unique(a).numel() == 10
    assert sample_rows(x[:4], 10, torch.Generator().manual_seed(0)).shape == (10, 1)  # with replacement


def test_kmeans_rejects_bad_arguments():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="needs \\(N >= 1, D\\) rows"):
        kmeans(torch.randn(10), 2, 1)
    with pytest.raises(ValueError, match="needs \\(N >= 1, D\\) rows"):
        kmeans(torch.randn(0, 2), 2, 1)
    with pytest.raises(ValueError, match="k >= 1 and iters >= 0"):
        kmeans(x, 0, 1)
    with pytest.raises(ValueError, match="k >= 1 and iters >= 0"):
        kmeans(x, 2, -1)
    with pytest.raises(ValueError, match="init must have shape \\(3, 2\\)"):
        kmeans(x, 3, 1, init=torch.randn(2, 2))
    with pytest.raises(ValueError, match="empty"):
        sample_rows(torch.randn(0, 2), 2)


def _attention(**kw) -> AttentionQuantizer:
    torch.manual_seed(0)
    return AttentionQuantizer(**{"dim": 4, "codebook_size": 32, "init": "data", **kw})


def test_attention_kmeans_init_values_are_the_kmeans_centroids():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(500, 4, generator=g)
    q = _attention(init_kmeans_iters=5)
    q.data_init(features, torch.Generator().manual_seed(7))
    start = sample_rows(features, 32, torch.Generator().manual_seed(7))
    expected, _ = kmeans(features, 32, 5, init=start)
    torch.testing.assert_close(q.values().detach(), expected)
    assert bool(q.data_initialized) and "init_kmeans_iters=5" in repr(q)
    # the nearest-neighbour layout holds for the centroids: the argmax is the nearest centroid
    q.eval()
    z = torch.randn(2, 4, 5, 5, generator=g)
    expected_idx = nearest_code(to_tokens(z), expected)
    assert torch.equal(q(z).indices[0].reshape(-1), expected_idx)


def test_kmeans_init_quantizes_held_out_data_better_than_samples():
    """A dense core with a sparse tail: sampled codes crowd in the core, centroids cover the tail too."""
    g = torch.Generator().manual_seed(0)

    def draw(n):
        core = 0.05 * torch.randn(int(0.9 * n), 4, generator=g)
        tail = torch.randn(n - core.shape[0], 4, generator=g) * 2.0
        return torch.cat([core, tail])

    train, held_out = draw(2000), draw(2000)
    errors = {}
    for iters in (0, 10):
        q = _attention(init_kmeans_iters=iters)
        q.data_init(train, torch.Generator().manual_seed(0))
        errors[iters] = _sse(held_out, q.values().detach())
    assert errors[10] < 0.7 * errors[0], errors


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("iters", [0, 3])
def test_seeded_stack_data_init_depends_only_on_the_data_and_the_generator(shared, iters):
    """Neither the random codebook a stack is built with nor random numbers drawn before the
    initialisation (e.g. by a LoRA initialisation) change the seeded data initialisation."""
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    values = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4, 8], shared_codebook=shared,
                                        quantizer_kwargs={"codebook_size": 32, "init": "data", "init_kmeans_iters": iters})  # fmt: skip
        torch.rand(1000 * seed)
        m.initialize(z, torch.Generator().manual_seed(5))
        values.append([q.values().detach() for q in m.quantizers])
    for a, b in zip(*values):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_per_level_data_init_samples_the_residual_the_earlier_levels_leave():
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    m = MultiScaleResidualQuantizer(dim=4, scales=[2, 4, 8], shared_codebook=False,
                                    quantizer_kwargs={"codebook_size": 8, "init": "data"})  # fmt: skip
    m.initialize(z, torch.Generator().manual_seed(0))
    inputs = m._level_inputs(z)  # with the initialised codebooks
    for q, x in zip(m.quantizers, inputs):
        tokens, values = to_tokens(x), q.values().detach()
        gap = (values[:, None] - tokens[None]).abs().amax(-1).min(1).values  # (K,) distance to the nearest token
        assert bool((gap < 1e-5).all())  # every code is one of the tokens its level quantizes


def test_per_level_data_init_quantizes_each_level_once():
    """One pass over the stack: level l is initialised, then quantized once to give level l+1 its input."""
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4, 8], shared_codebook=False,
                                    quantizer_kwargs={"codebook_size": 8, "init": "data"})  # fmt: skip
    calls = []
    for level, q in enumerate(m.quantizers):
        q.register_forward_hook(lambda module, args, out, level=level: calls.append(level))
    m.initialize(z, torch.Generator().manual_seed(0))
    assert calls == [0, 1, 2, 3] and not m.needs_data_init


def test_attention_init_kmeans_iters_is_validated():
    with pytest.raises(ValueError, match="init_kmeans_iters must be >= 0"):
        _attention(init_kmeans_iters=-1)
    with pytest.raises(ValueError, match="needs init='data'"):
        _attention(init="nearest", init_kmeans_iters=3)
    assert _attention().config["init_kmeans_iters"] == 0  # recorded in the JSON-safe config


# -- init_min_usage: rare-code restarts of a data initialisation ------------------------------------
def test_restart_rare_codes_moves_only_the_rare_codes_onto_the_data():
    g = torch.Generator().manual_seed(0)
    features = 0.1 * torch.randn(600, 4, generator=g)
    q = _attention(init_min_usage=0.5)
    values = torch.cat([features[:24], 50 + torch.randn(8, 4, generator=g)])  # 8 codes far from every feature
    q.nearest_init(values)
    restarted = q.restart_rare_codes(features, torch.Generator().manual_seed(1))
    after = q.values().detach()
    counts = torch.bincount(nearest_code(features, values), minlength=32)
    rare = counts < 0.5 * 600 / 32
    assert restarted == int(rare.sum()) >= 8
    torch.testing.assert_close(after[~rare], values[~rare])  # every other code is kept
    gap = (after[rare][:, None] - features[None]).abs().amax(-1).min(1).values
    assert bool((gap < 1e-6).all())  # restarted codes sit on features
    assert _attention().restart_rare_codes(features) == 0 and not _attention().restarts_rare_codes


@pytest.mark.parametrize("stack", [False, True])
def test_init_min_usage_leaves_fewer_rare_codes(stack):
    """A dense core and a far tail: codes sampled in the tail are rarely used; restarts move them."""
    g = torch.Generator().manual_seed(0)
    core = 0.05 * torch.randn(2, 4, 8, 8, generator=g)
    tail = 5.0 + torch.randn(2, 4, 8, 8, generator=g)
    z = torch.cat([core.repeat(3, 1, 1, 1), tail])  # (8, 4, 8, 8)
    rare = {}
    for min_usage in (0.0, 0.3):
        torch.manual_seed(0)
        kwargs = {"codebook_size": 32, "init": "data", "init_min_usage": min_usage}
        if stack:
            q = MultiScaleResidualQuantizer(dim=4, scales=[2, 4, 8], quantizer_kwargs=kwargs)
        else:
            q = AttentionQuantizer(dim=4, **kwargs)
        q.initialize(z, torch.Generator().manual_seed(0))
        q.eval()
        with torch.no_grad():
            idx = torch.cat([i.reshape(-1) for i in q(z).indices])
        counts = torch.bincount(idx, minlength=32)
        rare[min_usage] = int((counts < 0.3 * idx.numel() / 32).sum())
    assert rare[0.0] > 0 and rare[0.3] < rare[0.0], rare


def test_stack_encodes_for_restarts_only_when_an_inner_quantizer_restarts(monkeypatch):
    calls = []
    original = MultiScaleResidualQuantizer._level_inputs

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("lossless", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MultiScaleResidualQuantizer, "_level_inputs", spy)
    z = torch.randn(2, 4, 4, 4)
    for min_usage, expected in ((0.0, 2), (0.5, 3)):  # two init passes, + at least one restart round
        calls.clear()
        m = MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4],
                                        quantizer_kwargs={"codebook_size": 8, "init": "data", "init_min_usage": min_usage})  # fmt: skip
        m.initialize(z)
        assert len(calls) >= expected if min_usage else len(calls) == expected


def test_restart_rare_codes_counts_given_indices_like_its_own_search():
    g = torch.Generator().manual_seed(0)
    features = 0.1 * torch.randn(600, 4, generator=g)
    values = torch.cat([features[:24], 50 + torch.randn(8, 4, generator=g)])
    results = []
    for given in (False, True):
        q = _attention(init_min_usage=0.5)
        q.nearest_init(values)
        indices = q.search(features)["indices"] if given else None
        results.append((q.restart_rare_codes(features, torch.Generator().manual_seed(1), indices), q.values().detach()))
    assert results[0][0] == results[1][0] >= 8
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="indices must be \\(600,\\), one code per feature; got \\(599,\\)"):
        q.restart_rare_codes(features, indices=torch.zeros(599, dtype=torch.long))


@pytest.mark.parametrize("shared", [False, True])
def test_stack_restart_rounds_count_the_encoding_without_searching_again(monkeypatch, shared):
    """Each restart round encodes the stack once; its codes are counted, not searched for a second time.
    The codebook is the same as with a second search."""
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = {"codebook_size": 16, "init": "data", "init_min_usage": 0.9}

    def build():
        torch.manual_seed(0)
        return MultiScaleResidualQuantizer(dim=4, scales=[1, 2, 4, 8], shared_codebook=shared, quantizer_kwargs=kwargs)

    searches, encodes = [], []
    search, level_inputs = AttentionQuantizer.search, MultiScaleResidualQuantizer._level_inputs
    monkeypatch.setattr(AttentionQuantizer, "search", lambda self, *a, **k: searches.append(1) or search(self, *a, **k))
    monkeypatch.setattr(MultiScaleResidualQuantizer, "_level_inputs",
                        lambda self, *a, **k: encodes.append(k.get("lossless", False)) or level_inputs(self, *a, **k))  # fmt: skip
    rounds = []
    restart = AttentionQuantizer.restart_rare_codes
    monkeypatch.setattr(AttentionQuantizer, "restart_rare_codes", lambda self, *a, **k: rounds.append(1) or restart(self, *a, **k))
    m = build()
    m.initialize(z, torch.Generator().manual_seed(1))
    assert len(searches) == 4 * sum(not lossless for lossless in encodes)  # one search per level per encoding
    # per-level codebooks: the init pass is round 1's encoding; shared: the init passes before the last encode
    # with a codebook that the last pass then replaces, so every round encodes
    n_rounds = len(rounds) if shared else len(rounds) // 4
    assert n_rounds >= 1 and len(encodes) == (DATA_INIT_PASSES + n_rounds if shared else n_rounds)
    # the reference: each round searches again
    monkeypatch.setattr(AttentionQuantizer, "restart_rare_codes", lambda self, f, g=None, i=None: restart(self, f, g))
    reference = build()
    reference.initialize(z, torch.Generator().manual_seed(1))
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(m.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_init_min_usage_is_validated():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="init_min_usage is a fraction"):
            _attention(init_min_usage=bad)
    with pytest.raises(ValueError, match="init_min_usage restarts codes of a data initialisation"):
        _attention(init="nearest", init_min_usage=0.1)
    assert "init_min_usage=0.1" in repr(_attention(init_min_usage=0.1))
