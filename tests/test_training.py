"""Tokenizer training: config parsing, 2-3 step smoke runs of every mode, fine-tuning, non-finite losses,
unreadable images, data sources, mixed precision, checkpoint bookkeeping, push to a local Hub."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import torch
from _helpers_training import TINY_VAE, TINY_VQGAN, base_args, load_weights, run_script, write_images
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from coda_hf.training import NonFiniteLossError, TrainingConfig, main
from coda_hf.training.checkpointing import list_checkpoints, remove_incomplete, resolve_checkpoint

VQ = {"name": "vq", "codebook_size": 16}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 6)
    return folder


def _summary(out):
    return json.loads((out / "training_summary.json").read_text())


@pytest.fixture
def inject_nonfinite(monkeypatch):
    """``inject_nonfinite({2, 3})``: the generator loss is NaN on those update attempts (1-based, skipped
    updates included). Fault injection lives here, in the tests, not in the trainer."""
    from coda_hf.losses import ReconstructionLoss
    from coda_hf.training.trainer import Trainer

    def inject(attempts):
        current = {}
        update, generator_loss = Trainer.update, ReconstructionLoss.generator_loss

        def counting_update(self):
            current["attempt"] = self.attempts + 1
            return update(self)

        def nan_loss(self, *args, **kwargs):
            out = generator_loss(self, *args, **kwargs)
            if current.get("attempt") in attempts:
                out.total = out.total * float("nan")
            return out

        monkeypatch.setattr(Trainer, "update", counting_update)
        monkeypatch.setattr(ReconstructionLoss, "generator_loss", nan_loss)

    return inject


# ------------------------------------------------------------------------------------ config
def test_config_yaml_then_cli_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vqgan\nlearning_rate: 1.0e-4\nquantizer: {name: vq, codebook_size: 64}\nuse_ema: true\n")
    c = TrainingConfig.from_args([
        "--config", str(cfg), "--learning_rate", "3e-4", "--quantizer.codebook_size", "16", "--streaming",
        "--use_ema", "false", "--max_train_steps=7", "--disc_learning_rate", "none",
    ])  # fmt: skip
    assert c.model == "vqgan" and c.learning_rate == 3e-4 and c.max_train_steps == 7
    assert c.quantizer == {"name": "vq", "codebook_size": 16}
    assert c.streaming is True and c.use_ema is False
    assert c.disc_learning_rate is None
    # paper defaults
    assert (c.adam_beta1, c.adam_beta2, c.weight_decay, c.disc_weight_decay, c.max_grad_norm) == (0.5, 0.9, 0.005, 0.0005, 10.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vqgan", "--learning_rat", "1"], "unknown option --learning_rat (did you mean --learning_rate?)"),
        (["--model", "vqgan", "--inject_nonfinite_at", "2"], "unknown option --inject_nonfinite_at"),  # test hook gone
        (["--model", "vqgan", "--train_batch_size", "two"], "train_batch_size"),
        (["--model", "gan"], "model must be one of"),
        (["--model", "coda"], "--pretrained_vae"),
        (["--model", "vqgan", "--reinit_codebook"], "--pretrained_model"),
        (["--model", "vqgan", "--push_to_hub"], "--hub_model_id"),
        (["--model", "vqgan", "--mixed_precision", "fp8"], "mixed_precision"),
        (["--model", "vqgan", "--mixed_precision", "fp16"], "fp16 is not supported with a discriminator"),
        (["--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["--model", "vae", "--quantizer_learning_rate", "1e-4"], "continuous VAE has no quantizer"),
        (["--model", "vqgan", "--quantizer_learning_rate", "-1"], "quantizer_learning_rate must be >= 0"),
    ],
)
def test_config_errors_name_the_input(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        TrainingConfig.from_args(argv)


def test_saved_training_config_round_trips_without_secrets(tmp_path):
    c = TrainingConfig(model="vqgan", hub_token="hf_secret", quantizer=VQ)
    c.save(tmp_path)
    data = json.loads((tmp_path / "training_config.json").read_text())
    assert "hub_token" not in data and "hf_secret" not in (tmp_path / "training_config.yaml").read_text()
    assert TrainingConfig.from_yaml(tmp_path / "training_config.yaml") == TrainingConfig(model="vqgan", quantizer=VQ)


# ------------------------------------------------------------------------------------ smoke runs
@pytest.mark.slow  # a fresh interpreter (imports dominate); the in-process runs below cover the loop
def test_vae_script_smoke_counts_unreadable_images(tmp_path):
    data = tmp_path / "images"
    write_images(data, 6, bad=1)
    out = tmp_path / "vae"
    proc = run_script(base_args(data, out, tmp_path, steps=3, model="vae", model_kwargs=TINY_VAE, kl_beta=1e-3,
                                num_train_epochs=1))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping unreadable image" in proc.stderr and "broken0.png" in proc.stderr
    summary = _summary(out)
    assert summary["global_step"] == 3 and summary["skipped_images"] == 1
    assert summary["last_logs"]["loss/kl"] > 0  # the KL term is on
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out)
    assert list(vae.config.block_out_channels) == [8, 16]
    assert json.loads((out / "training_config.json").read_text())["kl_beta"] == 1e-3
    assert list((out / "logs").rglob("events.out.tfevents*")), "tensorboard logs missing"


def test_vqgan_with_gan_ema_accumulation_and_image_logging(tmp_path, images):
    out = tmp_path / "vqgan"
    result = main(base_args(
        images, out, tmp_path, steps=2, model="vqgan", model_kwargs=TINY_VQGAN, quantizer=VQ,
        gan_weight=1.0, discriminator="patchgan", discriminator_kwargs={"ndf": 8, "n_layers": 2},
        perceptual_weight=0.1, perceptual_pretrained=False, use_ema=True, ema_decay=0.5,
        gradient_accumulation_steps=2, image_logging_steps=1, lr_warmup_steps=1,
    ))  # fmt: skip
    assert result.global_step == 2
    logs = result.last_logs
    for key in ("loss/gan", "loss/gan_weight", "disc/d_loss", "loss/perceptual", "loss/quantizer", "lr"):
        assert key in logs and torch.isfinite(torch.tensor(logs[key])), key
    assert logs["loss/gan_weight"] > 0  # adaptive weight computed from the decoder's last layer
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step-0000001.png", "step-0000002.png"]
    from coda_hf.models.vqgan import VQGANModel

    model = VQGANModel.from_pretrained(out)
    assert model.quantizer.codebook_size == 16
    # EMA weights were saved, not the raw ones: they differ from the last checkpoint's model state.
    raw = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    saved = load_weights(out)
    assert any(not torch.equal(saved[k], raw[k]) for k in raw if k in saved and saved[k].is_floating_point())


def _tiny_vae_dir(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    path = tmp_path / "base_vae"
    AutoencoderKL(**TINY_VAE).save_pretrained(path)
    return path


CODA_QUANTIZER = {"name": "multiscale", "dim": 4, "scales": [1, 2, 4, 16], "quantizer": "attention",
                  "quantizer_kwargs": {"dim": 4, "codebook_size": 16, "codebook_dim": 8, "hidden_dim": 8}}  # fmt: skip


def test_coda_adapts_a_pretrained_vae_with_gan(tmp_path, images):
    base = _tiny_vae_dir(tmp_path)
    out = tmp_path / "coda"
    result = main(base_args(
        images, out, tmp_path, steps=2, model="coda", pretrained_vae=str(base), quantizer=CODA_QUANTIZER,
        model_kwargs={"lora": {"rank": 2}}, gan_weight=1.0, discriminator="patchgan",
        discriminator_kwargs={"ndf": 8, "n_layers": 2}, use_ema=True, ema_decay=0.5,
    ))  # fmt: skip
    assert result.global_step == 2
    # The adaptive weight is measured at the frozen decoder output conv.
    assert result.last_logs["loss/gan_weight"] > 0 and "stats/utilization" in result.last_logs
    from coda_hf.models.coda_vq import CodaVQModel

    model = CodaVQModel.from_pretrained(out)
    assert model.quantizer.codebook_size == 16
    assert not model.vae.decoder.conv_out.weight.requires_grad
    # LoRA B matrices start at zero: after training (EMA weights saved) they are not.
    lora_b = {k: v for k, v in load_weights(out).items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values())
    assert json.loads((out / "training_config.json").read_text())["pretrained_vae"] == str(base)
    # The base VAE stays frozen: its (non-LoRA) output conv is bit-identical to the pretrained one.
    from diffusers import AutoencoderKL

    pretrained = AutoencoderKL.from_pretrained(base)
    assert torch.equal(model.get_last_layer(), pretrained.decoder.conv_out.weight)
    with torch.no_grad():
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        assert model.eval()(x).sample.shape == x.shape


def test_coda_checkpoint_resumes_lora_quantizer_disc_and_ema(tmp_path, images):
    base = _tiny_vae_dir(tmp_path)
    out = tmp_path / "coda_resume"
    common = dict(model="coda", pretrained_vae=str(base), quantizer=CODA_QUANTIZER, model_kwargs={"lora": {"rank": 2}},
                  gan_weight=1.0, discriminator="patchgan", discriminator_kwargs={"ndf": 8, "n_layers": 2},
                  use_ema=True, checkpointing_steps=1, report_to="none")  # fmt: skip
    main(base_args(images, out, tmp_path, steps=2, **common))
    AcceleratorState._reset_state(reset_partial_state=True)
    result = main(base_args(images, out, tmp_path, steps=3, **common, resume_from_checkpoint=str(out / "checkpoint-2")))
    assert result.global_step == 3 and result.last_checkpoint == str(out / "checkpoint-3")
    state = json.loads((out / "checkpoint-3" / "training_state_rank0.json").read_text())
    assert state["global_step"] == 3 and state["attempts"] == 3


def test_coda_preset_reaches_from_vae(tmp_path, images):
    base = _tiny_vae_dir(tmp_path)
    # The tiny 2x, 4-channel VAE does not match the 8x FLUX recipe: from_vae's check names it.
    with pytest.raises(ValueError, match="preset 'flux-vae' expects"):
        main(base_args(images, tmp_path / "o", tmp_path, model="coda", pretrained_vae=str(base), preset="flux-vae"))


@pytest.mark.parametrize("kind", ["vqgan", "coda"])
@pytest.mark.parametrize("reinit", [False, True])
def test_finetune_keeps_codebook_unless_reinit(tmp_path, images, reinit, kind):
    src = tmp_path / "src"
    torch.manual_seed(1)
    if kind == "vqgan":
        from coda_hf.models.vqgan import VQGANModel

        VQGANModel(quantizer=VQ, **TINY_VQGAN).save_pretrained(src)
    else:
        from coda_hf.models.coda_vq import CodaVQModel

        CodaVQModel.from_vae(str(_tiny_vae_dir(tmp_path)), quantizer=CODA_QUANTIZER, lora={"rank": 2}).save_pretrained(src)
    out = tmp_path / "ft"
    # learning rate 0: fine-tuning leaves every weight where it started, so the codebook is exactly
    # the source's when kept and a fresh one when re-initialised.
    argv = base_args(images, out, tmp_path, steps=2, model=kind, pretrained_model=str(src), learning_rate=0.0)
    main(argv + (["--reinit_codebook"] if reinit else []))
    before, after = load_weights(src), load_weights(out)
    codebook = [k for k in before if k.startswith("quantizer.") and before[k].ndim == 2]
    assert codebook, sorted(before)
    same = all(torch.equal(before[k], after[k]) for k in codebook)
    assert same is (not reinit)
    last = "decoder.conv_out.weight" if kind == "vqgan" else "vae.decoder.conv_out.weight"
    assert torch.equal(before[last], after[last])
    assert json.loads((out / "training_config.json").read_text())["pretrained_model"] == str(src)


def test_quantizer_learning_rate_is_its_own_group(tmp_path, images):
    from coda_hf.models.coda_vq import CodaVQModel

    src = tmp_path / "src"
    torch.manual_seed(1)
    CodaVQModel.from_vae(str(_tiny_vae_dir(tmp_path)), quantizer=CODA_QUANTIZER, lora={"rank": 2}).save_pretrained(src)
    out = tmp_path / "ft"
    # The adapters learn at 1e-2, the quantizer at 0: every quantizer weight stays bit-identical.
    main(base_args(images, out, tmp_path, steps=2, model="coda", pretrained_model=str(src), learning_rate=1e-2,
                   quantizer_learning_rate=0.0))  # fmt: skip
    before, after = load_weights(src), load_weights(out)
    quantizer = [k for k in before if k.startswith("quantizer.")]
    lora = [k for k in before if "lora_" in k]
    assert quantizer and lora
    assert all(torch.equal(before[k], after[k]) for k in quantizer)
    assert not all(torch.equal(before[k], after[k]) for k in lora)


def test_frozen_vae_with_an_ema_codebook_is_a_clear_error(tmp_path, images):
    """Nothing trained by gradient (frozen VAE, no LoRA, EMA codebook): the error says what to unfreeze."""
    with pytest.raises(ValueError, match="no parameter is trained by gradient.*LoRA adapters.*use_ema=False"):
        main(base_args(images, tmp_path / "o", tmp_path, model="coda", pretrained_vae=str(_tiny_vae_dir(tmp_path)),
                       quantizer={**VQ, "use_ema": True}, model_kwargs={"lora": {"rank": 0}}))  # fmt: skip


def test_data_init_images_samples_the_codebook_from_many_images(tmp_path, images, monkeypatch):
    from coda_hf.quantizers import MultiScaleResidualQuantizer

    seen = []
    original = MultiScaleResidualQuantizer.initialize

    def spy(self, z, generator=None):
        seen.append(tuple(z.shape))
        return original(self, z, generator)

    monkeypatch.setattr(MultiScaleResidualQuantizer, "initialize", spy)
    quantizer = {**CODA_QUANTIZER, "quantizer_kwargs": {**CODA_QUANTIZER.get("quantizer_kwargs", {}), "init": "data"}}
    out = tmp_path / "init"
    main(base_args(images, out, tmp_path, steps=2, model="coda", pretrained_vae=str(_tiny_vae_dir(tmp_path)),
                   quantizer=quantizer, data_init_images=5))  # fmt: skip
    # before the first step: 5 images (batches of 2 cut to 5), not the first batch of 2; never again
    assert len(seen) == 1 and seen[0][0] == 5
    from coda_hf.models.coda_vq import CodaVQModel

    assert bool(CodaVQModel.from_pretrained(out).quantizer.quantizers[0].data_initialized)
    with pytest.raises(ValueError, match="data_init_images must be >= 0"):
        TrainingConfig.from_args(["--model", "vqgan", "--data_init_images", "-1"])


def test_zero_steps_saves_a_training_free_tokenizer(tmp_path, images):
    """``max_train_steps 0``: no update; the quantile quantizer is measured on ``data_init_images`` training
    images and the model saved with its frozen VAE untouched (a training-free tokenizer, TokenBridge-style)."""
    from coda_hf.models.coda_vq import CodaVQModel

    vae_dir, out = _tiny_vae_dir(tmp_path), tmp_path / "ptq"
    result = main(base_args(images, out, tmp_path, steps=0, model="coda", pretrained_vae=str(vae_dir),
                            quantizer={"name": "quantile", "bins": 4}, model_kwargs={"lora": {"rank": 0}},
                            data_init_images=5))  # fmt: skip
    assert result.global_step == 0 and _summary(out)["global_step"] == 0
    model = CodaVQModel.from_pretrained(out)
    assert bool(model.quantizer.data_initialized) and not model.quantizer.needs_data_init
    boundaries = model.quantizer.boundaries  # (4 channels, 3) measured, not the standard-normal start
    assert boundaries.shape == (4, 3) and not torch.allclose(boundaries, boundaries[:1].expand(4, -1))
    base = load_weights(vae_dir)
    saved = {k[len("vae."):]: v for k, v in load_weights(out).items() if k.startswith("vae.")}
    assert saved.keys() == base.keys() and all(torch.equal(base[k], saved[k]) for k in base)
    with pytest.raises(ValueError, match="needs data_init_images > 0"):
        main(base_args(images, tmp_path / "o2", tmp_path, steps=0, model="coda", pretrained_vae=str(vae_dir),
                       quantizer={"name": "quantile", "bins": 4}, model_kwargs={"lora": {"rank": 0}}))  # fmt: skip
    with pytest.raises(ValueError, match="max_train_steps must be >= 0"):
        TrainingConfig.from_args(["--model", "vqgan", "--max_train_steps", "-1"])
    with pytest.raises(ValueError, match="continuous VAE from scratch needs training"):
        TrainingConfig.from_args(["--model", "vae", "--max_train_steps", "0"])


def test_seeded_data_initialize_gives_a_lora_row_and_its_lora_free_twin_one_codebook():
    """The ladder's +LoRA row must differ from its LoRA-free twin by LoRA alone: LoRA draws random numbers
    after the quantizer is built, and a seeded data initialisation does not see them."""
    from _helpers_coda import images as tiny_images
    from _helpers_coda import tiny_vae

    from coda_hf.models import CodaVQModel
    from coda_hf.training.models import data_initialize

    quantizer = {"name": "multiscale", "scales": [1, 2, 4], "quantizer": "attention",
                 "quantizer_kwargs": {"codebook_size": 16, "init": "data", "init_kmeans_iters": 2}}  # fmt: skip
    pixels = tiny_images(batch=4, size=16)
    states = {}
    for seed in (0, None):
        for lora in (0, 2):
            torch.manual_seed(0)
            model = CodaVQModel.from_vae(tiny_vae(), quantizer=quantizer,
                                         lora={"encoder": {"rank": 0}, "decoder": {"rank": lora}})  # fmt: skip
            used = data_initialize(model, iter([{"pixel_values": pixels[:2]}, {"pixel_values": pixels[2:]}]), 3, seed=seed)
            assert used == 3
            states[seed, lora] = model.quantizer.state_dict()
    for key, value in states[0, 0].items():
        torch.testing.assert_close(states[0, 2][key], value, rtol=0, atol=0, msg=key)
    # without a seed the draw follows the global stream, which LoRA moved
    assert not torch.equal(states[None, 0]["quantizers.0.embedding"], states[None, 2]["quantizers.0.embedding"])


def test_parameter_groups():
    from coda_hf.training.optim import build_adamw, parameter_groups

    model = torch.nn.Module()
    model.quantizer = torch.nn.Linear(2, 2)
    model.head = torch.nn.Linear(2, 2)
    groups = parameter_groups(model, 1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.quantizer.parameters()}
    assert len(parameter_groups(model, 1e-3)) == 1  # None: one group at the base rate
    model.head.requires_grad_(False)  # an empty group is left out
    assert [g["lr"] for g in parameter_groups(model, 1e-3, 1e-5)] == [1e-5]
    opt = build_adamw(parameter_groups(model, 1e-3, 1e-5), 1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-5]
    with pytest.raises(ValueError, match="needs a model with a quantizer"):
        parameter_groups(torch.nn.Linear(2, 2), 1e-3, 1e-5)


# ------------------------------------------------------------------------------------ non-finite losses
def test_nonfinite_loss_skips_the_update_and_unreadable_images_are_counted(tmp_path, caplog, inject_nonfinite):
    data = tmp_path / "images"
    write_images(data, 6, bad=2)
    out = tmp_path / "nan1"
    # 4 steps + 1 skipped update = 5 batches of 2 > 6 readable images: the first pass over the folder
    # (both broken files) is complete; the second may meet them again.
    inject_nonfinite({2})
    with caplog.at_level(logging.WARNING, logger="coda_hf.training.data"):
        result = main(base_args(data, out, tmp_path, steps=4, model="vae", model_kwargs=TINY_VAE,
                                max_nonfinite_steps=2))  # fmt: skip
    assert result.global_step == 4 and result.skipped_nonfinite_steps == 1
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert {m.split()[3].rstrip(":") for m in warned} == {str(data / "broken0.png"), str(data / "broken1.png")}
    # Every skip is counted once (with num_workers 0 a row is read only when a batch needs it).
    assert result.skipped_images == len(warned) >= 2 and _summary(out)["skipped_images"] == len(warned)
    assert all(torch.isfinite(v).all() for v in load_weights(out).values())


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_image_stream_counts_every_unreadable_row_once(tmp_path, batch_size):
    from coda_hf.training.data import ImageStream, build_transform

    rows = [{"image": {"path": str(p), "bytes": None}} for p in write_images(tmp_path / "s", 5)]
    broken = [{"image": {"path": None, "bytes": b"junk"}}] * 3
    # Unreadable rows first, in the middle and last (after the final, partial, dropped batch).
    source = broken[:1] + rows[:2] + broken[1:2] + rows[2:] + broken[2:]
    trailing = torch.zeros(1, dtype=torch.long)
    stream = ImageStream(source, "image", build_transform(TrainingConfig(model="vae", resolution=16)),
                         batch_size=batch_size, seed=0, epoch=0, rank=0, trailing_bad=trailing)  # fmt: skip
    batches = list(stream)
    assert len(batches) == 5 // batch_size and all(b["pixel_values"].shape == (batch_size, 3, 16, 16) for b in batches)
    assert sum(b["bad"] for b in batches) + int(trailing.sum()) == 3
    assert batches[-1]["position"] == max(i + 1 for i, r in enumerate(source) if r in rows[: len(batches) * batch_size])


def test_nonfinite_losses_in_a_row_stop_with_last_checkpoint_intact(tmp_path, images, inject_nonfinite, monkeypatch):
    out = tmp_path / "nan2"
    argv = base_args(images, out, tmp_path, steps=6, model="vae", model_kwargs=TINY_VAE, checkpointing_steps=1,
                     max_nonfinite_steps=3)  # fmt: skip
    inject_nonfinite({3, 4, 5})
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite .* in a row.*checkpoint-2 is intact"):
        main(argv)
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]
    assert not list(out.glob(".checkpoint-*"))
    state = json.loads((out / "checkpoint-2" / "training_state_rank0.json").read_text())
    assert state["global_step"] == 2
    weights = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    # The run can go on from it (without the injected NaNs).
    AcceleratorState._reset_state(reset_partial_state=True)
    result = main(base_args(images, out, tmp_path, steps=3, model="vae", model_kwargs=TINY_VAE,
                            resume_from_checkpoint="latest"))  # fmt: skip
    assert result.global_step == 3


# ------------------------------------------------------------------------------------ data sources
def _parquet_shards(tmp_path, n=8, shards=2):
    import datasets
    from PIL import Image

    from coda_hf.data.shards import encode_png, write_parquet_shards

    paths = write_images(tmp_path / "png", n)
    folder = tmp_path / "shards"
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    write_parquet_shards({"image": [encode_png(Image.open(p)) for p in paths], "label": list(range(n))},
                         feats, folder, "train", shards)  # fmt: skip
    return folder


@pytest.mark.parametrize("how", ["train_data_dir", "dataset_name_streaming"])
def test_parquet_shards_and_streamed_datasets(tmp_path, how, monkeypatch):
    import datasets

    # datasets sleeps 5 s when a parquet stream is abandoned (apache/arrow#45214 workaround): not needed here.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder = _parquet_shards(tmp_path)
    out = tmp_path / how
    if how == "train_data_dir":
        argv = base_args(folder, out, tmp_path, steps=2, model="vae", model_kwargs=TINY_VAE)
    else:
        argv = base_args(folder, out, tmp_path, steps=2, model="vae", model_kwargs=TINY_VAE)
        i = argv.index("--train_data_dir")
        argv[i] = "--dataset_name"
        argv += ["--streaming", "--shuffle_buffer_size", "4"]
    result = main(argv)
    assert result.global_step == 2 and result.skipped_images == 0


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        main(base_args(tmp_path / "nowhere", tmp_path / "o", tmp_path, model="vae", model_kwargs=TINY_VAE))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        main(base_args(empty, tmp_path / "o", tmp_path, model="vae", model_kwargs=TINY_VAE))


def test_too_few_images_for_a_batch_is_a_clear_error(tmp_path):
    data = tmp_path / "few"
    write_images(data, 1, bad=1)
    with pytest.raises(RuntimeError, match="no full batch"):
        main(base_args(data, tmp_path / "o", tmp_path, model="vae", model_kwargs=TINY_VAE))


# ------------------------------------------------------------------------------------ precision, checkpoints
def test_bf16_mixed_precision_on_cpu(tmp_path, images):
    result = main(base_args(images, tmp_path / "bf16", tmp_path, steps=2, model="vae", model_kwargs=TINY_VAE,
                            mixed_precision="bf16"))  # fmt: skip
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.last_logs["loss/total"]))


def test_checkpoint_resolution_and_cleanup(tmp_path):
    out = tmp_path / "run"
    assert resolve_checkpoint(out, "latest") is None
    for step in (2, 10):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "training_state_rank0.json").write_text("{}")
    (out / ".checkpoint-11.tmp").mkdir()  # a save killed midway
    (out / ".checkpoint-2.old").mkdir()  # a swap killed midway, the complete copy exists
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-10"
    assert resolve_checkpoint(out, "checkpoint-2") == out / "checkpoint-2"
    with pytest.raises(FileNotFoundError, match="checkpoint-7"):
        resolve_checkpoint(out, "checkpoint-7")
    assert sorted(p.name for p in remove_incomplete(out)) == [".checkpoint-11.tmp", ".checkpoint-2.old"]
    assert sorted(os.listdir(out)) == ["checkpoint-10", "checkpoint-2"]


@pytest.mark.slow
def test_push_to_hub_after_training(tmp_path, images):
    from tools.hub_server import LocalHubServer

    token = "hf_train_test"
    with LocalHubServer(token=token) as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": token,
               "HF_HOME": str(tmp_path / "hf_home")}  # fmt: skip
        argv = base_args(images, tmp_path / "pushed", tmp_path, steps=2, model="vae", model_kwargs=TINY_VAE,
                         push_to_hub=True, hub_model_id="org/tiny-vae", hub_private=True,
                         checkpointing_steps=1)  # fmt: skip
        proc = run_script(argv, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.files("org/tiny-vae")
    assert {"config.json", "diffusion_pytorch_model.safetensors", "training_config.json", "README.md"} <= set(files)
    assert json.loads(files["training_config.json"])["hub_model_id"] == "org/tiny-vae"
    assert not [f for f in files if f.startswith(("checkpoint-", "logs/", "samples/"))]  # training debris stays local


def test_epochs_constant_schedule_and_disc_warmup(tmp_path, images):
    # No --max_train_steps: 6 images / batch 2 = 3 steps per epoch x 2 epochs.
    argv = base_args(images, tmp_path / "ep", tmp_path, model="vae", model_kwargs=TINY_VAE, lr_scheduler="constant",
                     learning_rate=2e-4, disc_learning_rate=1e-3, gan_weight=1.0, discriminator="patchgan",
                     discriminator_kwargs={"ndf": 8, "n_layers": 2}, disc_start=100, use_ema=True, ema_start_step=1,
                     tracker_project_name="my_project", num_train_epochs=2)  # fmt: skip
    argv.remove("--max_train_steps")
    argv.remove("2")
    result = main(argv)
    assert result.global_step == 6
    logs = result.last_logs
    assert logs["lr"] == 2e-4 and logs["data/epoch"] == 1
    # Before disc_start the adversarial terms are off and the discriminator is not trained.
    assert logs["loss/disc_factor"] == 0.0 and logs["loss/gan_weight"] == 0.0 and "disc/d_loss" not in logs
    assert (tmp_path / "ep" / "logs" / "my_project").is_dir()


def test_dataloader_workers_resume_needs_same_worker_count(tmp_path, images):
    out = tmp_path / "workers"
    common = dict(model="vae", model_kwargs=TINY_VAE, dataloader_num_workers=2, num_shards=2, checkpointing_steps=1)
    assert main(base_args(images, out, tmp_path, steps=2, **common)).global_step == 2
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(ValueError, match="dataloader_num_workers=2"):
        main(base_args(images, out, tmp_path, steps=3, **{**common, "dataloader_num_workers": 0},
                       resume_from_checkpoint="latest"))  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    result = main(base_args(images, out, tmp_path, steps=3, **common, resume_from_checkpoint="latest"))
    assert result.global_step == 3


def test_finetune_a_vae_from_a_pipeline_subfolder(tmp_path, images):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "pipe" / "vae")
    out = tmp_path / "vae_ft"
    main(base_args(images, out, tmp_path, steps=2, model="vae", pretrained_model=str(tmp_path / "pipe"),
                   vae_subfolder="vae", learning_rate=0.0))  # fmt: skip
    before, after = load_weights(tmp_path / "pipe" / "vae"), load_weights(out)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_webdataset_tar_shards(tmp_path):
    import io
    import tarfile

    paths = write_images(tmp_path / "png", 8)
    shards = tmp_path / "wds"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"shard-{s}.tar", "w") as tar:
            for p in paths[s * 4 : (s + 1) * 4]:
                data = p.read_bytes()
                info = tarfile.TarInfo(f"{p.stem}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    result = main(base_args(shards, tmp_path / "out", tmp_path, steps=5, model="vae", model_kwargs=TINY_VAE))
    assert result.global_step == 5 and result.last_logs["data/epoch"] == 1  # 4 batches per epoch


@pytest.mark.parametrize("name", ["coda", "vqgan", "vae"])
def test_example_configs_parse(name):
    from _helpers_training import ROOT

    extra = ["--pretrained_vae", "some/vae"] if name == "coda" else []
    config = TrainingConfig.from_args(["--config", str(ROOT / "examples" / "configs" / f"{name}.yaml"), *extra])
    assert config.model == name
    assert (config.adam_beta1, config.adam_beta2) == (0.5, 0.9)


@pytest.mark.slow
def test_reproducibility_check_script_smoke(tmp_path):
    """benchmarks/check_training_reproducible.py, this tree against itself, 2 steps: identical, exit 0."""
    import subprocess
    import sys

    from _helpers_training import ROOT, script_env

    proc = subprocess.run([sys.executable, "benchmarks/check_training_reproducible.py", "--reference-tree", str(ROOT),
                           "--workdir", str(tmp_path / "w"), "--cases", "quantizers", "vae", "--steps", "2",
                           "--output", str(tmp_path / "r.json")], cwd=ROOT, env=script_env(), capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(results) == {"quantizers", "vae"} and all(r["identical"] and r["tensors"] > 0 for r in results.values())
