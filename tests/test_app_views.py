"""The app's views computed without a browser (on tiny stand-ins and the bundled Fashion-MNIST models), the
quantizer hooks they read, the upload checks and the ``coda-hf app`` command."""

import importlib.util
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers_app import demo_photos
from PIL import Image

from coda_hf.app import (
    AppModels,
    architecture_view,
    charts,
    codebook_view,
    elbo_view,
    generate_view,
    latent_view,
    tokenize_view,
)
from coda_hf.app.images import InputImageError, image_tensor, open_upload, to_pil
from coda_hf.cli import build_parser
from coda_hf.cli import main as cli_main
from coda_hf.image_io import load_image
from coda_hf.quantizers import build_quantizer
from tools.app_models import build_standin_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    standins = build_standin_models("tiny")
    return AppModels.load(**standins, photos=demo_photos(tmp_path_factory.mktemp("photos")))


@pytest.fixture(scope="module")
def photo(models):
    image = to_pil(image_tensor(load_image(models.photos[0]), models.resolution))
    return image, torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


# ------------------------------------------------------------------ quantizer hooks


@pytest.mark.parametrize("inner", ["attention", "vq"])
def test_cumulative_codes_and_encode_levels_match_forward(inner):
    q = build_quantizer("multiscale", dim=4, scales=[1, 2, 4], quantizer=inner, quantizer_kwargs={"codebook_size": 16}).eval()
    z = torch.randn(2, 4, 4, 4)
    out = q(z)
    inputs, indices = q.encode_levels(z)
    assert all(torch.equal(a, b) for a, b in zip(indices, out.indices))
    assert [tuple(x.shape) for x in inputs] == [(2, 4, 1, 1), (2, 4, 2, 2), (2, 4, 4, 4)]
    partial = q.cumulative_codes(indices)
    assert torch.equal(partial[-1], out.quantized) and torch.equal(partial[-1], q.indices_to_codes(indices))
    errors = [float((z - p.detach()).pow(2).mean()) for p in partial]  # stats["quant_error"] is this, level by level
    torch.testing.assert_close(torch.tensor(errors), out.stats["quant_error"].float(), rtol=1e-5, atol=1e-6)
    assert torch.equal(inputs[0], torch.nn.functional.interpolate(z, size=(1, 1), mode="area"))
    torch.testing.assert_close(inputs[2], z - partial[1])  # the last level quantizes what the others left


# ------------------------------------------------------------------ views


def test_tokenize_levels_coarse_to_fine(models, photo):
    image, x = photo
    out = tokenize_view.tokenize(models, image, x)
    coda = next(r for r in out["results"] if r.name == "CODA")
    levels = models.coda.level_shapes(32, 32)
    assert len(coda.levels) == len(coda.token_maps) == len(levels) == len(coda.level_psnr)
    assert coda.tokens == sum(h * w for h, w in levels) == models.coda.num_tokens(32, 32)
    assert coda.bpp == pytest.approx(coda.tokens * math.log2(32) / 32**2)
    with torch.no_grad():  # the last level's picture is the tokenizer's own reconstruction
        full = models.coda.decode(models.coda.encode(x).indices)
    assert np.array_equal(np.asarray(coda.image), np.asarray(to_pil(full)))
    assert coda.level_psnr[-1] == pytest.approx(coda.psnr)
    assert [r.name for r in out["results"]] == ["continuous VAE", "CODA", "VQGAN"] and len(out["side_by_side"]) == 4
    assert "bits/pixel" in out["table"] and out["curve"].count("<polyline") == 2  # PSNR by level: CODA, VQGAN
    steps = list(tokenize_view.tokenize_steps(models, image, x))  # CODA, VQGAN, the VAE, then level by level
    assert len(steps) == 3 + 2 * len(levels)
    first = steps[0]  # the quick first answer: CODA's reconstruction and token maps, no level decodes yet
    assert [r.name for r in first["results"]] == ["CODA"] and first["levels"]["CODA"] == []
    assert len(first["token_maps"]["CODA"]) == len(levels)


def test_architecture_blocks_have_traced_shapes_and_lora(models, photo):
    blocks = architecture_view.trace_model(models.coda, photo[1])
    enc = [b for b in blocks if b.group == "encoder"]
    assert enc[0].name == "encoder.conv_in" and enc[0].input_shape == (1, 3, 32, 32)
    levels = [b for b in blocks if b.group == "latent"]
    assert [b.output_shape for b in levels] == [(1, h, w) for h, w in models.coda.level_shapes(32, 32)]
    assert blocks[-1].output_shape == (1, 3, 32, 32)
    lora = [b for b in blocks if b.lora]
    assert lora and all(b.lora["rank"] == "2" and 0 < b.lora["share"] < 1 for b in lora)
    block = lora[0]
    module = models.coda.vae.get_submodule(block.name)
    assert block.params == sum(p.numel() for p in module.parameters())
    html = architecture_view.render(models, "CODA tokenizer", photo[1])
    assert html.count("class='arch-block") == len(blocks) and "LoRA rank 2" in html
    for name in architecture_view._choices(models):  # every loaded model draws
        assert "arch-block" in architecture_view.render(models, name, photo[1])


def test_codebook_lookup_candidates_agree_with_the_codes(models, photo):
    _, x = photo
    result = codebook_view.lookup(models.coda, x, 3, 5)
    with torch.no_grad():
        indices = models.coda.encode(x).indices
    assert len(result["levels"]) == len(indices)
    for lv, idx in zip(result["levels"], indices):
        assert lv.code == int(idx[0, lv.cell[0], lv.cell[1]])
        assert lv.score == "softmax weight" and lv.candidates[0][0] == lv.code  # argmax = top softmax weight
        weights = [w for _, w in lv.candidates]
        assert weights == sorted(weights, reverse=True) and sum(weights) <= 1 + 1e-6
    vq = codebook_view.lookup(models.vqgan, x, 0, 0)
    assert all(lv.score == "distance" and lv.candidates[0][0] == lv.code for lv in vq["levels"])
    marked, table, residual, pca = codebook_view.click_view(models.coda, photo[0], x, 10, 10)
    assert table.count("<tr>") == len(indices) + 1 and marked.size == (384, 384) and pca.size == (440, 400)
    assert residual.count("<svg") == 2 and residual.count("class='bar'") == models.coda.latent_channels


def test_latent_clicks_decode_and_interpolate():
    fashion = AppModels.load(coda=None, vqgan=None, vae=None, prior=None, photos=None)
    assert fashion.latent_vae is not None and fashion.fashion is not None  # the bundled 2-D VAE and test sample
    lmap = latent_view.latent_map(fashion.latent_vae, fashion.fashion["images"], fashion.fashion["labels"])
    z = (0.3 * lmap.limit, -0.5 * lmap.limit)
    assert lmap.to_latent(*lmap.to_pixel(z)) == pytest.approx(z)
    first = latent_view.click(fashion.latent_vae, lmap, [], *lmap.to_pixel(z))
    with torch.no_grad():
        expected = to_pil(fashion.latent_vae.decode(torch.tensor([z], dtype=torch.float32)).sample[0])
    assert first["clicks"][0] == pytest.approx(z) and first["decoded"].size == (224, 224) and first["interpolation"] is None
    assert np.array_equal(np.asarray(first["decoded"])[::8, ::8], np.asarray(expected))
    second = latent_view.click(fashion.latent_vae, lmap, first["clicks"], 100, 100)
    assert len(second["clicks"]) == 2 and second["interpolation"].size == (8 * 112 + 7 * 4, 112)
    assert len(latent_view.click(fashion.latent_vae, lmap, second["clicks"], 10, 10)["clicks"]) == 1  # starts over


def test_elbo_terms_trade_off_across_betas():
    fashion = AppModels.load(coda=None, vqgan=None, vae=None, prior=None, latent_vae=None, photos=None)
    betas = list(fashion.beta_vaes)
    assert betas == sorted(betas) and len(betas) >= 3
    out = elbo_view.elbo_view(fashion.beta_vaes, fashion.fashion["images"][0], math.log2(betas[-1]))
    assert out["chosen"].beta == betas[-1] and f"beta = {betas[-1]:g}" in out["html"] and len(out["gallery"]) == len(betas)
    kls = [t.kl for t in out["terms"]]
    assert kls[0] > kls[-1]  # a larger beta: a smaller KL
    t = out["terms"][1]
    x = elbo_view.fashion_tensor(fashion.fashion["images"][0])
    with torch.no_grad():
        model_kl = fashion.beta_vaes[t.beta].encode(x).latent_dist.kl()
    assert t.kl == pytest.approx(float(model_kl), rel=1e-5) and t.elbo == pytest.approx(t.log_likelihood - t.kl)
    assert elbo_view.nearest_beta(betas, 0.4) == 1.0 and elbo_view.upload_to_fashion(Image.new("RGB", (50, 30))).shape == (28, 28)


def test_generate_records_every_unmasking_step(models):
    steps = []
    out = generate_view.generate(models.prior, 3, 1, 1.5, 7, on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)] and len(out["rows"]) == 3 and out["steps"].height >= 3 * 96
    again = models.prior(class_labels=[1], num_inference_steps=3, guidance_scale=1.5,
                         generator=torch.Generator().manual_seed(7), output_type="latent")  # fmt: skip
    assert torch.equal(out["tokens"], again.tokens[0])  # the recording scheduler changes nothing
    assert int(out["decided_at"].min()) == 0 and int(out["decided_at"].max()) == 2
    assert out["rows"][-1] == "step 3/3:\n341/341 tokens decided"


# ------------------------------------------------------------------ inputs and command


def test_open_upload_readable_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(InputImageError, match="notes.png is not an image the app can read"):
        open_upload(tmp_path / "notes.png")
    Image.new("1", (8000, 6000)).save(tmp_path / "big.png")
    with pytest.raises(InputImageError, match=r"big.png is 8000x6000 pixels \(48 MP\)"):
        open_upload(tmp_path / "big.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(InputImageError, match="dot.png is only 1x1 pixels"):
        open_upload(tmp_path / "dot.png")
    Image.new("LA", (20, 30)).save(tmp_path / "ok.png")
    assert open_upload(tmp_path / "ok.png").mode == "RGB"


def test_app_models_defaults_and_none(tmp_path):
    empty = AppModels.load(coda=None, vqgan=None, vae=None, prior=None, latent_vae=None, beta_vaes=None, photos=None,
                           fashion=None)  # fmt: skip
    assert empty.tokenizers() == {} and empty.modules() == [] and empty.resolution == 256
    standins = build_standin_models("tiny")
    standins["prior"].transformer.save_pretrained(tmp_path / "transformer")
    with pytest.raises(ValueError, match="MaskGIT transformer without its tokenizer"):
        AppModels.load(coda=None, prior=tmp_path / "transformer", photos=None)
    built = AppModels.load(coda=standins["coda"], vqgan=None, vae=None, prior=tmp_path / "transformer", photos=None)
    assert built.prior.tokenizer is built.coda and built.resolution == 32  # a transformer directory + the CODA model


def test_app_shows_tile_wise_tokenizers_at_256_px():
    """The bundled photo tokenizers quantize 16 x 16 latent tiles (64 px): the app shows 256 px photos, not
    the VAE config's sample_size."""
    import coda_hf

    coda = coda_hf.CodaVQModel.from_pretrained(coda_hf.bundled_model("photos-coda"))
    models = AppModels.load(coda=coda, vqgan=None, vae=None, prior=None, latent_vae=None, beta_vaes=None,
                            photos=None, fashion=None)  # fmt: skip
    assert coda.config.latent_tile_size == 16 and models.resolution == 256


def test_app_command_help_and_bad_model_dir(capsys, tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["app", "--help"])
    out = capsys.readouterr().out
    flags = ("--coda", "--vqgan", "--vae", "--prior", "--latent-vae", "--beta-vae", "--photos", "--resolution")
    assert all(flag in out for flag in flags)
    assert cli_main(["app", "--coda", str(tmp_path / "missing")]) == 2  # a usage error; no server starts
    err = capsys.readouterr().err
    assert err.startswith("coda-hf app: error:") and "missing" in err and "Traceback" not in err


def test_space_entry_point_builds_the_default_app():
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[app]')")

    namespace = runpy.run_path(str(ROOT / "app.py"), run_name="app")  # a Space imports it: no launch
    assert isinstance(namespace["demo"], gr.Blocks)


def test_svg_charts():
    svg = charts.bars([1.0, -2.0, 3.0], "t", "x", "y")
    assert svg.count("class='bar'") == 3 and svg.startswith("<svg")
    lines = charts.lines({"a": [(0, 1.0), (1, 2.0)], "b": [(0, 0.5), (1, 0.7)]}, "t", "x", "y", hline=("ref", 1.5),
                         highlight=(1, 2.0), labels=[(0, 1.0, "start")])  # fmt: skip
    assert lines.count("<polyline") == 2 and "ref" in lines and "r='9'" in lines and "start" in lines
    assert charts._ticks(0.0, 1.0) == [0.0, 0.5, 1.0] and charts._ticks(14.5, 16.2) == [14.5, 15.0, 15.5, 16.0]


def test_latency_script_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_app_latency", ROOT / "benchmarks" / "bench_app_latency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.main(["--help"])
    result = script.main(["--repeats", "1", "--standin-size", "tiny", "--generate-steps", "2"])
    seconds = result["runs"]["tiny"]["seconds"]
    assert "tokenize: complete (every level decoded)" in seconds and all(v > 0 for k, v in seconds.items() if "cached" not in k)
    header = "bundled, 256 px" if result["runs"]["tiny"]["standins"] == [] else "tiny stand-ins, 32 px"
    assert f"| interaction | {header} |" in capsys.readouterr().out
