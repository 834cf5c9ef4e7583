"""Single-level quantizers: VectorQuantizer, GumbelQuantizer, FSQuantizer, LookupFreeQuantizer."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from coda_hf.quantizers import (
    FSQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    QuantizerOutput,
    VectorQuantizer,
    build_quantizer,
)
from coda_hf.quantizers.search import nearest_code

# name -> (registry name, kwargs); every constructor option appears in at least one case.
CASES = {
    "vq": ("vq", dict(dim=8, codebook_size=32)),
    "vq_cosine": ("vq", dict(dim=8, codebook_size=32, distance="cosine", beta=0.5)),
    "vq_ema": ("vq", dict(dim=8, codebook_size=32, use_ema=True, ema_decay=0.9, ema_eps=1e-4)),
    "vq_proj": ("vq", dict(dim=8, codebook_size=32, codebook_dim=4, init_std=0.5)),
    "vq_restart": ("vq", dict(dim=8, codebook_size=32, restart_after=1, restart_threshold=0.5, chunk_size=5)),
    "gumbel_hard": ("gumbel", dict(dim=8, codebook_size=32, temperature=0.9, hard=True, kl_weight=0.1)),
    "gumbel_soft": ("gumbel", dict(dim=8, codebook_size=32, hard=False)),
    "fsq_odd": ("fsq", dict(dim=3, levels=[5, 5, 3])),
    "fsq_even_proj": ("fsq", dict(dim=8, levels=[8, 4, 2, 6], eps=1e-3)),
    "lfq": ("lfq", dict(dim=4, codebook_size=16)),
    "lfq_proj": (
        "lfq",
        dict(dim=8, codebook_size=64, entropy_weight=0.2, entropy_temperature=0.1, diversity_gamma=0.5,
             commitment_weight=0.5),
    ),
}


def make(case: str):
    name, kw = CASES[case]
    return build_quantizer(name, **kw)


def latents(dim: int, b: int = 2, h: int = 4, w: int = 5, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(b, dim, h, w, requires_grad=requires_grad)


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_shapes_and_stats(case):
    q = make(case)
    z = latents(q.dim)
    out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape
    assert q.num_levels == 1 and len(out.indices) == 1
    idx = out.indices[0]
    assert idx.shape == (2, 4, 5) and idx.dtype == torch.long
    assert 0 <= int(idx.min()) and int(idx.max()) < q.codebook_size
    assert out.token_ids.shape == (2, 20)
    assert set(out.stats) >= {"perplexity", "utilization", "quant_error"}
    assert out.stats["quant_error"].shape == (1,)
    expected_err = F.mse_loss(out.quantized.detach(), z)
    assert torch.allclose(out.stats["quant_error"][0], expected_err)
    assert 1.0 <= float(out.stats["perplexity"]) <= 40
    # training forward updated the running-window usage: fraction of codes seen in this batch
    assert math.isclose(float(out.stats["utilization"]), idx.unique().numel() / q.codebook_size, rel_tol=1e-6)
    for v in out.losses.values():
        assert v.ndim == 0 and torch.isfinite(v)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_reach_input(case):
    q = make(case)
    z = latents(q.dim, requires_grad=True)
    out = q(z)
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_index_round_trip_and_eval_determinism(case):
    q = make(case).eval()
    z = latents(q.dim)
    out1, out2 = q(z), q(z)
    assert torch.equal(out1.indices[0], out2.indices[0])
    assert torch.equal(out1.quantized, out2.quantized)
    assert torch.equal(q.indices_to_codes(out1.indices), out1.quantized)
    assert torch.equal(q.decode_indices(out1.token_ids, latent_size=(4, 5)), out1.quantized)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_safetensors_and_rebuild(case, tmp_path):
    torch.manual_seed(1)
    q = make(case)
    for _ in range(3):  # move EMA / dead-code buffers away from their initial values
        q(latents(q.dim))
    path = tmp_path / "q.safetensors"
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, str(path))
    config = json.loads(json.dumps(q.to_dict()))
    assert config["name"] == q.quantizer_name
    q2 = build_quantizer(config.pop("name"), **config)
    assert type(q2) is type(q) and q2.config == q.config
    q2.load_state_dict(load_file(str(path)), strict=True)
    q.eval(), q2.eval()
    z = latents(q.dim)
    a, b = q(z), q2(z)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.indices[0], b.indices[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_clear_error(case):
    q = make(case)
    with pytest.raises(ValueError, match="channels"):
        q(torch.randn(2, q.dim + 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        q(torch.randn(2, q.dim, 4))
    with pytest.raises(ValueError, match="level 0"):
        q.decode_indices([torch.full((1, 2, 2), q.codebook_size)])


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("vq", dict(dim=4, codebook_size=8, distance="dot"), "distance"),
        ("vq", dict(dim=4, codebook_size=8, chunk_size=-1), "chunk_size"),
        ("vq", dict(dim=4, codebook_size=8, ema_decay=1.0), "ema_decay"),
        ("gumbel", dict(dim=4, codebook_size=8, temperature=0.0), "temperature"),
        ("fsq", dict(dim=4, levels=[8, 1]), "levels"),
        ("lfq", dict(dim=4, codebook_size=12), "power of two"),
        ("nope", dict(dim=4), "unknown quantizer"),
    ],
)
def test_bad_config_raises(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_quantizer(name, **kw)


def test_config_must_be_json_safe():
    with pytest.raises(TypeError, match="JSON-safe"):
        VectorQuantizer(dim=4, codebook_size=torch.tensor(8))


# ---------------------------------------------------------------------------------------------
# VectorQuantizer options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_tokens,codebook_size", [(32, 4096), (2048, 64), (4096, 65536)])
def test_perplexity_from_indices_matches_histogram_entropy(num_tokens, codebook_size):
    """The O(N) per-token form equals exp(entropy) of the batch histogram, sparse or dense."""
    from coda_hf.quantizers.stats import perplexity_from_counts, perplexity_from_indices, single_level_stats

    g = torch.Generator().manual_seed(0)
    # skewed draws so that codes repeat (a uniform draw would make every count 1 when N << K)
    idx = (torch.rand(num_tokens, generator=g) ** 3 * min(codebook_size, 200)).long().reshape(1, -1, 1)
    ref = perplexity_from_counts(torch.bincount(idx.reshape(-1), minlength=codebook_size))
    assert 1.0 < float(ref) < min(codebook_size, 200)
    assert torch.allclose(perplexity_from_indices(idx, codebook_size), ref, rtol=1e-5)
    q = VectorQuantizer(dim=2, codebook_size=codebook_size)
    x = torch.zeros(num_tokens, 2)
    assert torch.allclose(single_level_stats(idx, codebook_size, x, x, q.usage)["perplexity"], ref, rtol=1e-5)
    assert float(perplexity_from_indices(torch.full((7,), 3), codebook_size)) == pytest.approx(1.0)


def test_vq_l2_search_matches_brute_force_and_losses():
    q = VectorQuantizer(dim=8, codebook_size=32, beta=0.3)
    z = latents(8, requires_grad=True)
    out = q(z)
    x = z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    ref = torch.cdist(x, q.embedding.detach()).argmin(dim=1)
    assert torch.equal(out.indices[0].reshape(-1), ref)
    qv = q.embedding.detach()[ref]
    assert torch.allclose(out.losses["codebook"], F.mse_loss(qv, x))
    assert torch.allclose(out.losses["commitment"], 0.3 * F.mse_loss(qv, x))
    out.losses["codebook"].backward()
    assert q.embedding.grad is not None and z.grad is None  # codebook loss trains only the codebook


@pytest.mark.parametrize("chunk_size", [1, 7, 32, 100, 0, None])
def test_nearest_code_chunking_equals_unchunked(chunk_size):
    x, cb = torch.randn(300, 6), torch.randn(100, 6)
    cb[50] = cb[10]  # a tie: the lowest index must win, as with argmin
    x[0] = cb[10]
    ref = torch.cdist(x, cb).argmin(dim=1)
    got = nearest_code(x, cb, chunk_size)
    assert torch.equal(got, ref)
    assert int(got[0]) == 10


def test_vq_chunk_size_option_gives_same_outputs():
    a = VectorQuantizer(dim=8, codebook_size=64, chunk_size=0).eval()
    b = VectorQuantizer(dim=8, codebook_size=64, chunk_size=9).eval()
    b.load_state_dict(a.state_dict())
    z = latents(8)
    assert torch.equal(a(z).indices[0], b(z).indices[0])


def test_vq_cosine_uses_angles():
    q = VectorQuantizer(dim=8, codebook_size=32, distance="cosine").eval()
    with torch.no_grad():
        q.embedding[0] *= 100.0  # a long code must not attract everything under cosine distance
    z = latents(8)
    out = q(z)
    x = z.permute(0, 2, 3, 1).reshape(-1, 8)
    ref = (F.normalize(x, dim=-1) @ F.normalize(q.embedding.detach(), dim=-1).t()).argmax(dim=1)
    assert torch.equal(out.indices[0].reshape(-1), ref)
    norms = out.quantized.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_vq_ema_update_matches_formula():
    q = VectorQuantizer(dim=4, codebook_size=8, use_ema=True, ema_decay=0.5, ema_eps=1e-5)
    assert not q.embedding.requires_grad
    old_size, old_sum = q.ema_cluster_size.clone(), q.ema_embed_sum.clone()
    z = latents(4)
    out = q(z)
    assert set(out.losses) == {"commitment"}
    x = z.permute(0, 2, 3, 1).reshape(-1, 4)
    idx = out.indices[0].reshape(-1)
    onehot = F.one_hot(idx, 8).float()
    size = 0.5 * old_size + 0.5 * onehot.sum(0)
    esum = 0.5 * old_sum + 0.5 * onehot.t() @ x
    n = size.sum()
    smoothed = (size + 1e-5) / (n + 8 * 1e-5) * n
    assert torch.allclose(q.ema_cluster_size, size)
    assert torch.allclose(q.embedding.detach(), esum / smoothed[:, None], atol=1e-5)
    before = q.embedding.detach().clone()
    q.eval()(z)
    assert torch.equal(before, q.embedding.detach())  # eval never updates the codebook


def test_vq_restart_after_resets_unused_codes_to_encoder_vectors():
    q = VectorQuantizer(dim=4, codebook_size=16, restart_after=2)
    with torch.no_grad():
        q.embedding.add_(100.0)  # all codes far away: one code takes every vector
    z = latents(4, b=4)
    q(z)
    assert int(q.code_age.max()) == 1
    assert (q.embedding.detach() > 50).all()  # not yet: restart_after=2 steps
    q(z)  # after this step dead codes have age 2
    q(z)  # restart happens at the start of this forward
    x = z.permute(0, 2, 3, 1).reshape(-1, 4)
    restarted = (q.embedding.detach() < 50).all(dim=1)
    assert restarted.sum() >= 15
    for code in q.embedding.detach()[restarted]:  # each reset code is one of the current latents
        assert torch.isclose(x, code).all(dim=1).any()
    assert "code_age" in q.state_dict() and "code_usage" in q.state_dict()


def test_vq_restart_threshold_with_ema():
    q = VectorQuantizer(dim=4, codebook_size=16, use_ema=True, restart_threshold=0.9, ema_decay=0.5)
    with torch.no_grad():
        q.embedding.add_(100.0)
        q.ema_embed_sum.copy_(q.embedding)
    z = latents(4, b=4)
    q(z)  # usage of 15 codes drops to 0.5 < 0.9
    assert int((q.code_usage < 0.9).sum()) == 15
    q(z)
    assert (q.embedding.detach() < 50).all(dim=1).sum() >= 15
    # the EMA statistics were reset together with the code, so the next update keeps it near the data
    q(z)
    assert (q.embedding.detach() < 50).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_restart_worker(rank: int, world: int, port: int, out_dir: str):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial codebook on every rank
    q = VectorQuantizer(dim=4, codebook_size=16, use_ema=True, restart_after=1)
    with torch.no_grad():
        q.embedding.add_(100.0)
        q.ema_embed_sum.copy_(q.embedding)
    torch.manual_seed(100 + rank)  # different data and different random picks per rank
    for _ in range(3):
        q(torch.randn(2, 4, 4, 4) + rank)
    save_file({"embedding": q.embedding.detach().contiguous(), "age": q.code_age}, f"{out_dir}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_vq_restart_and_ema_stay_in_sync_across_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_restart_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert torch.equal(r0["embedding"], r1["embedding"])
    assert torch.equal(r0["age"], r1["age"])
    assert (r0["embedding"] < 50).all()  # dead codes were restarted


def test_vq_projection_and_init_std():
    q = VectorQuantizer(dim=8, codebook_size=16, codebook_dim=3, init_std=0.01)
    assert q.embedding.shape == (16, 3) and float(q.embedding.detach().std()) < 0.05
    assert q.project_in.in_features == 8 and q.project_out.out_features == 8
    assert VectorQuantizer(dim=8, codebook_size=16, codebook_dim=8).project_in is None


# ---------------------------------------------------------------------------------------------
# GumbelQuantizer options
# ---------------------------------------------------------------------------------------------


def test_gumbel_hard_training_output_is_a_code_and_soft_is_a_mixture():
    hard = GumbelQuantizer(dim=8, codebook_size=16, hard=True)
    soft = GumbelQuantizer(dim=8, codebook_size=16, hard=False)
    soft.load_state_dict(hard.state_dict())
    z = latents(8)
    out = hard(z)
    assert torch.allclose(out.quantized, hard.indices_to_codes(out.indices), atol=1e-6)
    out_soft = soft(z)
    assert not torch.allclose(out_soft.quantized, soft.indices_to_codes(out_soft.indices), atol=1e-3)


def test_gumbel_samples_follow_the_softmax_distribution():
    from coda_hf.quantizers.gumbel import gumbel_softmax_sample

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    assign, idx = gumbel_softmax_sample(logits, temperature=1.0, hard=True)
    freq = torch.bincount(idx, minlength=4).float() / idx.numel()
    assert torch.allclose(freq, logits[0].softmax(0), atol=0.015)
    assert torch.equal(assign, F.one_hot(idx, 4).float())


def test_gumbel_temperature_is_settable_and_sharpens_soft_samples():
    q = GumbelQuantizer(dim=8, codebook_size=16, hard=False)
    z = latents(8, b=8)
    errs = {}
    for t in (5.0, 0.01):
        q.temperature = t
        torch.manual_seed(0)
        with torch.no_grad():
            out = q(z)
            errs[t] = float((out.quantized - q.indices_to_codes(out.indices)).abs().mean())
    assert errs[0.01] < 0.1 * errs[5.0]
    q.temperature = -1.0
    with pytest.raises(ValueError, match="temperature"):
        q(z)


def test_gumbel_kl_to_uniform_prior():
    q = GumbelQuantizer(dim=4, codebook_size=8, kl_weight=2.0)
    with torch.no_grad():
        q.to_logits.weight.zero_()
        q.to_logits.bias.zero_()
    assert abs(q(latents(4)).losses["kl"].item()) < 1e-6  # uniform logits: KL = 0
    with torch.no_grad():
        q.to_logits.bias[3] = 50.0  # all mass on one code: KL = log K
    assert math.isclose(q(latents(4)).losses["kl"].item(), 2.0 * math.log(8), rel_tol=1e-4)


# ---------------------------------------------------------------------------------------------
# FSQuantizer options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [[5, 3], [8, 6], [2, 7, 4]])
def test_fsq_each_channel_takes_exactly_its_levels(levels):
    q = FSQuantizer(dim=len(levels), levels=levels)
    assert q.codebook_size == math.prod(levels) and q.project_in is None
    z = torch.linspace(-8, 8, 4001).repeat(len(levels), 1).reshape(1, len(levels), 1, 4001)
    out = q(z)
    codes = q.indices_to_integer_codes(out.indices[0].reshape(-1))  # (N, d)
    for i, n_levels in enumerate(levels):
        values = codes[:, i].unique()
        assert values.numel() == n_levels
        assert int(values.min()) == -(n_levels // 2) and int(values.max()) == n_levels - 1 - n_levels // 2
    assert out.indices[0].unique().numel() <= q.codebook_size
    assert float(out.quantized.abs().max()) <= 1.0


def test_fsq_index_packing_is_a_bijection():
    q = FSQuantizer(dim=4, levels=[8, 5, 4, 3])
    all_idx = torch.arange(q.codebook_size)
    codes = q.indices_to_integer_codes(all_idx)
    assert torch.equal(q.codes_to_indices(codes), all_idx)
    assert codes.unique(dim=0).shape[0] == q.codebook_size
    # channel 0 is the least significant digit
    assert torch.equal(codes[1] - codes[0], torch.tensor([1.0, 0, 0, 0]))


def test_fsq_eps_widens_the_bound():
    x = torch.full((1, 1), 50.0)
    assert FSQuantizer(dim=1, levels=[5], eps=0.2).bound(x) > FSQuantizer(dim=1, levels=[5], eps=1e-3).bound(x)
    assert torch.allclose(FSQuantizer(dim=1, levels=[5], eps=0.2).bound(x), torch.tensor([[2.4]]))


def test_fsq_even_levels_use_the_offset():
    q = FSQuantizer(dim=1, levels=[4])
    bounded = q.bound(torch.tensor([[-50.0], [0.0], [50.0]]))
    assert bounded[0, 0] > -2.5 and bounded[2, 0] < 1.5  # rounds to -2 .. 1: four values
    assert torch.equal(bounded.round().flatten(), torch.tensor([-2.0, 0.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# LookupFreeQuantizer options
# ---------------------------------------------------------------------------------------------


def test_lfq_index_is_the_sign_bits():
    q = LookupFreeQuantizer(dim=4, codebook_size=16).eval()
    z = torch.tensor([1.0, -2.0, 0.5, -0.1]).reshape(1, 4, 1, 1)
    out = q(z)
    assert int(out.indices[0]) == 0b1010
    assert torch.equal(out.quantized.flatten(), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    all_idx = torch.arange(16).reshape(1, 4, 4)
    codes = q.indices_to_codes([all_idx])  # (1, 4, 4, 4)
    assert torch.equal(q(codes).indices[0], all_idx)


def _brute_force_entropies(x: torch.Tensor, tau: float):
    d = x.shape[1]
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)))  # (2^d, d)
    probs = torch.softmax(-torch.cdist(x, corners).pow(2) / tau, dim=1)  # (N, 2^d)
    per_sample = -(probs * probs.clamp_min(1e-30).log()).sum(1).mean()
    mean = probs.mean(0)
    codebook = -(mean * mean.clamp_min(1e-30).log()).sum()
    return per_sample, codebook


def test_lfq_entropy_loss_matches_full_distribution():
    tau = 0.5
    q = LookupFreeQuantizer(dim=4, codebook_size=16, entropy_weight=1.0, entropy_temperature=tau, diversity_gamma=0.0)
    x = torch.randn(64, 4)
    per_sample, codebook = _brute_force_entropies(x, tau)
    assert torch.allclose(q.entropy_loss(x), per_sample, atol=1e-4)  # factorised per-sample entropy is exact
    q2 = LookupFreeQuantizer(dim=4, codebook_size=16, entropy_temperature=tau, diversity_gamma=1.0)
    factorised_codebook = per_sample - q2.entropy_loss(x)
    assert factorised_codebook >= codebook - 1e-4  # upper bound of the joint codebook entropy
    assert factorised_codebook <= 4 * math.log(2) + 1e-6
    # the forward's channels-first layout (B, d, N) gives the same loss as (N, d) tokens
    channels_first = x.reshape(2, 32, 4).transpose(1, 2)
    assert torch.allclose(q2.entropy_loss(channels_first, channel_dim=1), q2.entropy_loss(x), atol=1e-6)


def test_lfq_losses_are_weighted():
    z = latents(4)
    a = LookupFreeQuantizer(dim=4, codebook_size=16, entropy_weight=0.0, commitment_weight=0.0)(z)
    assert float(a.loss) == 0.0
    b = LookupFreeQuantizer(dim=4, codebook_size=16, entropy_weight=1.0, commitment_weight=2.0)(z)
    x = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(b.losses["commitment"], 2.0 * F.mse_loss(x, torch.sign(x)))
    q_hot = LookupFreeQuantizer(dim=4, codebook_size=16, entropy_weight=1.0, entropy_temperature=10.0)
    assert not torch.allclose(b.losses["entropy"], q_hot(z).losses["entropy"])
    assert set(q_hot.eval()(z).losses) == {"commitment"}  # the entropy regulariser is training-only


# ---------------------------------------------------------------------------------------------
# Benchmark script smoke test (benchmarks/ is not a package: load it from its path)
# ---------------------------------------------------------------------------------------------


def test_benchmark_script_smoke(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quantizers.py"
    spec = importlib.util.spec_from_file_location("bench_quantizers", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.run_case("fsq", FSQuantizer(dim=4, levels=[5, 3]), torch.randn(1, 4, 4, 4), mode="train", repeats=2,
                         min_total_s=0.0)
    assert row["time_s"] > 0 and row["peak_mib"] >= 0 and row["grid"] == "4x4"
    assert bench.main(["--quick", "--quantizers", "fsq", "--batch", "1", "--min-time", "0"]) == 0
    table = capsys.readouterr().out
    assert "| fsq | 15360 | 16x16 | eval |" in table and "speedup" in table


def test_usage_tracker_window_and_cached_utilization():
    from coda_hf.quantizers.stats import UsageTracker

    tracker = UsageTracker(8, window=2)
    assert float(tracker.utilization()) == 0.0
    tracker.update(torch.tensor([0, 1]))
    assert float(tracker.utilization()) == 0.25
    assert tracker.utilization() is tracker.utilization()  # no update in between: the cached value
    tracker.update([torch.tensor([2]), torch.tensor([2])])
    assert float(tracker.utilization()) == 3 / 8
    tracker.update(torch.tensor([3]))  # window of 2 steps: codes 0 and 1 (step 1) have aged out
    assert float(tracker.utilization()) == 2 / 8
    tracker.last_seen[5] = tracker.step
    tracker.sync()  # single process: a no-op reduction, but it invalidates the cache
    assert float(tracker.utilization()) == 3 / 8
