"""Two CPU processes (gloo) launched by ``accelerate launch`` train ONE model on DISJOINT data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from _helpers_training import ROOT, SCRIPT, TINY_VAE, base_args, script_env, write_images
from diffusers import AutoencoderKL


def _model_args(kind: str, tmp_path) -> dict:
    if kind == "vae":
        return {"model": "vae", "model_kwargs": TINY_VAE}
    # CODA: frozen base VAE + LoRA + multi-scale attention quantizer under DDP (the adaptive GAN weight is
    # measured at the frozen decoder output conv).
    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "base_vae")
    quantizer = {"name": "multiscale", "dim": 4, "scales": [1, 2, 4, 16], "quantizer": "attention",
                 "quantizer_kwargs": {"dim": 4, "codebook_size": 16, "codebook_dim": 8, "hidden_dim": 8,
                                      "init": "data"}}  # fmt: skip  (rank 0's sampled codebook is broadcast)
    return {"model": "coda", "pretrained_vae": str(tmp_path / "base_vae"), "quantizer": quantizer,
            "model_kwargs": {"lora": {"rank": 2}}, "use_ema": True}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vae", "coda"])
def test_two_processes_train_one_model_on_disjoint_shards(tmp_path, kind):
    data = tmp_path / "images"
    paths = write_images(data, 16, bad=1)
    out = tmp_path / "out"
    # 16 images, 2 ranks x batch 2, 4 steps = exactly one pass over each rank's half (8 images).
    argv = base_args(
        data, out, tmp_path, steps=4, **_model_args(kind, tmp_path), log_sample_ids=True, num_shards=8,
        crop_scale_min=1.0, random_flip=False, gan_weight=0.5, discriminator="patchgan",
        discriminator_kwargs={"ndf": 8, "n_layers": 2, "norm": "group", "num_groups": 4}, report_to="none",
        checkpointing_steps=2,
    )  # fmt: skip
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    assert accelerate, "accelerate CLI not found"
    env = script_env()
    env["ACCELERATE_USE_CPU"] = "true"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29517 + (kind == "coda")), str(SCRIPT), *argv]  # fmt: skip
    # own session: on a timeout the launcher AND its worker processes are killed, none left behind
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        # A worker that left the launcher's process group (torch elastic can start workers in their own
        # session) may still hold the pipes: close them rather than wait for its EOF, so the test fails
        # after the timeout instead of hanging CI.
        proc.stdout.close()
        proc.stderr.close()
        proc.wait(timeout=30)
        raise
    assert proc.returncode == 0, stderr[-4000:]

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_step"] == 4
    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    # One model: every rank ends with bit-identical parameters and buffers.
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]
    # Disjoint data: each rank read its own shards; together they cover every readable image once.
    seen = [(out / "sample_ids" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert all(len(s) == 8 for s in seen), [len(s) for s in seen]
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == {str(p) for p in paths}
    # The unreadable file lies in exactly one rank's shards and is counted once.
    assert summary["skipped_images"] == 1
    assert (out / "checkpoint-4" / "training_state_rank1.json").is_file()


def test_release_distributed_destroys_only_a_group_the_run_created(tmp_path):
    import torch.distributed as dist

    from coda_hf.distributed import owns_no_process_group_yet, release_distributed

    class FakeAccelerator:
        freed = waited = 0

        def free_memory(self):
            self.freed += 1

        def wait_for_everyone(self):
            self.waited += 1

    assert owns_no_process_group_yet()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert not owns_no_process_group_yet()
        acc = FakeAccelerator()
        release_distributed(acc, owns_process_group=False)  # the caller's group: kept
        assert dist.is_initialized() and acc.freed == 1 and acc.waited == 0
        release_distributed(acc, owns_process_group=True)  # the run's own group: destroyed
        assert not dist.is_initialized() and acc.freed == 2 and acc.waited == 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
