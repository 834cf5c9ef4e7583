"""Model cards rendered from model_cards/ for every kind of saved model (no server needed)."""

import json

import pytest
from _helpers_maskgit import tiny_coda_tokenizer, tiny_pipeline, tiny_prior
from _helpers_metrics import tiny_autoencoder_kl

from coda_hf.hub import build_model_card, detect_kind


def _card(path, **kw):
    card = build_model_card(path, "my-org/model", **kw)
    return card, card.data.to_dict()


def test_tokenizer_card_metadata_metrics_and_training_config(tmp_path):
    tiny_coda_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "training_config.json").write_text(json.dumps({"pretrained_vae": "org/base-vae", "dataset_name": "org/photos"}))
    metrics = {"psnr": 25.5, "utilization": 1.0, "tokens_per_image": 21, "resolution": 32}
    card, data = _card(tmp_path, metrics=metrics)
    assert detect_kind(tmp_path) == "tokenizer"
    assert data["library_name"] == "coda_hf" and data["pipeline_tag"] == "image-feature-extraction"
    assert data["base_model"] == "org/base-vae" and data["datasets"] == ["org/photos"]
    assert "discrete-tokens" in data["tags"]
    results = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert results == {"psnr": 25.5, "utilization": 1.0, "tokens_per_image": 21.0}
    assert "CODA" in card.text and "CodaVQModel.from_pretrained(\"my-org/model\")" in card.text
    assert "Tokens per 32x32 image: 21" in card.text and '"pretrained_vae": "org/base-vae"' in card.text


def test_continuous_vae_card_says_continuous(tmp_path):
    tiny_autoencoder_kl().save_pretrained(tmp_path)
    card, data = _card(tmp_path)
    assert "discrete-tokens" not in data["tags"]
    assert "continuous KL autoencoder" in card.text and "AutoencoderKL.from_pretrained" in card.text
    assert "Quantizer:" not in card.text and "discrete image tokenizer" not in card.text


def test_prior_and_pipeline_cards(tmp_path):
    tiny_prior().save_pretrained(tmp_path / "prior")
    _, prior = _card(tmp_path / "prior")
    assert detect_kind(tmp_path / "prior") == "prior" and prior["pipeline_tag"] == "unconditional-image-generation"
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    card, pipe = _card(tmp_path / "pipe")
    assert detect_kind(tmp_path / "pipe") == "pipeline" and "maskgit" in pipe["tags"]
    assert "CodaMaskGitPipeline" in card.text


def test_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved model"):
        build_model_card(tmp_path, "my-org/model")
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="neither a coda_hf tokenizer nor a MaskGIT prior"):
        build_model_card(tmp_path, "my-org/model")
