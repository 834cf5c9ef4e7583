"""Latent shift / scale of a VAE: measured, stored in its config, used by CodaVQModel.from_vae."""

import json

import pytest
import torch
from _helpers_metrics import tiny_autoencoder_kl, write_images

from coda_hf.cli import main
from coda_hf.models import CodaVQModel
from coda_hf.models.latent_stats import estimate_latent_normalization, write_latent_normalization


def test_normalised_latents_have_zero_mean_unit_std():
    torch.manual_seed(0)
    vae = tiny_autoencoder_kl().eval()
    batches = [torch.rand(3, 3, 32, 32) * 2 - 1 for _ in range(2)]
    stats = estimate_latent_normalization(vae, batches)
    assert stats["num_images"] == 6
    with torch.no_grad():
        z = torch.cat([vae.encode(b).latent_dist.mean for b in batches]).double()
    normalised = (z - stats["shift_factor"]) * stats["scaling_factor"]
    assert abs(float(normalised.mean())) < 1e-6
    assert float(normalised.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)


def test_empty_batches_and_missing_config_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        estimate_latent_normalization(tiny_autoencoder_kl(), [])
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_latent_normalization(tmp_path, {"shift_factor": 0.0, "scaling_factor": 1.0})


def test_cli_writes_factors_that_from_vae_reads(tmp_path):
    torch.manual_seed(0)
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    write_images(tmp_path / "images", n=4)
    rc = main(["latent-stats", "--vae", str(tmp_path / "vae"), "--data", str(tmp_path / "images"),
               "--resolution", "32", "--batch-size", "2", "--write", "--output", str(tmp_path / "s.json")])  # fmt: skip
    assert rc == 0
    assert json.loads((tmp_path / "s.json").read_text())["num_images"] == 4
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert config["scaling_factor"] != 0.18215 and config["scaling_factor"] > 0
    coda = CodaVQModel.from_vae(str(tmp_path / "vae"), lora={"rank": 0},
                                quantizer={"name": "vq", "codebook_size": 16})  # fmt: skip
    assert coda.config.shift_factor == pytest.approx(config["shift_factor"])
    assert coda.config.scaling_factor == pytest.approx(config["scaling_factor"])
