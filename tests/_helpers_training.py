"""Shared fixtures of the training tests: tiny image folders, tiny models, the script's argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_tokenizer.py"

# A 2-level AutoencoderKL (downsample 2), 8/16 channels.
TINY_VAE = {
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "norm_num_groups": 8,
    "latent_channels": 4,
    "layers_per_block": 1,
}
TINY_VQGAN = {
    "block_out_channels": [8, 16],
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "latent_channels": 8,
    "embed_dim": 8,
    "mid_block_add_attention": False,
}


def write_images(folder: Path, n: int, size: int = 36, seed: int = 0, bad: int = 0) -> list[Path]:
    """``n`` random RGB PNGs (slightly non-square, so crops matter) plus ``bad`` unreadable ``.png`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        Image.fromarray((rng.random((size + 4, size, 3)) * 255).astype("uint8")).save(p)
        paths.append(p)
    for i in range(bad):
        (folder / f"broken{i}.png").write_bytes(b"this is not a png")
    return paths


def base_args(data_dir: Path, out_dir: Path, tmp: Path, steps: int = 2, **overrides) -> list[str]:
    """Flags of a tiny CPU run (perceptual loss and GAN off unless overridden)."""
    opts = {
        "train_data_dir": str(data_dir),
        "cache_dir": str(tmp / "hf_cache"),
        "output_dir": str(out_dir),
        "resolution": 32,
        "train_batch_size": 2,
        "max_train_steps": steps,
        "perceptual_weight": 0,
        "gan_weight": 0,
        "checkpointing_steps": 1000,
        "image_logging_steps": 0,
        "logging_steps": 1,
        "seed": 0,
        "cpu": True,
    }
    opts.update(overrides)
    argv = []
    for k, v in opts.items():
        argv += [f"--{k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
    return argv


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONPATH": str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")})  # fmt: skip
    return env


def run_script(argv: list[str], timeout: int = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], env={**script_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out
