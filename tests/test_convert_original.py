"""The authors' CODA checkpoints convert exactly: golden outputs of their code (FLUX- and MAR-style, both
scale lists) are reproduced by the converted model, after save/load, after merging LoRA and through the
transformers pipeline."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
import transformers
from _helpers_original import (
    PRESETS,
    arch,
    assert_indices_equal,
    assert_matches_golden,
    files,
    golden,
)

import coda_hf  # noqa: F401  (registers the image-tokenization task)
from coda_hf.cli import main
from coda_hf.models import CodaVQModel
from coda_hf.models.original import convert_original, load_original, original_spec
from coda_hf.models.original.card import render_card

CASES = [(name, which) for name in PRESETS for which in ("golden", "golden_alt_scales")]


@pytest.mark.parametrize("name,which", CASES)
def test_converted_model_matches_authors_golden(name, which):
    g = golden(name, which)
    model = load_original(*files(name), PRESETS[name], arch(name, which))
    with torch.no_grad():
        latents = model.encode_latents(g["images"])  # posterior mean, normalised as the authors do
        posterior = model.vae.encode(g["images"]).latent_dist
    torch.testing.assert_close(posterior.mean, g["posterior_mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(posterior.logvar, g["posterior_logvar"], atol=1e-5, rtol=0)
    torch.testing.assert_close(latents, g["latent_normalized"], atol=1e-5, rtol=0)
    assert_matches_golden(model, g)


@pytest.mark.parametrize("name,which", CASES)
def test_saved_reloaded_merged_and_pipeline_match_golden(name, which, tmp_path):
    g = golden(name, which)
    out = convert_original(
        *files(name), PRESETS[name], tmp_path / "converted", architecture=arch(name, which)
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "diffusion_pytorch_model.safetensors", "preprocessor_config.json",
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporary folder left
    reloaded = CodaVQModel.from_pretrained(out).eval()
    assert reloaded.config.encoder_lora_rank == reloaded.config.decoder_lora_rank == 4
    assert_matches_golden(reloaded, g)
    # Through transformers: already-processed pixel values skip the image processor (no 8-bit rounding).
    tokenizer = transformers.pipeline(task="image-tokenization", model=str(out))
    results = tokenizer([{"pixel_values": image} for image in g["images"]])
    for b, result in enumerate(results):
        assert_indices_equal(
            [idx[None] for idx in result["indices"]], {k: v[b : b + 1] for k, v in g.items()}
        )
    reloaded.merge_lora()
    assert not any("lora" in k for k in reloaded.state_dict())
    assert_matches_golden(reloaded, g)


@pytest.mark.parametrize("name", list(PRESETS))
def test_merge_lora_option_writes_fused_checkpoint(name, tmp_path):
    out = convert_original(
        *files(name), PRESETS[name], tmp_path / "fused", merge_lora=True, architecture=arch(name)
    )
    config = json.loads((out / "config.json").read_text())
    assert config["encoder_lora_rank"] == config["decoder_lora_rank"] == 0
    fused = CodaVQModel.from_pretrained(out).eval()
    assert not any("lora" in k for k in fused.state_dict())
    assert_matches_golden(fused, golden(name))
    assert "fused into the VAE convolutions" in (out / "README.md").read_text()


def test_lora_is_loaded_not_dropped():
    """Zeroing the converted LoRA weights changes the indices: the golden match depends on them."""
    model = load_original(*files("mar"), "mar-vae", arch("mar"))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_B" in key:
                p.zero_()
    with pytest.raises(AssertionError):
        assert_matches_golden(model, golden("mar"))


def test_ema_names_and_module_prefix_accepted(tmp_path):
    vae, quantizer = files("flux")
    shutil.copy(vae, tmp_path / "vae_ema.pth")
    state = torch.load(quantizer, weights_only=True)
    torch.save(
        {f"module.{k}": v for k, v in state.items()}, tmp_path / "quantizer_ema.pth"
    )  # a DDP-wrapped save
    out = convert_original(tmp_path / "vae_ema.pth", tmp_path / "quantizer_ema.pth", "flux-vae", tmp_path / "out",
                           architecture=arch("flux"))  # fmt: skip
    assert_matches_golden(CodaVQModel.from_pretrained(out).eval(), golden("flux"))
    assert "the EMA weights" in (out / "README.md").read_text()


def test_model_card_provenance_and_licence(tmp_path):
    out = convert_original(*files("mar"), "mar-vae", tmp_path / "out", architecture=arch("mar"))
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "licence Apache-2.0" in card
    assert "https://github.com/LeapLabTHU/CODA" in card and "shuidi0020/CODA" in card
    assert (
        "# CODA-MAR (converted)" in card and "64 codes" in card and "17,728 tokens per 256x256 image" in card
    )  # 8x8 + 16x16 + 32x32 + 128x128
    assert hashlib.sha256(files("mar")[0].read_bytes()).hexdigest() in card
    # converted with architecture overrides: not the released model, so no paper figures
    assert "Not a released model" in card and "Reported by the authors" not in card


@pytest.mark.parametrize(
    "preset,title,codes,tokens,figure",
    [("flux-vae", "CODA-FLUX", "65,536", "2,240", "0.43"), ("mar-vae", "CODA-MAR", "16,384", "680", "1.43")],
)
def test_model_card_of_released_models_labels_the_authors_figures(preset, title, codes, tokens, figure):
    spec = original_spec(preset)
    card = render_card(spec, {"vae": ("vae_ema.pth", "ab"), "quantizer": ("quantizer_ema.pth", "cd")},
                       int(tokens.replace(",", "")), merged=False, released=True)  # fmt: skip
    assert (
        f"# {title} (converted)" in card
        and f"{codes} codes" in card
        and f"{tokens} tokens per 256x256" in card
    )
    assert "## Reported by the authors" in card and f"| {figure} |" in card and "**not** measured" in card
    assert "the EMA weights" in card and spec.hub_folder in card


def test_cli_convert_original(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(arch("mar", "golden_alt_scales")))
    vae, quantizer = files("mar")
    code = main(["convert-original", "--vae", str(vae), "--quantizer", str(quantizer), "--preset", "mar-vae",
                 "--output", str(tmp_path / "cli"), "--architecture", str(spec), "--merge-lora"])  # fmt: skip
    assert code == 0
    model = CodaVQModel.from_pretrained(tmp_path / "cli").eval()
    assert model.config.decoder_lora_rank == 0
    assert_matches_golden(model, golden("mar", "golden_alt_scales"))


def test_cli_reports_errors_and_writes_nothing(tmp_path, capsys):
    vae, quantizer = files("flux")
    bad_arch = tmp_path / "bad.json"
    bad_arch.write_text(json.dumps({"codebook": 64}))
    for extra in (
        ["--architecture", str(bad_arch)],
        [],
    ):  # unknown override key; real-size preset vs tiny files
        code = main(["convert-original", "--vae", str(vae), "--quantizer", str(quantizer), "--preset", "flux-vae",
                     "--output", str(tmp_path / "out"), *extra])  # fmt: skip
        assert code == 2  # a usage error: one line on stderr, no traceback
    err = capsys.readouterr().err
    assert "unknown keys ['codebook']" in err and "Traceback" not in err
    assert f"{vae}: does not match the CODA-FLUX (flux-vae) VAE" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_pipeline_tensor_input_is_checked(tmp_path):
    out = convert_original(*files("flux"), "flux-vae", tmp_path / "out", architecture=arch("flux"))
    tokenizer = transformers.pipeline(task="image-tokenization", model=str(out))
    image = golden("flux")["images"][0]
    assert (
        tokenizer({"pixel_values": image[None]})["token_ids"].shape
        == tokenizer({"pixel_values": image})["token_ids"].shape
        == (1 + 4 + 16 + 256,)
    )
    for bad, match in ((image * 2, r"must lie in \[-1, 1\]"), (image[:2], r"\(3, H, W\) or \(1, 3, H, W\) float"),
                       ((image > 0).long(), "float tensor"), (image.numpy(), "must be a torch tensor")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            tokenizer({"pixel_values": bad})
