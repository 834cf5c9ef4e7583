#!/usr/bin/env python
"""Check that two source trees train bit-identical weights: same seed, same data, one thread.

A refactor of the training code must not change what it trains. This script runs the same short
trainings with ``examples/train_tokenizer.py`` / ``examples/train_maskgit.py`` of a REFERENCE tree
(e.g. a ``git worktree`` of the commit before the change) and of the CANDIDATE tree (default: this
one), each under its own ``PYTHONPATH``, then compares every saved weight tensor bit for bit:

* ``quantizers``: every registered quantizer (and residual / multi-scale stacks), three training steps and
  an eval call: outputs, losses, statistics, input gradients and the final state, bit for bit;
* ``coda``: a frozen tiny VAE + decoder LoRA + multi-scale attention quantizer (data-initialised, its own
  learning rate), PatchGAN with the adaptive weight at the frozen output conv, gradient accumulation, EMA;
* ``vae``: a continuous KL-VAE from scratch with the EfficientNet perceptual loss and a delayed PatchGAN;
* ``vqgan``: a VQGAN with an EMA VQ codebook, dead-code restarts and the projected discriminator;
* ``maskgit``: a MaskGIT prior on the reference ``coda`` tokenizer's tokens (accumulation, EMA, dropout,
  class dropout, a sample grid mid-run; 3 batches of 3, 3, 2 images per epoch, so every second update
  has one micro-batch).

Every case checkpoints mid-run (a save must not disturb the run). Bit-identity holds only at the same
thread count and on the same machine (float summation order): the runs use ``OMP_NUM_THREADS=1``.

    python benchmarks/check_training_reproducible.py --reference-tree ../coda_hf-main --workdir /tmp/repro-check

Exit status 0 when every case matches, 1 otherwise; ``--output`` writes the comparison as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
CASES = ("quantizers", "coda", "vae", "vqgan", "maskgit")
# Every registered quantizer (and the stacks over each inner one): outputs, losses, statistics and input
# gradients in training mode, then the same batch in eval mode, with the default and the no-loss call.
QUANTIZER_SNIPPET = """
import sys, torch
from safetensors.torch import save_file
from coda_hf.quantizers import build_quantizer
specs = {
    "vq": {"name": "vq", "codebook_size": 32, "codebook_dim": 6, "restart_after": 2},
    "vq_ema_cos": {"name": "vq", "codebook_size": 32, "use_ema": True, "distance": "cosine"},
    "gumbel": {"name": "gumbel", "codebook_size": 32}, "fsq": {"name": "fsq", "levels": [5, 4, 3]},
    "lfq": {"name": "lfq", "codebook_size": 64}, "attention": {"name": "attention", "codebook_size": 32, "hidden_dim": 8},
    "attention_data": {"name": "attention", "codebook_size": 16, "init": "data", "init_kmeans_iters": 2},
    "residual_fsq": {"name": "residual", "num_levels": 3, "quantizer": "fsq", "quantizer_kwargs": {"levels": [4, 4]}},
    "multiscale_attn": {"name": "multiscale", "scales": [1, 2, 4, 8], "quantizer": "attention",
                        "quantizer_kwargs": {"codebook_size": 32, "init": "data"}},
}
out = {}
for key, spec in specs.items():
    spec = dict(spec)
    torch.manual_seed(0)
    q = build_quantizer(spec.pop("name"), dim=4, **spec)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    for step in range(3):  # training steps: codebook updates, restarts, data initialisation
        o = q.train()(z)
        (o.quantized.square().mean() + o.loss).backward()
    out[f"{key}/train_grad"] = z.grad
    out[f"{key}/train_quantized"] = o.quantized.detach()
    for name, v in o.losses.items():
        out[f"{key}/train_loss_{name}"] = v.detach().reshape(-1)
    for name, v in o.stats.items():
        out[f"{key}/train_stat_{name}"] = torch.as_tensor(v).detach().reshape(-1).float()
    with torch.no_grad():
        e = q.eval()(z)
    out[f"{key}/eval_quantized"] = e.quantized
    out[f"{key}/eval_indices"] = torch.cat([i.reshape(-1) for i in e.indices])
    for name, v in e.losses.items():
        out[f"{key}/eval_loss_{name}"] = v.reshape(-1)
    for name, v in e.stats.items():
        out[f"{key}/eval_stat_{name}"] = torch.as_tensor(v).reshape(-1).float()
    for name, v in q.state_dict().items():
        out[f"{key}/state_{name}"] = v
save_file({k: v.detach().clone().contiguous() for k, v in out.items()}, sys.argv[1])
"""
TINY_VAE = {
    "block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 8, "latent_channels": 4, "layers_per_block": 1,
}  # fmt: skip
PATCHGAN = {"ndf": 8, "n_layers": 2, "norm": "group", "num_groups": 4}


def write_inputs(inputs: Path) -> None:
    """8 random RGB PNGs in two class folders, and a random tiny AutoencoderKL (the CODA base).

    The images are 36 x 45 (W x H): resized to a 32 px shorter side, the longer one is exactly 40 px. Before
    the package had one image path, MaskGIT pre-tokenisation ROUNDED the longer side (``round``) where the
    one resize policy truncates it (``int``, torchvision's and transformers' rule), so sizes whose longer
    side is not an integer (e.g. 36 x 40 -> 32 x 35.6) get other pixels by design; this check compares
    trainers, not that change."""
    from diffusers import AutoencoderKL

    rng = np.random.default_rng(0)
    for i in range(8):
        folder = inputs / "images" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((45, 36, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")
    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(inputs / "base_vae")


def _flags(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return argv


def tokenizer_case(case: str, inputs: Path, out: Path, steps: int) -> list[str]:
    """``train_tokenizer.py`` flags of one case (understood by the old and the new option parser)."""
    common = {
        "train_data_dir": inputs / "images", "cache_dir": out.parent / "hf_cache", "output_dir": out,
        "resolution": 32, "train_batch_size": 2, "max_train_steps": steps, "learning_rate": 1e-3,
        "lr_warmup_steps": 5, "checkpointing_steps": max(1, steps // 3), "checkpoints_total_limit": 2,
        "image_logging_steps": 0, "logging_steps": 1, "report_to": "none", "seed": 0, "cpu": True,
    }  # fmt: skip
    if case == "coda":
        quantizer = {"name": "multiscale", "scales": [1, 2, 4, 16], "quantizer": "attention",
                     "quantizer_kwargs": {"codebook_size": 16, "codebook_dim": 8, "hidden_dim": 8, "init": "data"}}  # fmt: skip
        extra = {"model": "coda", "pretrained_vae": inputs / "base_vae", "quantizer": quantizer,
                 "model_kwargs": {"lora": {"decoder": {"rank": 2}, "encoder": {"rank": 0}}}, "data_init_images": 4,
                 "quantizer_learning_rate": 1e-4, "perceptual_weight": 0, "gan_weight": 0.5, "discriminator": "patchgan",
                 "discriminator_kwargs": PATCHGAN, "gradient_accumulation_steps": 2, "use_ema": True, "ema_decay": 0.9,
                 "crop_scale_min": 0.5}  # fmt: skip
    elif case == "vae":
        extra = {"model": "vae", "model_kwargs": TINY_VAE, "kl_beta": 1e-3, "perceptual_weight": 0.5,
                 "gan_weight": 0.5, "discriminator": "patchgan", "discriminator_kwargs": PATCHGAN, "disc_start": 5,
                 "use_ema": True, "ema_decay": 0.9}  # fmt: skip
    else:
        vqgan = {"block_out_channels": [8, 16], "norm_num_groups": 8, "layers_per_block": 1, "latent_channels": 8,
                 "embed_dim": 8, "mid_block_add_attention": False}  # fmt: skip
        extra = {"model": "vqgan", "model_kwargs": vqgan, "perceptual_weight": 0, "gan_weight": 0.5,
                 "quantizer": {"name": "vq", "codebook_size": 16, "use_ema": True, "restart_after": 5},
                 "discriminator": "projected", "disc_start": 3}  # fmt: skip
    return [str(REPO_SCRIPTS["tokenizer"]), *_flags({**common, **extra})]


def maskgit_case(inputs: Path, tokenizer: Path, out: Path, steps: int) -> list[str]:
    """``train_maskgit.py`` flags (understood by the old and the new option parser)."""
    options = {
        "tokenizer": tokenizer, "train_data_dir": inputs / "images", "output_dir": out, "resolution": 32,
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "dropout": 0.1, "train_batch_size": 3,
        "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "lr_warmup_steps": 2, "max_train_steps": steps,
        "checkpointing_steps": 2, "checkpoints_total_limit": 2, "validation_steps": 3, "num_validation_images": 2,
        "num_inference_steps": 2, "ema_decay": 0.9, "class_drop_prob": 0.5, "report_to": "none", "seed": 0,
        "tokenize_batch_size": 4,
    }  # fmt: skip
    return [str(REPO_SCRIPTS["maskgit"]), *_flags(options)]


REPO_SCRIPTS = {"tokenizer": Path("examples/train_tokenizer.py"), "maskgit": Path("examples/train_maskgit.py")}


def run(tree: Path, argv: list[str], log: Path) -> float:
    """Run a script of ``tree`` with that tree's sources first on the path; returns the wall time."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *argv], cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} of {tree} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def saved_weights(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final model files (``*.safetensors`` at the top, in ``prior/`` and ``pipeline/``)."""
    if out.suffix == ".safetensors":
        return load_file(str(out))
    tensors = {}
    for path in sorted(out.glob("*.safetensors")) + sorted(out.glob("prior/*.safetensors")) + sorted(
        out.glob("pipeline/*/*.safetensors")
    ):
        for name, tensor in load_file(str(path)).items():
            tensors[f"{path.relative_to(out)}:{name}"] = tensor
    if not tensors:
        raise FileNotFoundError(f"no saved weights under {out}")
    return tensors


def compare(reference: Path, candidate: Path) -> dict:
    """Bitwise comparison of two runs' saved weights."""
    want, got = saved_weights(reference), saved_weights(candidate)
    differing = [k for k in want if k not in got or want[k].dtype != got[k].dtype or not torch.equal(want[k], got[k])]
    max_diff = max(
        ((want[k].float() - got[k].float()).abs().max().item() for k in differing if k in got and want[k].shape == got[k].shape),
        default=0.0,
    )
    return {"tensors": len(want), "differing": len(differing) + len(set(got) - set(want)), "max_abs_diff": max_diff,
            "identical": not differing and set(got) == set(want), "examples": differing[:5]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--reference-tree", required=True, help="root of the reference source tree (has src/ and examples/)")
    p.add_argument("--candidate-tree", default=str(REPO), help="root of the tree to check")
    p.add_argument("--workdir", required=True, help="inputs, runs and logs go here")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which trainings to compare")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps of the tokenizer cases")
    p.add_argument("--maskgit-steps", type=int, default=6, help="optimiser steps of the MaskGIT case")
    p.add_argument("--reuse-reference", action="store_true", help="keep reference runs whose output already exists")
    p.add_argument("--output", default=None, help="also write the comparison as JSON here")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    inputs = work / "inputs"
    if not (inputs / "base_vae").is_dir():
        write_inputs(inputs)
    trees = {"reference": Path(args.reference_tree).resolve(), "candidate": Path(args.candidate_tree).resolve()}
    results, times = {}, {}
    cases = [c for c in CASES if c in args.cases]
    if "maskgit" in cases and "coda" not in cases and not (work / "reference" / "coda").is_dir():
        p.error("the maskgit case trains on the reference coda tokenizer: include the coda case (once)")
    for label, tree in trees.items():
        for case in cases:
            out = work / label / case
            if case == "quantizers":
                out = out.with_suffix(".safetensors")
                out.parent.mkdir(parents=True, exist_ok=True)
                times[f"{label}/{case}"] = round(run(tree, ["-c", QUANTIZER_SNIPPET, str(out)], work / "logs" / f"{label}-{case}.log"), 1)
                continue
            done = (out / "pipeline").is_dir() if case == "maskgit" else (out / "training_summary.json").is_file()
            if label == "reference" and args.reuse_reference and done:
                continue
            if case == "maskgit":
                command = maskgit_case(inputs, work / "reference" / "coda", out, args.maskgit_steps)
            else:
                command = tokenizer_case(case, inputs, out, args.steps)
            if out.exists():
                import shutil

                shutil.rmtree(out)
            times[f"{label}/{case}"] = round(run(tree, command, work / "logs" / f"{label}-{case}.log"), 1)
    for case in cases:
        name = f"{case}.safetensors" if case == "quantizers" else case
        results[case] = compare(work / "reference" / name, work / "candidate" / name)
    print("| case | tensors | differing | max abs diff | bit-identical |\n|---|---|---|---|---|")
    for case, r in results.items():
        print(f"| {case} | {r['tensors']} | {r['differing']} | {r['max_abs_diff']:.3g} | {'yes' if r['identical'] else 'NO'} |")
    print(f"torch threads 1, torch {torch.__version__}; wall seconds: {times}")
    if args.output:
        Path(args.output).write_text(json.dumps({"results": results, "wall_s": times}, indent=2) + "\n")
    return 0 if all(r["identical"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
