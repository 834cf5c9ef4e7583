"""CodaVQModel: construction from a VAE, encode/decode, LoRA wiring, save/load, merge, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _helpers_coda import TINY_LORA, TINY_QUANTIZER, images, perturb_lora, tiny_coda, tiny_vae

from coda_hf.models import CodaEncoderOutput, CodaVQModel, CodaVQOutput
from coda_hf.models.lora import lora_layers
from coda_hf.models.presets import PRESETS


def _conv_count(module, names=("conv1", "conv2")):
    return sum(1 for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d) and n.split(".")[-1] in names)


def test_encode_decode_shapes_and_token_layout():
    model = tiny_coda()
    x = images(2)
    with torch.no_grad():
        enc = model.encode(x)
        assert isinstance(enc, CodaEncoderOutput)
        # 32 px, factor 2 -> 16x16 latents; scales [1, 2, 4] of reference 4 -> 4x4, 8x8, 16x16 levels
        assert model.downsample_factor == 2
        assert model.level_shapes(32, 32) == [(4, 4), (8, 8), (16, 16)]
        assert [tuple(i.shape) for i in enc.indices] == [(2, 4, 4), (2, 8, 8), (2, 16, 16)]
        assert enc.token_ids.shape == (2, model.num_tokens(32, 32)) == (2, 16 + 64 + 256)
        assert enc.quantized.shape == enc.latents.shape == (2, 4, 16, 16)
        assert model.codebook_size == 32
        out = model.decode(enc.indices)
        assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
        # (B, N) token ids decode to the same images (square latent size inferred, or given)
        assert torch.equal(model.decode(enc.token_ids), out)
        assert torch.equal(model.decode(enc.token_ids, latent_size=(16, 16)), out)
        # eval: decoding the indices reproduces the quantized latents exactly
        assert torch.equal(model.indices_to_latents(enc.indices), enc.quantized)


def test_non_square_images():
    model = tiny_coda()
    with torch.no_grad():
        enc = model.encode(images(1, 32)[..., :24])  # (1, 3, 32, 24)
        assert [tuple(i.shape[-2:]) for i in enc.indices] == model.level_shapes(32, 24)
        assert model.decode(enc.token_ids, latent_size=(16, 12)).shape == (1, 3, 32, 24)


def test_latent_normalisation_matches_vae_and_inverts():
    vae = tiny_vae(scaling_factor=0.7, shift_factor=0.2)
    model = CodaVQModel.from_vae(vae, quantizer=TINY_QUANTIZER, lora={"rank": 0}).eval()
    assert model.config.scaling_factor == pytest.approx(0.7) and model.config.shift_factor == pytest.approx(0.2)
    x = images(1)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mode()
        z = model.encode(x).latents
        torch.testing.assert_close(z, (mean - 0.2) * 0.7)
        torch.testing.assert_close(model.decode_latents(z), vae.decode(mean).sample, atol=1e-5, rtol=1e-5)


def test_only_lora_and_quantizer_train():
    model = CodaVQModel.from_vae(tiny_vae(), quantizer=TINY_QUANTIZER, lora=TINY_LORA)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if n.startswith("vae.")]
    assert all(n.startswith("quantizer.") or ".lora_A." in n or ".lora_B." in n for n in trainable), trainable
    assert all(n.startswith(("vae.encoder.", "vae.decoder.")) and n.endswith(".weight") for n in lora)
    assert any(n.startswith("quantizer.") for n in trainable)
    # one lora_A and one lora_B per adapted conv, in encoder and decoder
    plain = tiny_vae()
    assert len(lora) == 2 * (_conv_count(plain.encoder) + _conv_count(plain.decoder)) > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.startswith("vae.") and "lora_" not in n for n in frozen)
    # gradients reach exactly the trainable parameters
    model.train()
    out = model(images(2))
    (out.sample.pow(2).mean() + out.loss).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and with_grad <= set(trainable)
    assert any("lora_B" in n for n in with_grad)


def test_lora_sides_and_targets():
    model = CodaVQModel.from_vae(
        tiny_vae(), quantizer=TINY_QUANTIZER,
        lora={"encoder": {"rank": 0}, "decoder": {"rank": 3, "alpha": 6, "target_modules": ["conv2"]}},
    )  # fmt: skip
    assert lora_layers(model.vae.encoder) == {}
    names = list(lora_layers(model.vae.decoder))
    assert names and all(n.endswith("conv2") for n in names)
    assert len(names) == _conv_count(tiny_vae().decoder, ("conv2",))
    cfg = model.config
    assert (cfg.encoder_lora_rank, cfg.decoder_lora_rank, cfg.decoder_lora_alpha) == (0, 3, 6.0)
    assert cfg.decoder_lora_target_modules == ["conv2"]
    with pytest.raises(ValueError, match="match no layer"):
        CodaVQModel.from_vae(tiny_vae(), quantizer=TINY_QUANTIZER, lora={"rank": 2, "target_modules": ["nope"]})
    with pytest.raises(ValueError, match="unknown keys"):
        CodaVQModel.from_vae(tiny_vae(), quantizer=TINY_QUANTIZER, lora={"rank": 2, "dropout": 0.1})


def test_lora_changes_outputs_and_initial_lora_is_identity():
    x = images(1)
    plain = CodaVQModel.from_vae(tiny_vae(), quantizer=TINY_QUANTIZER, lora={"rank": 0}).eval()
    fresh = CodaVQModel.from_vae(tiny_vae(), quantizer=TINY_QUANTIZER, lora=TINY_LORA).eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode(x).latents, plain.encode(x).latents)  # lora_B = 0 at start
        before = fresh.encode(x).latents
        perturb_lora(fresh)
        assert not torch.allclose(fresh.encode(x).latents, before)


def test_save_load_roundtrip_bit_identical(tmp_path):
    model = tiny_coda()
    x = images(2)
    with torch.no_grad():
        enc = model.encode(x)
        rec = model.decode(enc.indices)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "preprocessor_config.json").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "coda_vq" and config["_class_name"] == "CodaVQModel"
    assert config["quantizer"]["name"] == "multiscale" and config["decoder_lora_rank"] == 2

    loaded, info = CodaVQModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert any(".base_layer." in k for k in sd) and any("lora_B" in k for k in sd)
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    with torch.no_grad():
        enc2 = loaded.eval().encode(x)
        assert torch.equal(enc2.token_ids, enc.token_ids)
        assert torch.equal(loaded.decode(enc2.indices), rec)


def test_merge_lora_fuses_into_plain_convs(tmp_path):
    model = tiny_coda()
    x = images(2)
    with torch.no_grad():
        enc = model.encode(x)
        rec = model.decode(enc.indices)
        merged = model.merge_lora()
        assert merged is model
        assert lora_layers(model.vae) == {}
        assert model.config.encoder_lora_rank == 0 and model.config.decoder_lora_rank == 0
        assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
        torch.testing.assert_close(model.decode(enc.indices), rec, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.encode(x).latents, enc.latents, atol=1e-4, rtol=1e-4)
    model.save_pretrained(tmp_path)
    loaded, info = CodaVQModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().decode(enc.indices), rec, atol=1e-4, rtol=1e-4)


def test_sample_posterior_in_training_only():
    x = images(1)
    model = tiny_coda()
    model.train()
    a, b = model.encode_latents(x), model.encode_latents(x)
    assert not torch.equal(a, b)  # posterior samples
    model.eval()
    assert torch.equal(model.encode_latents(x), model.encode_latents(x))
    det = tiny_coda(sample_posterior=False).train()
    assert torch.equal(det.encode_latents(x), det.encode_latents(x))


def test_forward_output():
    model = tiny_coda().train()
    out = model(images(2))
    assert isinstance(out, CodaVQOutput)
    assert out.sample.shape == (2, 3, 32, 32) and out.latents.shape == out.quantized.shape
    assert out.losses and torch.isfinite(out.loss) and out.loss.requires_grad
    assert len(out.indices) == 3 and "perplexity" in out.stats


def test_input_validation():
    model = tiny_coda()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of the downsample factor 2"):
        model.encode(torch.zeros(1, 3, 33, 32))
    with torch.no_grad():
        enc = model.encode(images(1))
    bad = [i.clone() for i in enc.indices]
    bad[1][0, 0, 0] = 32
    with pytest.raises(ValueError, match=r"level 1 must lie in \[0, 31\]"):
        model.decode(bad)
    with pytest.raises(ValueError, match="expected 3 levels"):
        model.decode(enc.indices[:2])
    with pytest.raises(ValueError, match=r"token ids must be \(B, N\)"):
        model.decode(enc.token_ids[0])
    with pytest.raises(ValueError, match="tokens per image"):
        model.decode(enc.token_ids[:, :-1], latent_size=(16, 16))
    with pytest.raises(ValueError, match="cannot infer"):
        model.decode(enc.token_ids[:, :-1])
    with pytest.raises(ValueError, match="latents must be"):
        model.decode_latents(torch.zeros(1, 3, 4, 4))


def test_from_vae_local_dir_subfolder_and_presets(tmp_path):
    vae = tiny_vae(scaling_factor=0.3)
    vae.save_pretrained(tmp_path / "repo" / "vae")
    model = CodaVQModel.from_vae(str(tmp_path / "repo"), subfolder="vae", quantizer=TINY_QUANTIZER, lora={"rank": 0})
    assert model.config.scaling_factor == pytest.approx(0.3)
    sd = vae.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.vae.state_dict().items())
    with pytest.raises(ValueError, match="unknown preset"):
        CodaVQModel.from_vae(vae, preset="nope")
    with pytest.raises(ValueError, match="preset 'flux-vae' expects a 16-channel, 8x VAE"):
        CodaVQModel.from_vae(vae, preset="flux-vae")
    with pytest.raises(ValueError, match="AutoencoderKL"):
        CodaVQModel.from_vae(42)
    # explicit factors override the VAE config
    m2 = CodaVQModel.from_vae(vae, quantizer=TINY_QUANTIZER, lora={"rank": 0}, shift_factor=0.1, scaling_factor=2.0)
    assert (m2.config.shift_factor, m2.config.scaling_factor) == (0.1, 2.0)


def test_default_quantizer_is_coda_multiscale_attention():
    model = CodaVQModel(vae_config=dict(tiny_vae().config))
    q = model.config.quantizer
    assert q["name"] == "multiscale" and q["quantizer"] == "attention" and q["shared_codebook"] is True
    assert len(q["scales"]) == 10 and q["dim"] == 4
    assert model.codebook_size == 65536


def test_presets_hold_the_paper_numbers():
    assert PRESETS["flux-vae"]["shift_factor"] == 0.1159 and PRESETS["flux-vae"]["scaling_factor"] == 0.3611
    assert PRESETS["flux-vae"]["quantizer"]["scales"] == [1, 2, 3, 4, 6, 9, 13, 18, 24, 32]
    assert PRESETS["mar-vae"]["quantizer"]["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
    assert PRESETS["mar-vae"]["scaling_factor"] == 0.2325 and PRESETS["sd-vae"]["scaling_factor"] == 0.18215
    assert PRESETS["sdxl-vae"]["scaling_factor"] == 0.13025
    assert all(p["lora"]["rank"] == 32 for p in PRESETS.values())


def _real_vae(block_out_channels, latent_channels, **kw):
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        block_out_channels=block_out_channels, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, latent_channels=latent_channels, layers_per_block=2,
        norm_num_groups=32, sample_size=256, **kw,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, blocks, channels, tokens",
    [
        ("sd-vae", (128, 256, 512, 512), 4, 2240),
        ("flux-vae", (128, 256, 512, 512), 16, 2240),
        ("mar-vae", (128, 128, 256, 256, 512), 16, 680),
    ],
)
def test_real_architectures_token_counts(preset, blocks, channels, tokens):
    kw = {"use_quant_conv": False, "use_post_quant_conv": False} if preset == "flux-vae" else {}
    quantizer = dict(PRESETS[preset]["quantizer"], quantizer_kwargs={"codebook_size": 64})
    model = CodaVQModel.from_vae(_real_vae(blocks, channels, **kw), preset=preset, quantizer=quantizer)
    f = 16 if preset == "mar-vae" else 8
    assert model.downsample_factor == f
    assert model.num_tokens(256, 256) == tokens
    assert model.level_shapes(256, 256)[-1] == (256 // f, 256 // f)
    assert model.config.encoder_lora_rank == model.config.decoder_lora_rank == 32
    assert lora_layers(model.vae.decoder)
    if preset == "mar-vae":
        assert any(n.endswith("upsamplers.0.conv") for n in lora_layers(model.vae.decoder))


def test_quantize_without_eval_losses_gives_same_tokens():
    model = tiny_coda()
    with torch.no_grad():
        z = model.encode_latents(images(1))
        full = model.quantize(z)
        fast = model.quantize(z, with_losses=False)
    assert full.losses and not fast.losses  # the attention quantizer computes eval losses by default
    assert all(torch.equal(a, b) for a, b in zip(full.indices, fast.indices))
    assert torch.equal(full.quantized, fast.quantized)
    assert all(m.eval_losses for m in model.quantizer.modules() if hasattr(m, "eval_losses"))  # restored
    model.train()
    assert model.quantize(model.encode_latents(images(1)), with_losses=False).losses  # training: always


def test_benchmark_script_smoke():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_coda_model.py"
    spec = importlib.util.spec_from_file_location("bench_coda_model", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.time_batch(tiny_coda(), batch=1, resolution=32, repeats=1)
    assert row["tokens"] == 336 and row["encode_s"] > 0 and 0 < row["quantizer_share"] < 1
    assert "| 1 | 336 |" in bench.format_table([row])
    assert bench.FLUX_VAE_CONFIG["latent_channels"] == 16


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name: str):
    """A script of ``benchmarks/`` as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_vae_and_tiles(tmp_path) -> None:
    """``tmp_path/vae``: a tiny saved AutoencoderKL; ``tmp_path/tiles``: 6 train and 3 eval 32 px tiles."""
    import datasets
    import numpy as np
    from PIL import Image

    from coda_hf.data.shards import encode_png, write_parquet_shards

    tiny_vae().save_pretrained(tmp_path / "vae")
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image()})
    for split, n in (("train", 6), ("eval", 3)):
        tiles = [encode_png(Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8"))) for _ in range(n)]
        write_parquet_shards({"image": tiles}, features, tmp_path / "tiles", split, num_shards=1)


def test_attention_codebook_lr_benchmark_smoke(tmp_path):
    """benchmarks/bench_attention_codebook_lr.py end to end on a tiny VAE and generated shards."""
    bench = _load_benchmark("bench_attention_codebook_lr")
    _bench_vae_and_tiles(tmp_path)
    rows = bench.main(["--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "tiles"), "--resolution", "32",
                       "--learning-rates", "1e-1", "0", "--steps", "2", "--batch-size", "2", "--codebook-size", "16",
                       "--scales", "1", "2", "16", "--output", str(tmp_path / "rows.json")])  # fmt: skip
    assert [(r["lr"], r["freeze_codebook"]) for r in rows] == [(0.1, False), (0.0, False), (0.1, True)]
    # one seed: every case starts from the same data-initialised codebook
    assert all(r["before"] == rows[0]["before"] for r in rows)
    assert rows[1]["after"] == rows[1]["before"]  # rate 0: training changes nothing
    assert rows[0]["after"] != rows[0]["before"]
    assert all(0 < r["after"]["utilization"] <= 1 and r["after"]["latent_mse"] > 0 for r in rows)
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows


def test_attention_init_benchmark_smoke(tmp_path, monkeypatch):
    """benchmarks/bench_attention_init.py end to end on a tiny VAE and generated shards."""
    import numpy as np

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling bench_attention_codebook_lr
    bench = _load_benchmark("bench_attention_init")
    _bench_vae_and_tiles(tmp_path)
    rows = bench.main(["--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "tiles"), "--resolution", "32",
                       "--init-images", "4", "--batch-size", "2", "--kmeans-iters", "0", "2", "--min-usage", "0", "0.5",
                       "--codebook-size", "16", "--scales", "1", "2", "8", "--output", str(tmp_path / "rows.json")])  # fmt: skip
    assert [(r["kmeans_iters"], r["min_usage"]) for r in rows] == [(0, 0.0), (0, 0.5), (2, 0.0), (2, 0.5)]
    assert all(r["init_images"] == 4 and 0 < r["utilization"] <= 1 and r["latent_mse"] > 0 for r in rows)
    assert all(np.isfinite(r["psnr"]) for r in rows)
    assert rows[2]["latent_mse"] != rows[0]["latent_mse"]  # k-means moved the sampled codes
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows


def test_constructor_validation():
    vae_config = dict(tiny_vae().config)
    with pytest.raises(ValueError, match="model_type"):
        CodaVQModel(vae_config=vae_config, quantizer=TINY_QUANTIZER, model_type="vit")
    with pytest.raises(ValueError, match="decoder_lora_rank must be >= 0"):
        CodaVQModel(vae_config=vae_config, quantizer=TINY_QUANTIZER, decoder_lora_rank=-1)
    with pytest.raises(ValueError, match="scaling_factor"):
        CodaVQModel(vae_config=vae_config, quantizer=TINY_QUANTIZER, scaling_factor=0.0)
    with pytest.raises(ValueError, match="'name'"):
        CodaVQModel(vae_config=vae_config, quantizer={"scales": [1, 2]})
    with pytest.raises(ValueError, match="latent channels 4"):
        CodaVQModel(vae_config=vae_config, quantizer=dict(TINY_QUANTIZER, dim=8))
    # encoder LoRA from the config, alpha defaulting to the rank
    model = CodaVQModel(vae_config=vae_config, quantizer=TINY_QUANTIZER, encoder_lora_rank=3)
    assert model.config.encoder_lora_alpha == 3.0 and model.config.encoder_lora_target_modules == ["conv1", "conv2"]
    assert lora_layers(model.vae.encoder) and not lora_layers(model.vae.decoder)


@pytest.mark.parametrize("sample_posterior", [True, False])
def test_data_init_uses_the_latents_inference_quantizes(sample_posterior, monkeypatch):
    """Training quantizes a posterior sample, but the data-initialised codebook starts on posterior MEANS."""
    quantizer = {**TINY_QUANTIZER, "quantizer_kwargs": {"codebook_size": 32, "init": "data"}}
    model = CodaVQModel.from_vae(tiny_vae(), quantizer=quantizer, lora=TINY_LORA, sample_posterior=sample_posterior)
    seen = []
    original = type(model.quantizer).initialize

    def spy(self, z):
        seen.append(z.clone())
        return original(self, z)

    monkeypatch.setattr(type(model.quantizer), "initialize", spy)
    x = images(2)
    model.train()
    out = model(x)
    with torch.no_grad():
        mean = model.encode_latents(x, sample=False)
    assert model.quantizer.needs_data_init is False and len(seen) == 1
    torch.testing.assert_close(seen[0], mean, rtol=0, atol=0)
    assert torch.equal(out.latents, mean) is (not sample_posterior)  # the forward itself quantized a sample
    model(x)
    assert len(seen) == 1  # initialised once


def test_data_initialised_attention_codebook_round_trips(tmp_path):
    """init="data": the sampled codebook and its flag survive save_pretrained / from_pretrained (which builds
    the model without storage first), and the reloaded model does not re-sample on its next training step."""
    quantizer = {**TINY_QUANTIZER, "quantizer_kwargs": {"codebook_size": 32, "init": "data"}}
    model = CodaVQModel.from_vae(tiny_vae(), quantizer=quantizer, lora=TINY_LORA)
    inner = model.quantizer.quantizers[0]
    assert not bool(inner.data_initialized)
    model.train()
    model(images(2))  # first training forward samples the codebook from the latents' level inputs
    assert bool(inner.data_initialized)
    model.eval()
    x = images(2, seed=3)
    with torch.no_grad():
        tokens = model.encode(x).indices
    model.save_pretrained(tmp_path)
    loaded, info = CodaVQModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    reloaded_inner = loaded.quantizer.quantizers[0]
    assert bool(reloaded_inner.data_initialized)
    torch.testing.assert_close(reloaded_inner.embedding, inner.embedding, rtol=0, atol=0)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.eval().encode(x).indices, tokens))
    loaded.train()
    loaded(images(2, seed=4))
    torch.testing.assert_close(reloaded_inner.embedding, inner.embedding, rtol=0, atol=0)
