"""The attention quantizer's ``rms_norm_eps`` option (the authors' RMSNorm eps 1e-5) leaves existing
configs computing exactly what they did before it existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from coda_hf.quantizers import AttentionQuantizer, build_quantizer
from coda_hf.quantizers.multiscale import MultiScaleResidualQuantizer

# Recorded by tests/fixtures/make_attention_quantizer_before.py with the code before the option existed.
BEFORE = Path(__file__).parent / "fixtures" / "attention_quantizer_before.safetensors"


def _recorded_quantizer(**inner_kwargs):
    with safe_open(BEFORE, "pt") as f:
        config = json.loads(f.metadata()["config"])
    config["quantizer_kwargs"].update(inner_kwargs)
    recorded = load_file(BEFORE)
    quantizer = build_quantizer(**config)
    quantizer.load_state_dict({k[len("state.") :]: v for k, v in recorded.items() if k.startswith("state.")})
    return quantizer, recorded


def _differences(quantizer, recorded) -> list[str]:
    """What differs from the recording (indices and quantized bit for bit, losses to 1e-5 relative)."""
    found = []
    for name in ("input", "input_small"):
        for mode in ("eval", "train"):
            quantizer.train(mode == "train")
            with torch.no_grad():
                out = quantizer(recorded[name])
            prefix = f"{name}.{mode}"
            found += [
                f"{prefix} indices {i}"
                for i, idx in enumerate(out.indices)
                if not torch.equal(idx, recorded[f"{prefix}.indices_{i}"])
            ]
            found += (
                [] if torch.equal(out.quantized, recorded[f"{prefix}.quantized"]) else [f"{prefix} quantized"]
            )
            found += [
                f"{prefix} loss {k}" for k, v in out.losses.items()
                if not torch.allclose(v.reshape(1), recorded[f"{prefix}.loss_{k}"], rtol=1e-5, atol=0)
            ]  # fmt: skip
    return found


def test_existing_config_computes_what_it_did_before():
    quantizer, recorded = _recorded_quantizer()
    assert quantizer.quantizers[0].q_norm.eps is None  # the default stays torch's
    assert _differences(quantizer, recorded) == []


def test_recording_detects_another_eps():
    """The recorded small-input losses depend on the eps, so the test above would see a changed default."""
    quantizer, recorded = _recorded_quantizer(rms_norm_eps=1e-5)
    assert any("input_small" in d and "loss" in d for d in _differences(quantizer, recorded))


def test_rms_norm_eps_is_used_and_saved():
    torch.manual_seed(0)
    authors = AttentionQuantizer(dim=4, codebook_size=16, hidden_dim=8, rms_norm_eps=1e-5)
    with torch.no_grad():
        authors.q_proj.bias.zero_()  # small queries (|q|^2 ~ eps): the eps matters
    default = AttentionQuantizer(dim=4, codebook_size=16, hidden_dim=8)
    default.load_state_dict(authors.state_dict())
    assert authors.q_norm.eps == authors.k_norm.eps == 1e-5 and authors.config["rms_norm_eps"] == 1e-5
    f = torch.randn(5, 4) * 1e-3
    q = authors.q_proj(f)
    expected = (
        q * torch.rsqrt(q.float().pow(2).mean(-1, keepdim=True) + 1e-5) * authors.q_norm.weight
    )  # authors' RMSNorm
    torch.testing.assert_close(authors.queries(f), expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(default.queries(f), expected, rtol=1e-3, atol=0)
    rebuilt = build_quantizer("attention", **authors.config)
    assert rebuilt.q_norm.eps == 1e-5


@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_rms_norm_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match="rms_norm_eps must be > 0"):
        AttentionQuantizer(dim=4, codebook_size=16, rms_norm_eps=eps)


def test_top_scale_resampling_is_an_exact_identity():
    """The authors area-downsample and bicubic-upsample at the top scale too; both are exact identities there,
    so skipping them (MultiScaleResidualQuantizer) computes the same bits."""
    x = torch.randn(2, 16, 13, 13) * 5
    assert torch.equal(torch.nn.functional.interpolate(x, size=(13, 13), mode="area"), x)
    assert torch.equal(
        torch.nn.functional.interpolate(x, size=(13, 13), mode="bicubic", align_corners=False), x
    )
    stack = MultiScaleResidualQuantizer(dim=16, scales=[1, 13], quantizer_kwargs={"codebook_size": 8})
    assert stack._down(x, (13, 13)) is x and stack._up(x, (13, 13)) is x
