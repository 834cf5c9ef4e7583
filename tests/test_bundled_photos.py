"""The bundled PHOTO models (benchmarks/train_bundled.py): defaults of the CLI and of the transformers pipeline,
the prior's one-liner, tile-wise tokenization of 256 px photos without seams, photos and their licences."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

import coda_hf
from coda_hf.bundled import (
    DEFAULT_PRIOR,
    DEFAULT_TOKENIZER,
    bundled_model,
    bundled_model_info,
    bundled_photos,
)
from coda_hf.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
PHOTO_MODELS = ("photos-vae", "photos-coda", "photos-vqgan", "photos-prior")


def test_the_photo_models_and_photos_are_bundled_with_cards_and_licences():
    for name in PHOTO_MODELS:
        info = bundled_model_info(name)
        assert info["description"] and (ROOT / "model_cards" / info["card"]).is_file()
    photos = bundled_photos()
    assert 3 <= len(photos) <= 6 and sum(p.stat().st_size for p in photos) < 1_000_000
    credits = {e["file"]: e for e in json.loads((photos[0].parent / "photos.json").read_text())["photos"]}
    assert set(credits) == {p.name for p in photos}
    for entry in credits.values():
        assert entry["split"] == "eval" and entry["license"] and entry["license"] != "unknown"
        if entry["license_text"]:
            assert (photos[0].parent / entry["license_text"]).is_file()
    # the CODA tokenizer is stored once, as the prior pipeline's tokenizer
    assert Path(bundled_model(DEFAULT_TOKENIZER)) == Path(bundled_model(DEFAULT_PRIOR)) / "tokenizer"


def test_cli_tokenize_and_reconstruct_default_to_the_bundled_tokenizer(tmp_path, caplog):
    photo = bundled_photos()[0]
    caplog.set_level(logging.INFO, logger="coda_hf.commands.tokenize")
    assert cli_main(["tokenize", str(photo), "--output", str(tmp_path / "t.safetensors"), "--no-progress"]) == 0
    lines = [r.getMessage() for r in caplog.records if "no --model given" in r.getMessage()]
    assert len(lines) == 1 and DEFAULT_TOKENIZER in lines[0]
    from coda_hf.tokens_file import read_tokens

    tokens = read_tokens(tmp_path / "t.safetensors")
    assert tokens.model == bundled_model(DEFAULT_TOKENIZER)
    assert tokens.images[0].image_size == (256, 256) and tokens.images[0].token_ids.shape == (16 * 680,)
    assert cli_main(["reconstruct", str(photo), "--output-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    assert (tmp_path / "r" / f"{photo.stem}.png").is_file()
    assert cli_main(["decode", str(tmp_path / "t.safetensors"), "--output-dir", str(tmp_path / "d")]) == 0


def test_pipeline_without_a_model_uses_the_bundled_tokenizer_and_never_shadows_a_hub_id():
    from transformers import pipeline

    tokenizer = pipeline(task="image-tokenization")
    assert Path(tokenizer.model.name_or_path) == Path(bundled_model(DEFAULT_TOKENIZER))
    out = tokenizer(str(bundled_photos()[0]))
    assert out["image_size"] == (256, 256) and out["token_ids"].shape == (10_880,)
    assert out["level_shapes"][0] == (4, 4) and out["level_shapes"][-1] == (64, 64)  # mosaics of 4 x 4 tiles
    with pytest.raises(OSError):  # a bundled NAME given as a model is a Hub id (offline here): never the bundled copy
        pipeline(task="image-tokenization", model=DEFAULT_TOKENIZER)


def test_the_prior_one_liner_samples_tiles():
    pipe = coda_hf.CodaMaskGitPipeline.from_pretrained(coda_hf.bundled_model("photos-prior"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert pipe.tokenizer.latent_tile_size == 16 and pipe.tokenizer.config.decoder_lora_rank == 0  # merged


def test_tile_wise_tokenization_of_256_px_photos_has_no_seam(monkeypatch):
    """Error within 2 px of the 64 px tile borders vs tile interiors (benchmarks/bench_tile_seams.py): the
    bundled tokenizer (whole-image VAE, tile-wise quantizer) stays at the continuous VAE's ratio; encoding each
    64 px crop alone (the naive way) shows its seams."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.delitem(sys.modules, "bench_tile_seams", raising=False)
    from bench_tile_seams import reconstructions, seam_errors
    from diffusers import AutoencoderKL

    from coda_hf.demo import load_photos
    from coda_hf.models import CodaVQModel

    coda = CodaVQModel.from_pretrained(bundled_model("photos-coda")).eval()
    vae = AutoencoderKL.from_pretrained(bundled_model("photos-vae")).eval()
    images = load_photos(bundled_photos()[:2])
    rows = {name: seam_errors(recon, images) for name, recon in reconstructions(coda, vae, images).items()}
    ratio = {name: r["border_over_interior"] for name, r in rows.items()}
    assert ratio["tiled"] < 1.1 * ratio["continuous VAE"], rows
    assert ratio["per-tile"] > 1.2 * ratio["tiled"], rows


def test_a_bundle_json_directory_points_inside_the_models_folder_only(tmp_path, monkeypatch):
    import coda_hf.bundled as registry

    models = tmp_path / "models"
    (models / "pipe" / "tokenizer").mkdir(parents=True)
    (models / "pipe" / "model_index.json").write_text("{}")
    (models / "pipe" / "tokenizer" / "config.json").write_text("{}")
    (models / "tok").mkdir()
    (models / "tok" / "bundle.json").write_text(json.dumps({"description": "d", "directory": "../pipe/tokenizer"}))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text("{}")
    (models / "escape").mkdir()
    (models / "escape" / "bundle.json").write_text(json.dumps({"directory": "../../outside"}))
    monkeypatch.setattr(registry, "MODELS_DIR", models.resolve())
    assert registry.bundled_model("tok") == str((models / "pipe" / "tokenizer").resolve())
    assert set(registry.bundled_models()) == {"pipe", "tok"} and registry.bundled_models()["tok"] == "d"
    assert registry.bundled_model_info("tok")["directory"] == "../pipe/tokenizer"
    with pytest.raises(registry.UnknownBundledModelError):
        registry.bundled_model("escape")
