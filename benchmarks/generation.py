#!/usr/bin/env python
"""The generation half of CODA's claims: the same MaskGIT prior on each tokenizer's tokens, measured.

CODA (arXiv:2503.17760, Sec. 4.3) reports that a MaskGIT prior on CODA tokens generates better images than on
other tokenizers' tokens. This script trains one tokenizer of each kind at matched bits per image, the SAME
prior (size, steps, schedule, per-level positional embeddings) on each one's tokens with every seed of
``prior_seeds``, and measures every prior the same way:

    data             the images as parquet shards (``tools/prepare_data.py``)
    classifier       (class-conditional configs) a small CNN trained once on the train split; its test
                     accuracy is reported, and it scores generated images of each requested class
    tok-<name>       each tokenizer of ``tokenizers`` (``examples/train_tokenizer.py``, or a saved /
                     bundled model): ``coda`` on an off-the-shelf VAE, ``msvqgan`` (CODA's scales and
                     codebook, from scratch, dead-code restarts, 6N steps), ``vqgan`` (single scale, same bits)
    eval-tok-<name>  its reconstruction on the held-out split (``coda-hf evaluate``: PSNR, FD-EffNet, bits)
    fd-reference     FD-EffNet statistics of the held-out images
    prior-<name>-s<seed>  ``examples/train_maskgit.py`` on the tokenizer's tokens of the train split
    gen-<name>-s<seed>    ``samples`` images at each of ``step_counts`` decoding steps: FD-EffNet against the
                     held-out images, class accuracy, seconds per image; the masked-token cross-entropy on
                     held-out tokens; a sample grid per step count
    report           results.json / results.md: mean +- std over the prior seeds

Configs: ``fmnist-cpu`` (class-conditional Fashion-MNIST, 32 px RGB; CODA adapts the bundled ``photos-vae``, a
VAE trained on wallpaper photos, i.e. off the shelf for this data), ``fmnist-cuda`` (the same tokenizers and
priors on a GPU, with 5,000 samples at 4, 8, 16 and 32 steps), ``gpu`` (the same at the paper's budgets, for
a lent GPU; never needed by tests), ``smoke`` (the 2-step wiring check of the tests). Every stage resumes;
rerun the same command after an interruption.

    python benchmarks/generation.py --workdir runs/generation --config fmnist-cpu
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (stage runner, training stages, the workdir lock)
from fair_plan import coda_quantizer, vq_quantizer  # noqa: E402  (the quantizer recipes of the fair comparison)
from reproduce import REPO, Stage, run_plan  # noqa: E402

from tools.prepare_data import DEFAULT_CACHE  # noqa: E402

logger = logging.getLogger("generation")

FASHION = {
    "data": "fashion-mnist", "tile_size": 32, "label_column": "label", "num_classes": 10, "eval_split": "test",
    "vae": "photos-vae", "batch_size": 32, "steps": 300, "vqgan_factor": 6, "cpu": True, "gan_weight": 0.0,
    "objective": {"l1_weight": 1.0, "perceptual_weight": 0.25}, "checkpointing_steps": 200,
    # CODA: 4 levels over the 8 x 8 latent (85 tokens) x 12 bits = 1,020 bits per image; the LoRA rate and the
    # attention settings are the photo experiments' validation choices (benchmarks/train_bundled.py)
    "scales": [1, 2, 4, 8], "codebook_size": 4096, "lora": {"encoder": {"rank": 0}, "decoder": {"rank": 8}},
    "lora_learning_rate": 3e-3, "attention_learning_rate": 0.0, "data_init_images": 1024,
    "attention": {"init": "data", "init_sharpness": 100.0, "entropy_weight": 0.0, "init_kmeans_iters": 5, "init_min_usage": 0.1},
    # the VQGANs: photos-vae's architecture from scratch; single scale f2: 16 x 16 tokens x 4 bits = 1,024 bits
    "widths": [32, 64, 64], "layers_per_block": 1, "latent_channels": 16, "norm_num_groups": 32,
    "learning_rate": 1e-3, "vq": {"restart_after": 20, "beta": 0.25}, "embed_dim": 16,
    "single_scale": {"widths": [32, 64], "codebook_size": 16},
    "prior": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
              "dropout": 0.1, "train_batch_size": 64, "max_train_steps": 1500, "learning_rate": 1e-3,
              "lr_warmup_steps": 100, "class_drop_prob": 0.1, "checkpointing_steps": 250, "validation_steps": 100000,
              "num_validation_images": 10, "max_train_samples": 20000, "tokenize_batch_size": 64},
    "prior_seeds": [0, 1], "samples": 2000, "step_counts": [8, 32], "guidance_scale": 1.0,
    "fd_reference_images": 10000, "masked_token_images": 2000, "eval_images": 2000,
    "classifier": {"epochs": 6, "batch_size": 128, "learning_rate": 1e-3},
    "tokenizers": ["coda", "msvqgan", "vqgan"],
}  # fmt: skip
CONFIGS: dict[str, dict] = {
    "fmnist-cpu": FASHION,
    # the same tokenizers and priors on a GPU, where sampling is cheap: more samples and the paper's step counts
    "fmnist-cuda": {**FASHION, "cpu": False, "samples": 5000, "step_counts": [4, 8, 16, 32]},
    "gpu": {**FASHION, "cpu": False, "batch_size": 128, "steps": 2000, "samples": 10000, "step_counts": [4, 8, 16, 32],
            "prior": {**FASHION["prior"], "hidden_size": 384, "num_hidden_layers": 8, "num_attention_heads": 6,
                      "intermediate_size": 1536, "train_batch_size": 256, "max_train_steps": 20000,
                      "max_train_samples": None, "checkpointing_steps": 1000},
            "prior_seeds": [0, 1, 2]},
    "smoke": {**FASHION, "batch_size": 2, "steps": 2, "vqgan_factor": 1, "checkpointing_steps": 1, "data_init_images": 4,
              "codebook_size": 16, "scales": [1, 2, 8], "attention": {"hidden_dim": 8}, "embed_dim": 4,
              "single_scale": {"widths": [32, 64], "codebook_size": 4}, "objective": {"l1_weight": 1.0, "perceptual_weight": 0.0},
              "prior": {**FASHION["prior"], "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": 32, "train_batch_size": 4, "max_train_steps": 2, "lr_warmup_steps": 0,
                        "checkpointing_steps": 1, "max_train_samples": 8, "tokenize_batch_size": 4},
              "samples": 10, "step_counts": [2, 4], "fd_reference_images": 10, "eval_images": 10, "masked_token_images": 4,
              "classifier": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_images": 16}, "data_limit": 20},
}  # fmt: skip


def bits_per_image(hw: dict, name: str) -> float:
    """Tokens x log2(codebook) of one image for tokenizer ``name`` (the matched-bits check of the report)."""
    import math

    latent = hw["tile_size"] // 2 ** (len(hw["widths"]) - 1)
    if name == "vqgan":
        side = hw["tile_size"] // 2 ** (len(hw["single_scale"]["widths"]) - 1)
        return side * side * math.log2(hw["single_scale"]["codebook_size"])
    tokens = sum(min(s, latent) ** 2 for s in hw["scales"])
    return tokens * math.log2(hw["codebook_size"])


def tokenizer_recipe(hw: dict, name: str) -> dict:
    """``train_tokenizer.py`` settings of tokenizer ``name`` (``coda``, ``msvqgan``, ``vqgan``)."""
    arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"],
            "norm_num_groups": hw["norm_num_groups"], "latent_channels": hw["latent_channels"], "embed_dim": hw["embed_dim"]}  # fmt: skip
    if name == "coda":
        import coda_hf

        return {"model": "coda", "pretrained_vae": str(coda_hf.bundled_model(hw["vae"])), "max_train_steps": hw["steps"],
                "quantizer": coda_quantizer(hw, hw["scales"], hw["codebook_size"]), "model_kwargs": {"lora": hw["lora"]},
                "learning_rate": hw["lora_learning_rate"], "quantizer_learning_rate": hw["attention_learning_rate"],
                "data_init_images": hw["data_init_images"]}  # fmt: skip
    steps = hw["vqgan_factor"] * hw["steps"]
    if name == "msvqgan":
        quantizer = vq_quantizer(hw["scales"], hw["codebook_size"], hw["vq"])
    elif name == "vqgan":
        quantizer = vq_quantizer(None, hw["single_scale"]["codebook_size"], hw["vq"])
        arch = {**arch, "block_out_channels": hw["single_scale"]["widths"]}
    else:
        raise ValueError(f"unknown tokenizer {name!r}; choose from coda, msvqgan, vqgan")
    return {"model": "vqgan", "max_train_steps": steps, "learning_rate": hw["learning_rate"], "quantizer": quantizer,
            "model_kwargs": arch}  # fmt: skip


def build_plan(work: Path, config: str, cache: Path, data: Path | None = None) -> list[Stage]:
    """The ordered stages (nothing is run); ``data``: already prepared shards (train / held-out splits with
    ``image`` and the config's label column) instead of the ``data`` stage."""
    import generation_stages as gs  # the python stages

    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; choose from {sorted(CONFIGS)}")
    hw = CONFIGS[config]
    shards = data or work / "data" / f"tiles{hw['tile_size']}"  # reproduce.py's training stages read ROOT/tiles<size>
    stages = [] if data else [_data_stage(shards, cache, hw)]
    if hw["num_classes"] > 1:
        stages.append(Stage("classifier", work / "classifier" / "metrics.json", [],
                            action=lambda: gs.train_classifier(shards, work / "classifier", hw)))  # fmt: skip
    for name in hw["tokenizers"]:
        stages.append(reproduce._train_stage(f"tok-{name}", work, hw, [sys.executable], shards.parent,
                                             {**tokenizer_recipe(hw, name), "seed": 0}))  # fmt: skip
    stages += [_evaluate_stage(work, name, shards, hw) for name in hw["tokenizers"]]
    stages.append(Stage("fd-reference", work / "generation" / "reference.safetensors", [],
                        action=lambda: gs.reference_statistics(shards, work / "generation", hw)))  # fmt: skip
    for name in hw["tokenizers"]:
        for seed in hw["prior_seeds"]:
            stages.append(_prior_stage(work, name, seed, shards, hw))
            run = f"{name}-s{seed}"
            stages.append(Stage(f"gen-{run}", work / "generation" / run / "metrics.json", [],
                                action=lambda run=run: gs.measure_prior(work, run, shards, hw)))  # fmt: skip
    stages.append(Stage("report", work / "report-complete.json", [], action=lambda: gs.write_report(work, hw)))
    return stages


def _data_stage(shards: Path, cache: Path, hw: dict) -> Stage:
    command = [sys.executable, str(REPO / "tools" / "prepare_data.py"), "prepare-fashion-mnist", "--out", str(shards),
               "--cache", str(cache), "--image-size", str(hw["tile_size"]), "--rgb"]  # fmt: skip
    if hw.get("data_limit"):
        command += ["--limit", str(hw["data_limit"])]
    return Stage("data", shards / "manifest.json", command)


def _evaluate_stage(work: Path, name: str, shards: Path, hw: dict) -> Stage:
    out = work / "eval" / f"tok-{name}"
    command = [sys.executable, "-m", "coda_hf.cli", "evaluate", "--model", str(work / "runs" / f"tok-{name}"),
               "--data", str(shards), "--split", hw["eval_split"], "--resolution", str(hw["tile_size"]),
               "--output-dir", str(out), "--no-progress", "--overwrite", "--num-images", str(hw["eval_images"]),
               "--batch-size", "64"] + (["--cpu"] if hw["cpu"] else [])  # fmt: skip
    return Stage(f"eval-tok-{name}", out / "metrics.json", command)


def _prior_stage(work: Path, name: str, seed: int, shards: Path, hw: dict) -> Stage:
    out = work / "runs" / f"prior-{name}-s{seed}"
    config = {
        "tokenizer": str(work / "runs" / f"tok-{name}"), "train_data_dir": str(shards), "output_dir": str(out),
        "label_column": hw["label_column"] if hw["num_classes"] > 1 else "none", "resolution": hw["tile_size"],
        "resume_from_checkpoint": "latest", "checkpoints_total_limit": 2, "seed": seed, "report_to": "tensorboard",
        "num_inference_steps": hw["step_counts"][0], "guidance_scale": hw["guidance_scale"], **hw["prior"],
    }  # fmt: skip
    config_file = work / "configs" / f"prior-{name}-s{seed}.yaml"
    command = [sys.executable, str(REPO / "examples" / "train_maskgit.py"), "--config", str(config_file)]
    return Stage(f"prior-{name}-s{seed}", out / "pipeline" / "model_index.json", command, config_file, config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, help="where data, runs, generations and results go")
    p.add_argument("--config", choices=sorted(CONFIGS), default="fmnist-cpu")
    p.add_argument("--cache", default=None, help="Debian package cache (default: tools/prepare_data.py's)")
    p.add_argument("--data", default=None,
                   help="already prepared shards (a folder named tiles<size>, e.g. from tools/prepare_data.py "
                        "prepare-fashion-mnist --out DIR/tiles32 --image-size 32 --rgb)")  # fmt: skip
    p.add_argument("--force", nargs="*", default=[], help="re-run these stages (names or shell patterns)")
    p.add_argument("--only", nargs="*", default=None, help="run only these stages, in plan order (names or patterns)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.workdir).resolve()
    data = Path(args.data).resolve() if args.data else None
    if data is not None and data.name != f"tiles{CONFIGS[args.config]['tile_size']}":
        p.error(f"--data must be a folder named tiles{CONFIGS[args.config]['tile_size']} (the training stages' layout); got {data}")
    stages = build_plan(work, args.config, Path(os.path.expanduser(args.cache or DEFAULT_CACHE)).resolve(), data)
    stages, force = reproduce.select_stages(p, stages, args.force, args.only)
    try:
        run_plan(stages, work, dry_run=args.dry_run, force=force)
    except subprocess.CalledProcessError as e:
        logger.error("stage command failed (exit %s): %s", e.returncode, " ".join(map(str, e.cmd)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
