"""The golden fixtures of the authors' CODA code (tests/fixtures/coda_original, see its README) and checks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures" / "coda_original"
PRESETS = {"flux": "flux-vae", "mar": "mar-vae"}
# The fixtures' scale lists: the main one (top scale = the 16x16 latent) and the real CODA-MAR schedule.
SCALE_LISTS = {"golden": [1, 2, 4, 16], "golden_alt_scales": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]}

# The tiny architectures of the fixtures (their config.json), as overrides of the released presets.
TINY_ARCHITECTURES = {
    "flux": {
        "vae_config": {"down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
                       "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 32},
        "codebook_size": 64, "attn_dim": 32, "lora_rank": 4,
    },
    "mar": {
        "vae_config": {"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                       "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [32, 32],
                       "layers_per_block": 2, "sample_size": 32},
        "codebook_size": 64, "attn_dim": 32, "lora_rank": 4,
    },
}  # fmt: skip

# Tolerances. The fixture's measured float32 drift (other thread counts, float64 re-run) is <= 5e-6; the
# tiny random decoders amplify f_hat's rounding (~3e-8) about 300x, so the END-TO-END reconstruction of a
# float32 run lies up to ~1e-5 from the golden one (measured: 9.2e-6 MAR, 5.0e-6 FLUX; our float64 run is
# 4.0e-6 / 6.0e-6 from it, the golden's own float32 error). Decoding the golden f_hat isolates the decoder.
ATOL = 1e-5


def arch(name: str, which: str = "golden") -> dict:
    return {**TINY_ARCHITECTURES[name], "scales": SCALE_LISTS[which]}


def files(name: str) -> tuple[Path, Path]:
    return FIXTURES / f"{name}_tiny" / "vae.pth", FIXTURES / f"{name}_tiny" / "quantizer.pth"


def golden(name: str, which: str = "golden") -> dict[str, torch.Tensor]:
    """Golden tensors of ``which`` (inputs and posterior from the main file, shared by both lists)."""
    out = load_file(FIXTURES / f"{name}_tiny" / "golden.safetensors")
    if which != "golden":
        out = {k: v for k, v in out.items() if not k.startswith(("indices_", "logit_gap_"))}
        out.update(load_file(FIXTURES / f"{name}_tiny" / f"{which}.safetensors"))
    return out


def golden_indices(g: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The authors' ``(B, 1, h, w)`` indices per level as our ``(B, h, w)``."""
    levels = sorted(int(k.rsplit("_", 1)[1]) for k in g if k.startswith("indices_level_"))
    return [g[f"indices_level_{k}"][:, 0] for k in levels]


def assert_indices_equal(indices: list[torch.Tensor], g: dict[str, torch.Tensor]) -> None:
    expected = golden_indices(g)
    assert len(indices) == len(expected)
    for level, (got, want) in enumerate(zip(indices, expected)):
        assert torch.equal(got.cpu(), want), f"level {level}: {int((got != want).sum())} indices differ"


@torch.no_grad()
def assert_matches_golden(model, g: dict[str, torch.Tensor]) -> None:
    """Indices identical; f_hat, the decoder on the golden f_hat and the end-to-end reconstruction close."""
    enc = model.encode(g["images"])
    assert_indices_equal(enc.indices, g)
    torch.testing.assert_close(enc.quantized, g["f_hat"], atol=ATOL, rtol=0)
    torch.testing.assert_close(model.decode_latents(g["f_hat"]), g["reconstruction"], atol=ATOL, rtol=0)
    torch.testing.assert_close(model.decode_latents(enc.quantized), g["reconstruction"], atol=ATOL, rtol=ATOL)


def manifest(name: str) -> dict:
    return json.loads((FIXTURES / f"manifest_{name}.json").read_text())


def zero_state_dict(entries: list) -> dict[str, torch.Tensor]:
    """``[[key, shape, dtype], ...]`` of a manifest -> zero tensors (no real weights)."""
    return {key: torch.zeros(shape, dtype=getattr(torch, dtype)) for key, shape, dtype in entries}
