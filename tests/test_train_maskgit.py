"""2-step smoke test of examples/train_maskgit.py: pre-tokenize (cached), train, checkpoint, resume, save."""

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from _helpers_maskgit import TinyMultiScaleTokenizer, tiny_coda_tokenizer, tiny_vqgan_tokenizer
from accelerate.state import AcceleratorState

from coda_hf.image_io import load_pixel_values
from coda_hf.maskgit import MaskGitTransformer
from coda_hf.pipelines.maskgit import CodaMaskGitPipeline
from coda_hf.training.maskgit_data import pretokenize_dataset, token_cache_path
from coda_hf.training.maskgit_trainer import MaskGitTrainingConfig, latest_checkpoint, load_tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_maskgit.py"
TOKENIZER_CLASS = "_helpers_maskgit:TinyMultiScaleTokenizer"


def _script_main():
    spec = importlib.util.spec_from_file_location("train_maskgit_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def fresh_accelerate_state():
    """In-process runs with different Accelerator settings need a clean singleton (and leave one behind)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield AcceleratorState._reset_state
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(4):
            arr = rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)
            PIL.Image.fromarray(arr).save(tmp_path / "images" / label / f"{i}.png")
    return tmp_path / "images"


@pytest.fixture
def tokenizer_dir(tmp_path):
    # The real CodaVQModel: the trainer finds its class by the name its config records.
    tiny_coda_tokenizer().save_pretrained(tmp_path / "tokenizer")
    return tmp_path / "tokenizer"


def test_pretokenisation_transform_resizes_and_crops():
    im = PIL.Image.fromarray(np.full((20, 40, 3), 255, np.uint8))
    x = load_pixel_values(im, 32)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))


def test_pretokenize_is_cached_and_keyed_by_tokenizer(tmp_path, image_folder):
    import datasets

    ds = datasets.load_dataset("imagefolder", data_dir=str(image_folder), split="train")
    tok = TinyMultiScaleTokenizer().eval()
    tokens = pretokenize_dataset(ds, tok, tmp_path / "cache", 32, batch_size=3)
    assert len(tokens) == 8 and len(tokens[0]["token_ids"]) == 21
    assert sorted(set(tokens["class_labels"])) == [0, 1]
    ref = tok.encode(torch.stack([load_pixel_values(ds[5]["image"], 32)])).token_ids[0].tolist()
    assert tokens[5]["token_ids"] == ref
    path = token_cache_path(tmp_path / "cache", tok, ds, 32, "image", "label")
    assert path.is_dir()
    # Second call loads the cache: encode is never called.
    tok.encode = None
    again = pretokenize_dataset(ds, tok, tmp_path / "cache", 32)
    assert again["token_ids"] == tokens["token_ids"]
    # Other weights -> other cache.
    other = TinyMultiScaleTokenizer().eval()
    assert token_cache_path(tmp_path / "cache", other, ds, 32, "image", "label") != path
    unlabelled = pretokenize_dataset(ds, other, tmp_path / "cache", 32, label_column=None)
    assert set(unlabelled["class_labels"]) == {0}
    with pytest.raises(ValueError, match="column 'caption'"):
        pretokenize_dataset(ds, other, tmp_path / "cache", 32, label_column="caption")


def test_load_tokenizer(tokenizer_dir, tmp_path):
    from coda_hf.models import CodaVQModel, VQGANModel

    tok = load_tokenizer(str(tokenizer_dir))
    assert isinstance(tok, CodaVQModel) and tok.level_shapes(32, 32) == [(1, 1), (2, 2), (4, 4)]
    tiny_vqgan_tokenizer(scales=(4,)).save_pretrained(tmp_path / "vqgan")
    assert isinstance(load_tokenizer(str(tmp_path / "vqgan")), VQGANModel)
    TinyMultiScaleTokenizer().save_pretrained(tmp_path / "standin")
    assert isinstance(load_tokenizer(str(tmp_path / "standin"), TOKENIZER_CLASS), TinyMultiScaleTokenizer)
    with pytest.raises(ValueError, match="tokenizer_class"):
        load_tokenizer(str(tmp_path / "standin"))  # its config names no coda_hf.models class
    with pytest.raises(ValueError, match="module.path:ClassName"):
        load_tokenizer(str(tmp_path / "standin"), "no_colon")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_tokenizer(str(tmp_path))


def test_config_validation():
    with pytest.raises(ValueError, match="exactly one"):
        MaskGitTrainingConfig(tokenizer="t", output_dir="o")
    assert (
        MaskGitTrainingConfig(
            tokenizer="t", output_dir="o", train_data_dir="d", label_column="none"
        ).label_column
        is None
    )


def test_train_maskgit_two_steps_then_resume(
    tmp_path, image_folder, tokenizer_dir, fresh_accelerate_state, caplog
):
    caplog.set_level(logging.INFO, logger="coda_hf.training.maskgit_trainer")
    caplog.set_level(logging.INFO, logger="coda_hf.training.checkpointing")
    out = tmp_path / "run"
    common = [
        "--tokenizer", str(tokenizer_dir),
        "--train_data_dir", str(image_folder), "--resolution", "32", "--output_dir", str(out),
        "--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--dropout", "0.0",
        "--intermediate_size", "24", "--train_batch_size", "2", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-3",
        "--lr_warmup_steps", "1", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
        "--validation_steps", "2", "--num_validation_images", "3", "--num_inference_steps", "2",
        "--guidance_scale", "1.5", "--logging_steps", "1", "--ema_decay", "0.9", "--mask_schedule", "linear",
        "--class_drop_prob", "0.5", "--tokenize_batch_size", "3", "--seed", "1", "--adam_beta1", "0.8",
        "--adam_beta2", "0.95", "--weight_decay", "0.01", "--max_grad_norm", "0.5", "--image_column", "image",
        "--dataset_split", "train",
    ]  # fmt: skip
    main = _script_main()
    assert main(common + ["--max_train_steps", "2"]) == 0

    assert latest_checkpoint(out).name == "checkpoint-2" and (out / "checkpoint-1").is_dir()
    assert (out / "samples" / "step-0000002.png").is_file()
    assert list((out / "logs").rglob("events.out.tfevents*"))
    caches = list((out / "token_cache").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("tokens-")
    prior = MaskGitTransformer.from_pretrained(out / "prior")
    assert prior.config.level_shapes == [[1, 1], [2, 2], [4, 4]] and prior.config.num_classes == 2
    assert prior.config.hidden_size == 16 and prior.config.codebook_size == 16
    assert prior.config.intermediate_size == 24  # --intermediate_size (default 4 x hidden_size)
    saved_settings = json.loads((out / "pipeline" / "training_config.json").read_text())
    assert saved_settings["mask_schedule"] == "linear" and saved_settings["max_train_steps"] == 2
    assert "mask_schedule" not in json.loads((out / "prior" / "config.json").read_text())
    pipe = CodaMaskGitPipeline.from_pretrained(out / "pipeline")
    assert pipe.scheduler.config.mask_schedule == "linear"
    pipe.set_progress_bar_config(disable=True)
    assert pipe(class_labels=[1], num_inference_steps=2, output_type="pil").images[0].size == (32, 32)
    cache_mtime = caches[0].stat().st_mtime_ns

    # Resume mid-epoch (8 images / batch 2 = 4 steps per epoch) for one more step: the token cache is
    # reused, the data loader skips the 2 batches already seen, the checkpoint limit prunes.
    assert main(common + ["--max_train_steps", "3", "--resume_from_checkpoint", "latest"]) == 0
    assert "checkpoint-2 at step 2 (epoch 0, skipping 2 batches)" in caplog.text
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert caches[0].stat().st_mtime_ns == cache_mtime and len(list((out / "token_cache").iterdir())) == 1
    resumed = MaskGitTransformer.from_pretrained(out / "prior")
    assert not all(
        torch.equal(a, b) for a, b in zip(prior.state_dict().values(), resumed.state_dict().values())
    )
    assert (
        json.loads((out / "pipeline" / "model_index.json").read_text())["_class_name"]
        == "CodaMaskGitPipeline"
    )

    # Unconditional, no EMA, no tracker, a subset of the data and a shared token cache elsewhere.
    out2 = tmp_path / "run2"
    args = common + [
        "--num_train_epochs", "1", "--use_ema", "false", "--label_column", "none", "--report_to", "none",
        "--max_train_samples", "5", "--token_cache_dir", str(out / "token_cache"), "--num_classes", "3",
        "--gradient_accumulation_steps", "2", "--train_batch_size", "4", "--mixed_precision", "bf16", "--dataset_name", str(image_folder),
    ]  # fmt: skip
    fresh_accelerate_state(reset_partial_state=True)  # mixed precision changes the accelerate state
    i = args.index("--train_data_dir")
    del args[i : i + 2]
    args[args.index("--output_dir") + 1] = str(out2)
    assert main(args) == 0
    assert len(list((out / "token_cache").iterdir())) == 2 and not (out2 / "logs").exists()
    assert latest_checkpoint(out2).name == "checkpoint-1"  # 5 images, batch 4, accumulation 2: one update
    assert MaskGitTransformer.from_pretrained(out2 / "prior").config.num_classes == 3


# The script run by the SIGKILL test: examples/train_maskgit.py with a pause after each checkpoint, so that the
# test can kill it between two saves (the pause changes timing only, never the numbers).
_PAUSED_SCRIPT = """
import os, runpy, sys, time
from coda_hf.training.trainer import Trainer
save = Trainer.save_checkpoint
def save_then_pause(self):
    save(self)
    time.sleep(float(os.environ.get("PAUSE_AFTER_CHECKPOINT", "0")))
Trainer.save_checkpoint = save_then_pause
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, image_folder, tokenizer_dir):
    """Killed (SIGKILL) between checkpoints and resumed with ``latest``, the prior ends bit-identical to an
    uninterrupted run: the epoch's shuffle, the batches already seen, dropout and masking all resume.
    8 images in batches of 3 (3, 3, 2) with accumulation 2: every second update has one micro-batch."""
    import signal
    import subprocess
    import sys
    import time

    from _helpers_training import script_env
    from safetensors.torch import load_file

    def argv(out):
        return [sys.executable, "-c", _PAUSED_SCRIPT, str(SCRIPT), "--tokenizer", str(tokenizer_dir), "--train_data_dir",
                str(image_folder), "--resolution", "32", "--output_dir", str(out), "--hidden_size", "16",
                "--num_hidden_layers", "1", "--num_attention_heads", "2", "--dropout", "0.1", "--train_batch_size", "3",
                "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3", "--lr_warmup_steps", "2",
                "--max_train_steps", "9", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
                "--validation_steps", "100", "--report_to", "none", "--ema_decay", "0.9", "--class_drop_prob", "0.5",
                "--token_cache_dir", str(tmp_path / "tokens")]  # fmt: skip

    env = {**script_env(), "PYTHONPATH": f"{Path(__file__).parent}:{script_env()['PYTHONPATH']}"}
    ref = subprocess.run(argv(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(argv(out), env={**env, "PAUSE_AFTER_CHECKPOINT": "2"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoint-5").is_dir() and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    # Step 5 ends in the middle of the third epoch (2 updates per epoch): the resumed run re-draws that
    # epoch's order and skips the batches it already trained on.
    assert killed_at == 5 and not (out / "prior").exists()
    resumed = subprocess.run([*argv(out), "--resume_from_checkpoint", "latest"], env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {out / f'checkpoint-{killed_at}'}" in resumed.stderr
    want = load_file(str(tmp_path / "ref" / "prior" / "model.safetensors"))
    got = load_file(str(out / "prior" / "model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
