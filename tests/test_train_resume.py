"""A run killed with SIGKILL and resumed with ``--resume_from_checkpoint latest`` ends with the same weights
as an uninterrupted run of the same length (tolerance: atol 1e-6, CPU, one thread, num_workers 0)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from _helpers_training import SCRIPT, TINY_VAE, base_args, load_weights, run_script, script_env, write_images

STEPS = 40


def _argv(data, out, tmp):
    # Random crops + flips, several epochs (8 images / batch 2 = 4 steps per epoch), GAN on: every source
    # of randomness (augmentation, posterior sampling, data order, DiffAugment-free PatchGAN) must resume.
    return base_args(
        data, out, tmp, steps=STEPS, model="vae", model_kwargs=TINY_VAE, checkpointing_steps=1,
        checkpoints_total_limit=2, crop_scale_min=0.5, gan_weight=0.5, discriminator="patchgan",
        discriminator_kwargs={"ndf": 8, "n_layers": 2}, adaptive_weight=False, learning_rate=1e-3,
        lr_warmup_steps=5, use_ema=True, ema_decay=0.9, report_to="none",
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    data = tmp_path / "images"
    write_images(data, 8)

    # Reference: uninterrupted run.
    ref = run_script(_argv(data, tmp_path / "ref", tmp_path))
    assert ref.returncode == 0, ref.stderr[-3000:]

    # Interrupted run: SIGKILL once a few checkpoints exist, mid-training.
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *_argv(data, out, tmp_path)], env=script_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-5").is_dir() and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; raise STEPS"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 5 <= killed_at < STEPS, killed_at
    assert not (out / "training_summary.json").exists()  # it really died mid-run

    resumed = run_script(_argv(data, out, tmp_path) + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["global_step"] == STEPS
    # checkpoints_total_limit=2 kept only the newest two, and no temporary save is left behind.
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == [
        f"checkpoint-{STEPS - 1}", f"checkpoint-{STEPS}"
    ]

    want, got = load_weights(tmp_path / "ref"), load_weights(out)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)
