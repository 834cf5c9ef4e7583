"""The contract every registered quantizer keeps (parametrised over ``QUANTIZER_REGISTRY``).

A newly registered quantizer without an entry in ``TINY_CONFIGS`` makes these tests FAIL: add a tiny
config for it rather than skipping the contract.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import coda_hf.quantizers  # noqa: F401  (registers every quantizer)
from coda_hf.quantizers import QUANTIZER_REGISTRY, BaseQuantizer, QuantizerOutput, build_quantizer

# Latents of every contract test: (B, C, H, W), non-square on purpose.
B, C, H, W = 2, 8, 4, 6

# registry name -> tiny JSON-safe constructor kwargs (C = 8 channels)
TINY_CONFIGS: dict[str, dict] = {
    "vq": {"dim": C, "codebook_size": 32},
    "gumbel": {"dim": C, "codebook_size": 32},
    "fsq": {"dim": C, "levels": [5, 4, 3]},
    "lfq": {"dim": C, "codebook_size": 16},
    "attention": {"dim": C, "codebook_size": 32, "hidden_dim": 16, "chunk_size": 5},
    "residual": {"dim": C, "num_levels": 3, "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 16}},
    "multiscale": {"dim": C, "scales": [1, 2, 4], "quantizer_kwargs": {"codebook_size": 32, "hidden_dim": 16}},
    "quantile": {"dim": C, "bins": 4},
}

# Every quantizer the library ships (tests may register their own, e.g. a user-style custom one).
NAMES = sorted(n for n, cls in QUANTIZER_REGISTRY.items() if cls.__module__.startswith("coda_hf."))


def make(name: str, seed: int = 0) -> BaseQuantizer:
    if name not in TINY_CONFIGS:
        pytest.fail(f"quantizer {name!r} is registered but has no tiny config in TINY_CONFIGS: add one")
    torch.manual_seed(seed)
    return build_quantizer(name, **TINY_CONFIGS[name])


def latents(requires_grad: bool = False, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g).requires_grad_(requires_grad)


def test_registry_holds_the_whole_family():
    assert set(NAMES) >= {"vq", "gumbel", "fsq", "lfq", "residual", "multiscale", "attention"}


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_quantizer_has_a_tiny_config(name):
    make(name)


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_stats(name):
    q = make(name)
    out = q(latents())
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == (B, C, H, W)
    assert len(out.indices) == q.num_levels
    shapes = q.level_shapes(H, W)
    assert [tuple(i.shape) for i in out.indices] == [(B, h, w) for h, w in shapes]
    for idx in out.indices:
        assert idx.dtype == torch.long
        assert 0 <= int(idx.min()) and int(idx.max()) < q.codebook_size
    assert out.token_ids.shape == (B, q.num_tokens(H, W))
    assert set(out.stats) >= {"perplexity", "utilization", "quant_error"}
    assert out.stats["quant_error"].shape == (q.num_levels,)
    assert 0.0 < float(out.stats["utilization"]) <= 1.0
    assert 1.0 <= float(out.stats["perplexity"]) <= q.codebook_size
    for key, value in out.losses.items():
        assert value.ndim == 0 and torch.isfinite(value), key
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_input_and_parameters(name):
    q = make(name).train()
    z = latents(requires_grad=True)
    out = q(z)
    weights = torch.randn(out.quantized.shape, generator=torch.Generator().manual_seed(3))
    ((out.quantized * weights).sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    trainable = [p for p in q.parameters() if p.requires_grad]
    if trainable:  # parameter-free quantizers (FSQ, LFQ without projections) have nothing to train
        grads = [p.grad for p in trainable if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", NAMES)
def test_eval_index_round_trip_and_determinism(name):
    q = make(name)
    q(latents(seed=5))  # one training step first: EMA / usage state must not break the round trip
    q.eval()
    z = latents()
    with torch.no_grad():
        out, again = q(z), q(z)
        assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
        assert torch.equal(q.decode_indices(out.token_ids, latent_size=(H, W)), out.quantized)
    assert torch.equal(out.quantized, again.quantized)
    assert all(torch.equal(a, b) for a, b in zip(out.indices, again.indices))


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_state_and_json_config_rebuild(name, tmp_path):
    q = make(name, seed=0)
    q(latents(seed=7))  # change any training-time state before saving
    q.eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in q.state_dict().items()}, str(path))
    spec = json.loads(json.dumps(q.to_dict()))
    assert spec["name"] == name
    torch.manual_seed(123)  # a different random init that the loaded state must overwrite
    fresh = build_quantizer(spec.pop("name"), **spec)
    fresh.load_state_dict(load_file(str(path)))
    fresh.eval()
    z = latents()
    with torch.no_grad():
        a, b = q(z), fresh(z)
    assert torch.equal(a.quantized, b.quantized)
    assert all(torch.equal(x, y) for x, y in zip(a.indices, b.indices))


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_keeps_config_and_outputs(name):
    """copy.deepcopy (EMA copies, a model snapshot) rebuilds with ``cls.__new__(cls)``: no arguments."""
    import copy

    q = make(name).eval()
    twin = copy.deepcopy(q)
    assert twin.config == q.config and twin.to_dict() == q.to_dict()
    z = latents()
    with torch.no_grad():
        assert torch.equal(q(z).quantized, twin(z).quantized)
    with pytest.raises(TypeError):  # a real call without the required arguments still fails
        type(q)()


@pytest.mark.parametrize("name", NAMES)
def test_validate_indices_rejects_out_of_range_naming_the_level(name):
    q = make(name).eval()
    with torch.no_grad():
        indices = [i.clone() for i in q(latents()).indices]
    last = len(indices) - 1
    indices[last][0, 0, 0] = q.codebook_size
    with pytest.raises(ValueError, match=f"level {last}"):
        q.validate_indices(indices)
    with pytest.raises(ValueError, match=f"level {last}"):
        q.decode_indices(indices)
    indices[last][0, 0, 0] = -1
    with pytest.raises(ValueError, match=f"level {last}"):
        q.validate_indices(indices)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channel_count_is_a_clear_error(name):
    q = make(name)
    with pytest.raises(ValueError, match="channels"):
        q(torch.randn(B, C + 1, H, W))


@pytest.mark.parametrize("name", NAMES)
def test_with_losses_is_an_argument_of_the_call(name):
    """``with_losses=False`` in eval returns no losses and the same codes; training always computes them."""
    q = make(name).eval()
    z = latents()
    with torch.no_grad():
        full, fast = q(z), q(z, with_losses=False)
    assert not fast.losses
    assert torch.equal(full.quantized, fast.quantized)
    assert all(torch.equal(a, b) for a, b in zip(full.indices, fast.indices))
    assert q.train()(z, with_losses=False).losses or not q.train()(z).losses


def test_unknown_quantizer_option_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown option 'codebok_size' \(did you mean 'codebook_size'\?\)"):
        build_quantizer("vq", dim=4, codebok_size=16)


def test_a_quantizer_written_for_forward_z_takes_with_losses():
    """A plug-in with the older ``forward(z)`` signature still works under ``encode`` / stacks."""

    class Plain(BaseQuantizer):
        def __init__(self, dim: int = 2):
            super().__init__()
            self.dim, self.codebook_size = dim, 2

        def forward(self, z):
            idx = (z[:, 0] > 0).long()
            return QuantizerOutput(quantized=z, indices=[idx], losses={"l": z.square().mean()})

    q = Plain().eval()
    z = torch.randn(1, 2, 3, 3)
    assert q(z).losses and not q(z, with_losses=False).losses
