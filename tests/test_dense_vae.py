"""DenseVAE (the atlas views' small beta-VAE), kl_per_channel, and examples/train_dense_vae.py (2-step smoke)."""

import importlib.util
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from PIL import Image

from coda_hf.data.fashion_mnist import FASHION_MNIST_LABELS
from coda_hf.data.shards import encode_png, write_parquet_shards
from coda_hf.losses import kl_per_channel
from coda_hf.models import DenseVAE

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_dense_vae", ROOT / "examples" / "train_dense_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kl_per_channel_sums_to_diffusers_kl():
    params = torch.randn(3, 8, 4, 5)  # (B, 2C, H, W): 4 channels of mean and log-variance
    posterior = DiagonalGaussianDistribution(params)
    per = kl_per_channel(posterior)
    assert per.shape == (3, 4)
    torch.testing.assert_close(per.sum(1), posterior.kl())
    mean, logvar = posterior.mean, posterior.logvar  # channel 2 alone, by the closed form
    expected = 0.5 * (mean[:, 2] ** 2 + logvar[:, 2].exp() - 1 - logvar[:, 2]).flatten(1).sum(1)
    torch.testing.assert_close(per[:, 2], expected)
    assert torch.equal(kl_per_channel(DiagonalGaussianDistribution(params, deterministic=True)), torch.zeros(3, 4))


def test_dense_vae_forward_elbo_and_round_trip(tmp_path):
    model = DenseVAE(image_size=12, in_channels=1, hidden_sizes=[16, 8], latent_dim=3).eval()
    x = torch.rand(4, 1, 12, 12)
    out = model(x)
    assert out.sample.shape == out.logits.shape == (4, 1, 12, 12) and out.kl.shape == (4, 3)
    assert out.latents.shape == (4, 3) and torch.equal(out.latents, out.posterior.mean.flatten(1))
    assert float(out.sample.detach().min()) >= 0 and float(out.sample.detach().max()) <= 1
    bce = torch.nn.functional.binary_cross_entropy(out.sample, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(out.reconstruction_nll, bce, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.kl.sum(1), out.posterior.kl())
    torch.testing.assert_close(out.elbo, -(out.reconstruction_nll + out.kl.sum(1)))
    torch.testing.assert_close(out.loss(4.0), (out.reconstruction_nll + 4 * out.kl.sum(1)).mean())
    with pytest.raises(ValueError, match="beta must be >= 0"):
        out.loss(-1.0)
    sampled = [model(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).latents for _ in range(2)]
    assert torch.equal(*sampled) and not torch.equal(sampled[0], out.latents)  # seeded reparameterisation
    assert torch.equal(model.decode(out.latents).sample, model.decode(out.latents[:, :, None, None]).sample)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hidden_sizes"] == [16, 8] and "beta" not in config  # beta is a training setting
    reloaded = DenseVAE.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(x).sample, out.sample)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"latent_dim": 0}, "must be >= 1"), ({"hidden_sizes": [0]}, "must be >= 1"), ({"act_fn": "swish2"}, "act_fn")],
)
def test_dense_vae_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DenseVAE(**kwargs)


def test_dense_vae_bad_inputs():
    model = DenseVAE(image_size=8, hidden_sizes=[4], latent_dim=2)
    with pytest.raises(ValueError, match=r"images must be a \(B, 1, 8, 8\)"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="float tensor"):
        model.encode(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"latents must be \(B, 2\)"):
        model.decode(torch.zeros(2, 3))


def _fake_fashion(folder: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_LABELS))})
    for split in ("train", "test"):
        images = [encode_png(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L")) for _ in range(n)]
        write_parquet_shards({"image": images, "label": [i % 10 for i in range(n)]}, features, folder, split, 2)
    (folder / "manifest.json").write_text(json.dumps({"package_version": "test", "license": "Expat"}))
    return folder


def test_train_script_smoke_writes_model_card_and_sample(tmp_path, capsys, monkeypatch):
    script = _script()
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0 and "--beta" in capsys.readouterr().out
    data = _fake_fashion(tmp_path / "data")
    card = tmp_path / "card.md"
    argv = ["--data", str(data), "--output-dir", str(tmp_path / "model"), "--name", "tiny", "--card", str(card),
            "--latent-dim", "2", "--hidden-sizes", "8", "--max-steps", "2", "--batch-size", "8", "--train-images", "30",
            "--beta", "2.5"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["train_dense_vae.py", *argv])
    metrics = script.main(argv)
    settings = json.loads((tmp_path / "model" / "training_config.json").read_text())
    assert settings["beta"] == 2.5 and settings["history"][-1]["steps"] == 2 and settings["data"]["val_images"] == 10
    model = DenseVAE.from_pretrained(tmp_path / "model")
    images = torch.from_numpy(script.load_split(str(data), "test")[0]).float().div(255)[:, None]
    assert script.evaluate(model, images) == metrics  # the card's numbers are a re-runnable evaluation
    text = card.read_text()
    block = json.loads(text.split("```json\n")[1].split("```")[0])
    assert block == metrics and "beta = 2.5" in text and "--max-steps 2" in text
    assert json.loads((tmp_path / "model" / "bundle.json").read_text())["card"] == "card.md"
    script.main(["--data", str(data), "--write-test-sample", str(tmp_path / "s.npz"), "--sample-per-class", "2"])
    with np.load(tmp_path / "s.npz") as sample:
        assert sample["images"].shape == (20, 28, 28) and sorted(set(sample["labels"].tolist())) == list(range(10))
