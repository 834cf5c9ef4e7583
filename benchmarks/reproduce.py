#!/usr/bin/env python
"""Small-scale, offline reproduction of CODA's claims on real photos (orchestration only).

Claims (coda-paper.txt, Tables 1 and 2): adapting a pretrained CONTINUOUS VAE into a discrete tokenizer
reconstructs better than training a VQGAN from scratch with several times the budget, each step of the
CODA ladder (VQ -> + multi-scale residual -> + attention quantizer -> + LoRA) helps, the attention
quantizer uses the whole codebook, and CODA stays close to the continuous VAE.

No Hub download is possible here, so the "off-the-shelf VAE" is an AutoencoderKL trained first (stage 0),
on the ladder's train tiles or, with ``vae_sources`` (the ``cpu-latent16-offdomain`` config), on other
photos than those the ladder trains and is evaluated on, as the paper's VAE is. Every stage is a command
of this package, skipped when its output exists, so a killed run resumes (training stages also resume
inside from their latest checkpoint):

    data       tools/prepare_data.py prepare-photos              -> WORK/data/photos/manifest.json
    data-vae   the same, from ``vae_sources`` (off-the-shelf only) -> WORK/data/vae-photos/manifest.json
    vae        train_tokenizer.py --model vae (stage 0)         -> WORK/runs/vae/training_summary.json
    vae-stats  coda-hf latent-stats --write (shift / scale)      -> WORK/runs/vae/latent_stats.json
    vq         frozen VAE + single-level VQ, N steps             -> WORK/runs/vq/...
    msvq       frozen VAE + multi-scale residual VQ, N steps     -> WORK/runs/msvq/...
    msattn     frozen VAE + multi-scale attention quantizer, N   -> WORK/runs/msattn/...
    coda       msattn + LoRA on the VAE convs (CODA), N steps    -> WORK/runs/coda/...
    vqgan      VQGAN from scratch, same codebook, 6N steps       -> WORK/runs/vqgan/...
    eval-*     coda-hf evaluate on the held-out scenes           -> WORK/eval/<run>/metrics.json
    report     one table of every metrics.json + wall times      -> WORK/results.md, WORK/results.json

    python benchmarks/reproduce.py --workdir runs/repro --config cpu --dry-run        # print the plan
    python benchmarks/reproduce.py --workdir runs/repro --config cpu                  # 2-3 hours on 2 cores
    python benchmarks/reproduce.py --workdir runs/offdomain --config cpu-latent16-offdomain  # VAE on other photos
    python benchmarks/reproduce.py --workdir runs/repro --config gpu --launcher "accelerate launch"

Killing the orchestrator (SIGTERM, SIGINT, or SIGKILL on Linux) stops the running stage with it, and a
trainer refuses an output directory that a live trainer holds, so a restart never runs two trainers on one
run. ``--only STAGE ...`` runs a subset in plan order; ``--reuse vqgan=DIR`` takes a row from an earlier
report instead of re-running it (the report marks it); ``--override JSON`` replaces config keys for an
ablation in its own workdir (link ``data`` and ``runs/vae`` of the main one to share them). ``--jobs N``
runs up to N stages at once where the plan says what each stage needs (the fair plan): on a GPU, where
one small training leaves the card mostly idle,

    python benchmarks/reproduce.py --workdir runs/fair --config cpu-latent16-fair --override '{"cpu": false}' --jobs 12

On 2 cores the fair plan runs in parts into one workdir (``--only`` patterns; the last part's report covers
every part that has finished). ``--adopt RUN=DIR`` takes a model trained elsewhere with a training stage's
recipe (architecture checked, ``provenance.json`` kept, the report lists it): the bundled ``photos-vae`` is
the 4x stage-0 VAE, trained by this script's off-domain config at 9,600 steps on the same photos:

    python benchmarks/reproduce.py --workdir runs/fair --config cpu-latent16-fair --only data data-vae
    python benchmarks/reproduce.py --workdir runs/fair --config cpu-latent16-fair --jobs 2 --only '*1x*' report
    python benchmarks/reproduce.py --workdir runs/fair --config cpu-latent16-fair --jobs 2 --only '*4x*' report \
        --adopt vae-4x=src/coda_hf/bundled/models/photos-vae
    python benchmarks/reproduce.py --workdir runs/fair --config cpu-latent16-fair --jobs 2 --only '*vqgan*' report

Numbers in the report come only from the evaluate outputs and the measured stage times; nothing is
hard-coded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository's tools/ package (the photo builder; not installed)

from tools.data.photos import DEFAULT_SOURCES  # noqa: E402
from tools.prepare_data import DEFAULT_CACHE  # noqa: E402

logger = logging.getLogger("reproduce")

# Per-hardware settings. The VAE and the VQGAN share their widths, hence their downsampling factor
# (2 ** (len(widths) - 1)) and token grid. ``scales``: multi-scale levels for the latent side
# tile_size / factor. ``steps``: N, the budget of each ladder row; the VQGAN gets ``vqgan_factor * N``.
# ``objective``: loss weights of EVERY training stage (VAE, ladder, VQGAN), so the LoRA row adapts the
# decoder towards the objective the VAE was trained on. A pixel-heavy objective (L1 1.0, perceptual 0.25)
# keeps colours: with the tokenizer recipe (L1 0.2, perceptual 1.0) the 1,200-step VAE reconstructed
# desaturated tiles (18.0 dB PSNR), and decoder LoRA traded PSNR for FD-EffNet (BENCHMARKS.md).
# ``attention_learning_rate``: the attention rows' quantizer (``quantizer_learning_rate``; 0 keeps the
# k-means data initialisation, so the +LoRA row differs from its LoRA-free twin by LoRA alone).
# ``lora_learning_rate``: the +LoRA row's adapters (default ``learning_rate``): they fine-tune a decoder
# that the VAE's cosine schedule has already annealed, so they start lower than a from-scratch run. ``data_init_images``: the attention rows sample their codebook from the
# posterior means of this many training images (one batch of 16 left 4.5% of the codes unused on eval).
# ``vq``: extra VectorQuantizer kwargs of the VQ, multi-scale VQ and VQGAN rows (the paper's plain VQ: none;
# an ablation sets e.g. dead-code restarts, --override '{"vq": {"restart_after": 20}}').
# ``sources``: the photo sources of the ladder's train and eval tiles (null: every source of
# ``tools/prepare_data.py prepare-photos``). ``vae_sources``: where stage 0 trains instead (null: the same tiles as the
# ladder); set, it makes the VAE "off-the-shelf": trained on other photos, as the paper's is. ``eval_images``:
# the first N eval tiles (null: all of them).
CONFIGS: dict[str, dict] = {
    "smoke": {  # 2-step wiring check (tests); not a result
        "tile_size": 32, "batch_size": 2, "vae_steps": 2, "steps": 2, "vqgan_factor": 6, "eval_images": 4, "sources": None, "vae_sources": None,
        "widths": [8, 16], "layers_per_block": 1, "latent_channels": 4, "codebook_size": 16, "scales": [1, 2, 4, 16],
        "attention": {"hidden_dim": 8}, "lora": {"decoder": {"rank": 2}}, "learning_rate": 1e-3, "gan_weight": 0.0, "cpu": True, "vq": {},
        "attention_learning_rate": 1e-5, "data_init_images": 4, "checkpointing_steps": 1, "stats_images": 4, "norm_num_groups": 8,
        "objective": {"l1_weight": 1.0, "perceptual_weight": 0.0},
    },
    "cpu": {  # 2 cores, a few hours: 16x16x4 latents (f4), 8 levels (507 tokens), 4,096 codes at 64 px
        "tile_size": 64, "batch_size": 16, "vae_steps": 2400, "steps": 200, "vqgan_factor": 6, "eval_images": 972, "sources": None, "vae_sources": None,
        "widths": [32, 64, 64], "layers_per_block": 1, "latent_channels": 4, "codebook_size": 4096,
        "scales": [1, 2, 3, 4, 6, 8, 11, 16], "lora": {"encoder": {"rank": 0}, "decoder": {"rank": 8}},
        "attention": {"init": "data", "init_sharpness": 100.0, "entropy_weight": 0.0, "init_kmeans_iters": 5,
                      "init_min_usage": 0.1},
        "learning_rate": 1e-3, "lora_learning_rate": 1e-4, "attention_learning_rate": 0.0, "data_init_images": 1024,
        "gan_weight": 0.0, "cpu": True, "checkpointing_steps": 200, "vq": {}, "stats_images": 1024, "norm_num_groups": 32,
        "objective": {"l1_weight": 1.0, "perceptual_weight": 0.25},
    },
    "cpu-latent16": {  # CODA-MAR's latent grid and token layout (16x16x16 latents, 10 levels, 680 tokens); runs: benchmarks/results/cpu-latent16{,-run2}
        "tile_size": 64, "batch_size": 16, "vae_steps": 2400, "steps": 200, "vqgan_factor": 6, "eval_images": 972, "sources": None, "vae_sources": None,
        "widths": [32, 64, 64], "layers_per_block": 1, "latent_channels": 16, "codebook_size": 4096,
        "scales": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16], "lora": {"encoder": {"rank": 0}, "decoder": {"rank": 8}},
        "attention": {"init": "data", "init_sharpness": 100.0, "entropy_weight": 0.0, "init_kmeans_iters": 5,
                      "init_min_usage": 0.1},
        "learning_rate": 1e-3, "lora_learning_rate": 1e-4, "attention_learning_rate": 0.0, "data_init_images": 1024,
        "gan_weight": 0.0, "cpu": True, "checkpointing_steps": 200, "vq": {}, "stats_images": 1024, "norm_num_groups": 32,
        "objective": {"l1_weight": 1.0, "perceptual_weight": 0.25},
    },
    "gpu": {
        "tile_size": 128, "batch_size": 32, "vae_steps": 20000, "steps": 5000, "vqgan_factor": 6, "eval_images": 616, "sources": None, "vae_sources": None,
        "widths": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16, "codebook_size": 16384,
        "scales": [1, 2, 3, 4, 6, 9, 13, 16], "lora": {"encoder": {"rank": 0}, "decoder": {"rank": 32}},
        "attention": {"init": "data", "init_sharpness": 100.0, "entropy_weight": 0.0, "init_kmeans_iters": 5,
                      "init_min_usage": 0.1},
        "learning_rate": 5e-4, "lora_learning_rate": 5e-5, "attention_learning_rate": 0.0, "data_init_images": 2048, "gan_weight": 0.5, "cpu": False, "checkpointing_steps": 1000, "vq": {},
        "stats_images": 2048, "norm_num_groups": 32, "objective": {"l1_weight": 1.0, "perceptual_weight": 0.25},
    },
}
# The paper's situation: an off-the-shelf VAE, trained on other photos than the ones being tokenized. Stage 0
# sees only the wallpapers; the ladder and the VQGAN train and are evaluated on opencv-doc + scikit-image
# (no photo, and no source, in both). benchmarks/results/cpu-latent16-offdomain. Its LoRA rate stays the
# in-domain 1e-4 it ran with; off-domain, where the decoder has a domain gap to close, 1e-3 did better
# (+0.94 dB, -6.3 FD-EffNet: the ablation in BENCHMARKS.md, chosen after seeing the eval figures).
CONFIGS["cpu-latent16-offdomain"] = {
    **CONFIGS["cpu-latent16"], "eval_images": None, "sources": ["opencv-doc", "skimage"],
    "vae_sources": ["mate-backgrounds", "plasma-workspace-wallpapers"],
}

# At equal bits (benchmarks/fair_plan.py; BENCHMARKS.md, "At equal bits"): CODA (680 tokens x 12 bits = 1.99 bits
# per pixel) against a multi-scale VQGAN from scratch with its scales and codebook at 6N steps (hyperparameters
# screened on validation: ``vqgan_grid`` at ``vqgan_screen_steps``, the ``vqgan_finalists`` best at 6N), a
# single-scale f2 VQGAN with 256 codes (1024 tokens x 8 bits = 2.0 bpp), the frozen VAE's latent quantized
# per channel at 4 quantile bins (training-free, TokenBridge-style: 4,096 tokens x 2 bits = 2.0 bpp; variant
# among ``ptq_variants`` on validation) and the same with decoder LoRA; each CODA / quantile row on stage-0
# VAEs of ``vae_budgets`` steps, every main row with each of ``seeds``. The data gain a validation split
# (``validation_fraction`` of the scenes, taken from train; eval unchanged: the off-domain run's 322 tiles).
# Frontier points (one seed): ``coda_frontier`` / ``vqgan_frontier`` layouts, ``ptq_frontier_bins``.
MAR = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
CONFIGS["cpu-latent16-fair"] = {
    **CONFIGS["cpu-latent16-offdomain"], "plan": "fair", "validation_fraction": 0.15, "vae_budgets": {"1x": 2400, "4x": 9600},
    # LoRA rates: 3e-3 was the best of 1e-4 ... 3e-3 on validation, at the grid's edge, so 1e-2 joined and 3e-4 left
    # (between 1e-4 and 1e-3, both below 3e-3); 1e-2 then won on the 1x VAE for both LoRA rows, so 3e-2 joined
    # both grids; the quantile + LoRA row gets the same grid above 1e-4
    "seeds": [0, 1, 2], "lora_rates": [1e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "ptq_bins": 4, "ptq_variants": {"quantile": {"distribution": "empirical", "refine_iters": 0},
                                    "gaussian": {"distribution": "gaussian", "refine_iters": 0},
                                    "lloyd": {"distribution": "empirical", "refine_iters": 20}},
    "ptq_lora_rates": [1e-3, 3e-3, 1e-2, 3e-2], "ptq_frontier_bins": [2, 3, 6, 8],
    "coda_frontier": {"s5": {"scales": [1, 2, 4, 8, 16], "codebook_size": 4096},
                      "k256": {"scales": MAR, "codebook_size": 256}, "k1024": {"scales": MAR, "codebook_size": 1024},
                      "k16384": {"scales": MAR, "codebook_size": 16384}},
    "vqgan_base": {"learning_rate": 1e-3, "vq": {"restart_after": 20, "beta": 0.25}, "embed_dim": 16},
    "vqgan_grid": {"base": {}, "lr3e-4": {"learning_rate": 3e-4}, "lr3e-3": {"learning_rate": 3e-3},
                   "beta0.05": {"vq": {"beta": 0.05}}, "ema": {"vq": {"use_ema": True}},
                   "restart5": {"vq": {"restart_after": 5}}, "d256": {"embed_dim": 256}},
    "vqgan_screen_steps": 400, "vqgan_finalists": 2,
    "vqgan_frontier": {"s5": {"scales": [1, 2, 4, 8, 16], "codebook_size": 4096}, "k16384": {"scales": MAR, "codebook_size": 16384}},
    "single_scale": {"widths": [32, 64], "codebook_size": 256},
    # Levers on CODA's FD-EffNet (one seed, validation only; not in the main table): the chosen row's recipe with
    # a change of LoRA placement / rank, objective or budget (or two of them combined). "gan": the projected
    # discriminator on frozen EfficientNet-Lite0 features (the paper's is on DINO; none is available offline)
    "lever_vaes": ["4x"],
    "coda_levers": {"dec32": {"model_kwargs": {"lora": {"encoder": {"rank": 0}, "decoder": {"rank": 32}}}},
                    "enc8": {"model_kwargs": {"lora": {"encoder": {"rank": 8}, "decoder": {"rank": 8}}}},
                    "enc8-lr1e-3": {"model_kwargs": {"lora": {"encoder": {"rank": 8}, "decoder": {"rank": 8}}},
                                    "learning_rate": 1e-3},
                    "perc1": {"perceptual_weight": 1.0}, "perc3": {"perceptual_weight": 3.0}, "gan0.5": {"gan_weight": 0.5},
                    "perc3-gan0.5": {"perceptual_weight": 3.0, "gan_weight": 0.5},
                    "steps6N": {"max_train_steps": 1200},  # the from-scratch rows' budget
                    "perc3-steps6N": {"perceptual_weight": 3.0, "max_train_steps": 1200}},
}  # fmt: skip
CONFIGS["smoke-fair"] = {  # the fair plan's 2-step wiring check (tests; one VAE, one candidate per choice): not a result
    **CONFIGS["smoke"], "plan": "fair", "validation_fraction": 0.15, "vae_budgets": {"1x": 2}, "seeds": [0, 1],
    "lora_rates": [1e-3], "ptq_bins": 4, "ptq_variants": {"lloyd": {"refine_iters": 2}}, "ptq_lora_rates": [1e-3],
    "ptq_frontier_bins": [2], "coda_frontier": {"k8": {"scales": [1, 2, 4, 16], "codebook_size": 8}},
    "vqgan_base": {"learning_rate": 1e-3, "vq": {"restart_after": 1, "beta": 0.25}, "embed_dim": 4},
    "vqgan_grid": {"base": {}, "ema": {"vq": {"use_ema": True}}}, "vqgan_screen_steps": 1, "vqgan_finalists": 1,
    "vqgan_frontier": {"s2": {"scales": [1, 16], "codebook_size": 16}}, "single_scale": {"widths": [8], "codebook_size": 4},
    "lever_vaes": ["1x"], "coda_levers": {"l1": {"l1_weight": 0.5}, "lr": {"learning_rate": 1e-2}},
}  # fmt: skip

# The ladder of paper Table 1 on the frozen stage-0 VAE: (run name, quantizer, LoRA).
LADDER = ("vq", "msvq", "msattn", "coda")


@dataclass
class Stage:
    name: str
    done_marker: Path  # the stage is complete when this file exists
    command: list[str]
    config_file: Path | None = None  # YAML written before running (train stages)
    config: dict = field(default_factory=dict)
    action: Callable[[], None] | None = None  # a python stage (no command): a selection, the fair report
    make_config: Callable[[], dict] | None = None  # the config, known only when an earlier stage has chosen (run time)
    # The stages that must finish first (``--jobs``); None: every earlier stage of the plan (run in order)
    needs: tuple[str, ...] | None = None


def _quantizer(run: str, hw: dict) -> dict:
    k = hw["codebook_size"]
    vq = {"codebook_size": k, **hw["vq"]}  # VectorQuantizer kwargs of the vq, msvq and VQGAN rows
    if run == "vq":
        return {"name": "vq", **vq}
    if run == "msvq":
        return {"name": "multiscale", "scales": hw["scales"], "quantizer": "vq", "quantizer_kwargs": vq}
    # ``attention``: inner AttentionQuantizer kwargs of the attention rows. CPU/GPU use init="data" (the
    # argmax starts as nearest-neighbour search over values sampled from the first batch's level inputs)
    # and no entropy penalty; with the paper's recipe (aligned init, hidden 128, entropy 0.05) the 200-step
    # rows fell BELOW multi-scale VQ (BENCHMARKS.md, "What we learnt").
    kwargs = {"codebook_size": k, **hw["attention"]}
    return {"name": "multiscale", "scales": hw["scales"], "quantizer": "attention", "quantizer_kwargs": kwargs}


def _check_photo_sources(photos: Path, wanted: list[str], key: str) -> None:
    """An already prepared photo set (its stage is then skipped) must come from the sources the config names."""
    manifest = photos / "manifest.json"
    if not manifest.is_file():
        return
    prepared = json.loads(manifest.read_text()).get("config", {}).get("sources")
    if prepared is not None and sorted(prepared) != sorted(wanted):
        raise ValueError(f"{photos} was prepared from the sources {sorted(prepared)}, but the config's {key!r} "
                         f"asks for {sorted(wanted)}; use another --workdir (or --photos / --vae-photos)")


def _prepare_photos(name: str, photos: Path, cache_dir: Path, hw: dict, sources: list[str] | None) -> Stage:
    command = [sys.executable, str(REPO / "tools" / "prepare_data.py"), "prepare-photos", "--out", str(photos),
               "--cache", str(cache_dir),
               "--tile-sizes", str(hw["tile_size"]), "--seed", "0"]  # fmt: skip
    return Stage(name, photos / "manifest.json", command + (["--sources", *sources] if sources else []))


def _train_stage(name: str, work: Path, hw: dict, launcher: list[str], photos: Path, extra: dict) -> Stage:
    out = work / "runs" / name
    config = {
        "train_data_dir": str(photos / f"tiles{hw['tile_size']}"),
        "dataset_split": "train",
        "resolution": hw["tile_size"],
        "train_batch_size": hw["batch_size"],
        "learning_rate": hw["learning_rate"],
        "lr_warmup_steps": 0,
        **hw["objective"],
        "gan_weight": hw["gan_weight"],
        "output_dir": str(out),
        "checkpointing_steps": hw["checkpointing_steps"],
        "checkpoints_total_limit": 2,
        "resume_from_checkpoint": "latest",
        "image_logging_steps": 0,
        "cpu": hw["cpu"],
        "report_to": "tensorboard",
        "cache_dir": str(work / "hf_cache"),
        "seed": 0,
        **extra,
    }
    config_file = work / "configs" / f"{name}.yaml"
    command = [*launcher, str(REPO / "examples" / "train_tokenizer.py"), "--config", str(config_file)]
    return Stage(name, out / "training_summary.json", command, config_file, config)


def _vae_stages(work: Path, hw: dict, launcher: list[str], coda_hf: list[str], vae_photos: Path, name: str,
                steps: int) -> tuple[Stage, Stage]:  # fmt: skip
    """Stage 0, ``name``: the continuous AutoencoderKL trained ``steps`` steps on ``vae_photos``, then
    ``<name>-stats``: its latent shift / scale, measured on its own training photos and written into it."""
    arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"],
            "norm_num_groups": hw["norm_num_groups"]}  # fmt: skip
    vae_dir = work / "runs" / name
    train = _train_stage(name, work, hw, launcher, vae_photos, {
        "model": "vae", "max_train_steps": steps,
        "model_kwargs": {**arch, "latent_channels": hw["latent_channels"],
                         "down_block_types": ["DownEncoderBlock2D"] * len(hw["widths"]),
                         "up_block_types": ["UpDecoderBlock2D"] * len(hw["widths"])},
    })  # fmt: skip
    stats = Stage(f"{name}-stats", vae_dir / "latent_stats.json", [
        *coda_hf, "latent-stats", "--vae", str(vae_dir), "--data", str(vae_photos / f"tiles{hw['tile_size']}"), "--split", "train",
        "--resolution", str(hw["tile_size"]), "--num-images", str(hw["stats_images"]), "--write",
        "--output", str(vae_dir / "latent_stats.json"), "--overwrite",
    ])  # fmt: skip
    return train, stats


def _siblings_importable() -> None:
    """Let this script's sibling modules (fair_plan, adopt_run, ...) import, and import it by name."""
    sys.modules.setdefault("reproduce", sys.modules[__name__])
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))


def build_plan(
    work: Path, config_name: str, cache_dir: Path, launcher: list[str] | None = None, photos: Path | None = None,
    overrides: dict | None = None, vae_photos: Path | None = None,
) -> list[Stage]:
    """The ordered stages of the experiment (nothing is run). ``photos``: an already prepared photo set.
    ``overrides``: top-level keys of the config replaced (an ablation, ``--override``). ``vae_photos``: an
    already prepared photo set for stage 0 (default with ``vae_sources``: ``WORK/data/vae-photos``)."""
    if config_name not in CONFIGS:
        raise ValueError(f"unknown config {config_name!r}; choose from {sorted(CONFIGS)}")
    unknown = set(overrides or {}) - set(CONFIGS[config_name])
    if unknown:
        raise ValueError(f"--override: unknown config keys {sorted(unknown)}; the {config_name!r} config has {sorted(CONFIGS[config_name])}")
    hw = {**CONFIGS[config_name], **(overrides or {})}
    launcher = launcher or [sys.executable]
    coda_hf = [sys.executable, "-m", "coda_hf.cli"]
    photos = photos or work / "data" / "photos"
    tiles = photos / f"tiles{hw['tile_size']}"
    for key in ("sources", "vae_sources"):
        value = hw[key]
        if value is not None and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise ValueError(f"config key {key!r} takes null or a non-empty list of photo source names; got {value!r}")
    sources = hw["sources"] or list(DEFAULT_SOURCES)
    _check_photo_sources(photos, sources, "sources")
    off_the_shelf = hw["vae_sources"] is not None or vae_photos is not None
    if hw["vae_sources"] is not None:
        shared = sorted(set(hw["vae_sources"]) & set(sources))
        if shared:  # a shared source would put the ladder's eval photos in the VAE's training set
            raise ValueError(f"'vae_sources' and 'sources' share {shared}; stage 0 must train on other photos")
        vae_photos = vae_photos or work / "data" / "vae-photos"
        _check_photo_sources(vae_photos, hw["vae_sources"], "vae_sources")
    vae_photos = vae_photos or photos
    if hw.get("plan") == "fair":  # the equal-bits comparison (benchmarks/fair_plan.py)
        _siblings_importable()
        import fair_plan

        ctx = {"coda_hf": coda_hf, "launcher": launcher, "photos": photos, "vae_photos": vae_photos, "cache_dir": cache_dir}
        return fair_plan.build(work, hw, ctx)
    arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"],
            "norm_num_groups": hw["norm_num_groups"]}  # fmt: skip
    vae_dir = work / "runs" / "vae"
    stages = [_prepare_photos("data", photos, cache_dir, hw, hw["sources"])]
    if off_the_shelf:
        stages.append(_prepare_photos("data-vae", vae_photos, cache_dir, hw, hw["vae_sources"]))
    stages += list(_vae_stages(work, hw, launcher, coda_hf, vae_photos, "vae", hw["vae_steps"]))
    for run in LADDER:
        attention = run in ("msattn", "coda")
        stages.append(_train_stage(run, work, hw, launcher, photos, {
            "model": "coda", "pretrained_vae": str(vae_dir), "max_train_steps": hw["steps"],
            "quantizer": _quantizer(run, hw),
            "model_kwargs": {"lora": hw["lora"] if run == "coda" else {"rank": 0}},
            **({"quantizer_learning_rate": hw["attention_learning_rate"], "data_init_images": hw["data_init_images"]}
               if attention else {}),
            **({"learning_rate": hw.get("lora_learning_rate", hw["learning_rate"])} if run == "coda" else {}),
        }))
    stages.append(_train_stage("vqgan", work, hw, launcher, photos, {
        "model": "vqgan", "max_train_steps": hw["vqgan_factor"] * hw["steps"],
        "quantizer": _quantizer("vq", hw), "model_kwargs": {**arch, "latent_channels": hw["latent_channels"]},
    }))
    for run in ("vae", *LADDER, "vqgan"):
        out = work / "eval" / run
        command = [
            *coda_hf, "evaluate", "--model", str(work / "runs" / run), "--data", str(tiles),
            "--split", "eval", "--resolution", str(hw["tile_size"]), "--output-dir", str(out), "--no-progress",
            "--overwrite",  # the plan runs this stage only when metrics.json is missing or --force asks for it
        ] + (["--num-images", str(hw["eval_images"])] if hw["eval_images"] is not None else [])
        stages.append(Stage(f"eval-{run}", out / "metrics.json", command + (["--cpu"] if hw["cpu"] else [])))
    stages.append(Stage("report", work / "results.json", []))
    return stages


# Columns of the report, in order (metrics.json keys, then the training wall time of the run).
REPORT_KEYS = ("psnr", "ssim", "fd_effnet", "utilization", "perplexity", "tokens_per_image", "train_steps",
               "train_wall_s")  # fmt: skip


def write_report(work: Path, reused: dict[str, Path] | None = None) -> dict:
    """Collect ``eval/*/metrics.json`` and the stage times into ``results.json`` and ``results.md``.

    ``reused``: ``{run: results_dir}``, rows taken as they are from an earlier report's ``results.json``
    (``--reuse``); each is marked in both files with the folder it came from.
    """
    timings = _read_timings(work)
    results = {}
    for metrics_file in sorted((work / "eval").glob("*/metrics.json")):
        run = metrics_file.parent.name
        metrics = json.loads(metrics_file.read_text())
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        summary = work / "runs" / run / "training_summary.json"
        if summary.is_file():
            row["train_steps"] = json.loads(summary.read_text()).get("global_step")
        if run in timings:
            row["train_wall_s"] = timings[run]
        results[run] = row
    for run, results_dir in (reused or {}).items():
        source = Path(results_dir).resolve()
        results[run] = {**load_reused_row(source, run), "reused_from": shown_path(source)}
    order = [r for r in ("vae", *LADDER, "vqgan") if r in results] + sorted(set(results) - {"vae", *LADDER, "vqgan"})
    keys = [k for k in REPORT_KEYS if any(k in results[r] for r in order)]
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for run in order:
        metrics = results[run]
        name = f"{run} (reused)" if "reused_from" in metrics else run
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.4g}" if k in metrics else "-" for k in keys) + " |")
    lines.append("")
    for run in order:
        if "reused_from" in results[run]:
            lines.append(f"{run} (reused): not run by this invocation; the row of {results[run]['reused_from']}/results.json.")
    # Training is bit-reproducible at a fixed thread count; another count changes float summation order.
    lines.append(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                 f"python {platform.python_version()}, "
                 f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    (work / "results.md").write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps({r: results[r] for r in order}, indent=2) + "\n")  # run order
    return {r: results[r] for r in order}


def shown_path(path: Path) -> str:
    """``path`` as a report records it: relative to the repository when inside it (reads the same anywhere)."""
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def load_reused_row(results_dir: Path, run: str) -> dict:
    """``run``'s row of an earlier report (``results_dir/results.json``), for ``--reuse``."""
    path = Path(results_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"--reuse {run}={results_dir}: no results.json there (an earlier report's folder)")
    rows = json.loads(path.read_text())
    if run not in rows:
        raise ValueError(f"--reuse {run}={results_dir}: {path} has no row {run!r} (it has {sorted(rows)})")
    return {k: v for k, v in rows[run].items() if k != "reused_from"}


def _read_timings(work: Path) -> dict[str, float]:
    path = work / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_timings(work: Path, timings: dict[str, float]) -> None:
    """Replace ``timings.json`` atomically (a killed run never leaves it half written)."""
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / "timings.json.tmp"
    tmp.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    tmp.replace(work / "timings.json")


@contextlib.contextmanager
def _workdir_lock(work: Path):
    """Two invocations on one workdir (``--only`` halves of a plan) update its shared files one at a time."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".reproduce.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _add_timing(work: Path, name: str, seconds: float) -> None:
    """Wall seconds per stage, summed over the invocations that ran it (a resumed stage adds up)."""
    with _workdir_lock(work):
        timings = _read_timings(work)
        timings[name] = round(timings.get(name, 0.0) + seconds, 1)
        _write_timings(work, timings)


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON atomically (a done marker is never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def record_invocation(work: Path, stages: list[str]) -> None:
    """Append who ran which stages, with how many threads and which code, to ``invocations.json``: results
    depend on the thread count (float summation order), and the reports quote it."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    with _workdir_lock(work):
        path = work / "invocations.json"
        records = json.loads(path.read_text()) if path.is_file() else []
        records.append({
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": stages, "argv": sys.argv,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "code": str(REPO), "commit": commit or None, "uncommitted_changes": bool(dirty),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
        })  # fmt: skip
        write_json_atomic(path, records)


def _reset_timing(work: Path, name: str) -> None:
    """A forced stage's wall time starts again from zero."""
    timings = _read_timings(work)
    if timings.pop(name, None) is not None:
        _write_timings(work, timings)


# Seconds a stage gets to exit after the orchestrator forwarded SIGTERM / SIGINT, before SIGKILL.
STAGE_GRACE_S = 30.0


def _parent_death_signal():
    """Linux: a ``preexec_fn`` that makes the stage get SIGTERM when the orchestrator dies, even by SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``); ``None`` elsewhere. Resolved here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def set_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the orchestrator died before the prctl
            os._exit(1)

    return set_signal


class StageProcesses:
    """Stage commands, each in its own process group (a launcher's workers included), that never outlive the
    orchestrator. Inside the ``with`` block SIGTERM or SIGINT to the orchestrator is forwarded to every group
    (SIGKILL after ``grace_s``); if the orchestrator is SIGKILLed, Linux sends each stage SIGTERM
    (parent-death signal). Leaving the block kills what still runs."""

    def __init__(self, grace_s: float = STAGE_GRACE_S):
        self.grace_s = grace_s
        self.running: dict[str, subprocess.Popen] = {}
        self.received: list[int] = []
        self._deadline: float | None = None

    def __enter__(self) -> StageProcesses:
        self._previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        for proc in self.running.values():  # an exception in the orchestrator: the stages go too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _forward(self, signum, frame) -> None:
        self.received.append(signum)
        for proc in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)

    def start(self, name: str, command: list[str], cwd: Path = REPO, log: Path | None = None) -> None:
        """Start ``command`` as stage ``name``; ``log``: append its stdout and stderr there (else inherited)."""
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")
        try:
            self.running[name] = subprocess.Popen(command, cwd=cwd, start_new_session=True, stdout=out,
                                                  stderr=subprocess.STDOUT if out else None,
                                                  preexec_fn=_parent_death_signal())  # fmt: skip
        finally:
            if out is not None:
                out.close()

    def wait_any(self, timeout: float = 0.2) -> list[tuple[str, subprocess.Popen]]:
        """The stages that have ended, removed from ``running`` (waits up to ``timeout`` when none has).
        After a forwarded signal, stages still running ``grace_s`` later are killed."""
        if self.received and self._deadline is None:
            self._deadline = time.monotonic() + self.grace_s
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._deadline = float("inf")  # killed once
            for proc in self.running.values():
                logger.warning("stage %s ignored the signal for %.0f s: killing it", shlex.join(proc.args), self.grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        ended = [(n, p) for n, p in self.running.items() if p.poll() is not None]
        if not ended and len(self.running) == 1:
            with contextlib.suppress(subprocess.TimeoutExpired):
                next(iter(self.running.values())).wait(timeout=timeout)
            ended = [(n, p) for n, p in self.running.items() if p.poll() is not None]
        elif not ended:
            time.sleep(timeout)
        for name, _ in ended:
            del self.running[name]
        return ended


def run_stage_command(command: list[str], cwd: Path = REPO, grace_s: float = STAGE_GRACE_S) -> None:
    """Run one stage's command so that it never outlives the orchestrator (:class:`StageProcesses`); after a
    forwarded SIGTERM / SIGINT the orchestrator exits with ``128 + signal`` (``SystemExit``). Raises
    ``CalledProcessError`` when the stage fails."""
    with StageProcesses(grace_s) as group:
        group.start("stage", command, cwd)
        ended = []
        while not ended:
            ended = group.wait_any()
    if group.received:
        logger.error("stopped by signal %d; the stage %s was stopped with it", group.received[0], shlex.join(command))
        raise SystemExit(128 + group.received[0])
    if ended[0][1].returncode != 0:
        raise subprocess.CalledProcessError(ended[0][1].returncode, command)


def run_plan(
    stages: list[Stage], work: Path, dry_run: bool = False, force: tuple[str, ...] = (),
    reused: dict[str, Path] | None = None, jobs: int = 1,
) -> list[str]:
    """Run the stages in order, skipping those whose output exists (unless named in ``force``).

    A forced training stage starts afresh: its previous run directory is moved aside (renamed
    ``<run>.replaced-<unix time>``, never deleted) so that ``resume_from_checkpoint: latest`` cannot pick
    up a checkpoint of the old configuration, and its wall time restarts from zero.
    ``reused``: rows the report takes from earlier reports (:func:`write_report`).
    ``jobs`` > 1: up to ``jobs`` stage commands at once, each started when the stages it ``needs`` have
    finished (:func:`run_parallel`).
    Returns the names of the stages that ran (or would run, with ``dry_run``).
    """
    todo = [s.name for s in stages if s.name in force or not s.done_marker.exists()]
    if todo and not dry_run:
        record_invocation(work, todo)
    if jobs > 1 and not dry_run:
        return run_parallel(stages, work, jobs, force, reused)
    ran = []
    for stage in stages:
        if stage.done_marker.exists() and stage.name not in force:
            logger.info("[skip] %s: %s exists", stage.name, stage.done_marker)
            continue
        ran.append(stage.name)
        if not _prepare_stage(stage, work, force, dry_run) or dry_run:
            continue
        start = time.perf_counter()
        try:
            if stage.command:
                run_stage_command(stage.command)
            else:
                _run_python_stage(stage, work, reused)
        finally:  # a killed or failed invocation still counts towards the stage's wall time
            _add_timing(work, stage.name, time.perf_counter() - start)
    return ran


def _prepare_stage(stage: Stage, work: Path, force: tuple[str, ...], dry_run: bool) -> bool:
    """Resolve a stage's config (a choice of an earlier stage), move a forced run aside and write its config
    file. False (dry run only) when the config waits on a choice not made yet."""
    if stage.make_config is not None:
        try:  # a choice made on the validation split by an earlier stage
            stage.config = stage.make_config()
        except FileNotFoundError as e:
            if not dry_run:
                raise
            logger.info("[%s] config %s: completed when the stage runs (%s)", stage.name, stage.config_file, e)
            logger.info("[%s] %s", stage.name, shlex.join(stage.command))
            return False
    if stage.config_file is not None:
        logger.info("[%s] config %s:\n%s", stage.name, stage.config_file, yaml.safe_dump(stage.config))
    logger.info("[%s] %s", stage.name, shlex.join(stage.command) if stage.command else "(python stage)")
    if dry_run:
        return True
    if stage.name in force:
        run_dir = stage.done_marker.parent
        if stage.config_file is not None and run_dir.exists():
            aside = run_dir.with_name(f"{run_dir.name}.replaced-{int(time.time())}")
            logger.info("[%s] forced: moving the previous run %s to %s", stage.name, run_dir, aside)
            run_dir.rename(aside)
        _reset_timing(work, stage.name)
    if stage.config_file is not None:
        stage.config_file.parent.mkdir(parents=True, exist_ok=True)
        stage.config_file.write_text(yaml.safe_dump(stage.config, sort_keys=True))
    return True


def _run_python_stage(stage: Stage, work: Path, reused: dict[str, Path] | None) -> None:
    """A stage without a command: its action (a selection, the fair report), else the ladder's report."""
    if stage.action is not None:
        stage.action()
    else:
        write_report(work, reused)


def run_parallel(stages: list[Stage], work: Path, jobs: int, force: tuple[str, ...] = (),
                 reused: dict[str, Path] | None = None) -> list[str]:  # fmt: skip
    """Up to ``jobs`` stage commands at once (python stages run in between, in the orchestrator), each
    started, in plan order, once every stage it ``needs`` has finished (``needs=None``: every earlier stage;
    needs outside ``stages``, as after ``--only``, count as met). Each command writes to
    ``WORK/logs/<stage>.log``. A failed stage blocks the stages that need it, directly or not; the others go
    on, and the first failure is raised at the end (``CalledProcessError``). Returns the stages that ran."""
    order = [s.name for s in stages]
    pending = [s for s in stages if s.name in force or not s.done_marker.exists()]
    finished = set(order) - {s.name for s in pending}
    failed: dict[str, int | None] = {}  # the exit code of a failed stage; None: blocked by a failure
    ran: list[str] = []

    def needs(stage: Stage) -> set[str]:
        wanted = order[: order.index(stage.name)] if stage.needs is None else stage.needs
        return set(wanted) & set(order)

    def settle(stage: Stage, returncode: int, seconds: float) -> None:
        _add_timing(work, stage.name, seconds)
        if returncode == 0:
            finished.add(stage.name)
        else:
            failed[stage.name] = returncode

    started: dict[str, tuple[Stage, float]] = {}
    with StageProcesses() as group:
        while (pending or group.running) and not group.received:
            for stage in [s for s in pending if needs(s) & set(failed)]:  # blocked: never runs
                pending.remove(stage)
                failed[stage.name] = None
                logger.error("[%s] not run: it needs %s, which failed", stage.name, sorted(needs(stage) & set(failed)))
            ready = [s for s in pending if needs(s) <= finished]
            for stage in ready:
                if stage.command and len(group.running) >= jobs:
                    continue
                pending.remove(stage)
                if stage.done_marker.exists() and stage.name not in force:  # another invocation (--only) made it
                    logger.info("[skip] %s: %s exists", stage.name, stage.done_marker)
                    finished.add(stage.name)
                    continue
                ran.append(stage.name)
                start = time.perf_counter()
                try:
                    _prepare_stage(stage, work, force, dry_run=False)
                    if not stage.command:
                        _run_python_stage(stage, work, reused)
                        settle(stage, 0, time.perf_counter() - start)
                        continue
                    log = work / "logs" / f"{stage.name}.log"
                    group.start(stage.name, stage.command, log=log)
                    started[stage.name] = (stage, start)
                    logger.info("[%s] started (%d running); output: %s", stage.name, len(group.running), log)
                except Exception:
                    logger.exception("[%s] failed", stage.name)
                    settle(stage, 1, time.perf_counter() - start)
            if not group.running and pending and not ready:
                raise RuntimeError(f"stages {[s.name for s in pending]} wait on stages that never ran")
            for name, proc in group.wait_any():
                stage, start = started.pop(name)
                settle(stage, proc.returncode, time.perf_counter() - start)
                logger.log(logging.ERROR if proc.returncode else logging.INFO, "[%s] %s (exit %d; %d running, %d waiting)",
                           name, "FAILED" if proc.returncode else "done", proc.returncode, len(group.running), len(pending))
        while group.running:  # after a signal: the forwarded stages end (or are killed after the grace time)
            for name, _ in group.wait_any():
                stage, start = started.pop(name)
                _add_timing(work, name, time.perf_counter() - start)
    if group.received:
        logger.error("stopped by signal %d; the running stages were stopped with it", group.received[0])
        raise SystemExit(128 + group.received[0])
    if failed:
        by_name = {s.name: s for s in stages}
        name, code = next((n, c) for n, c in failed.items() if c is not None)
        logger.error("failed: %s; not run: %s", sorted(n for n, c in failed.items() if c is not None),
                     sorted(n for n, c in failed.items() if c is None))
        raise subprocess.CalledProcessError(code, by_name[name].command or [name])
    return ran


def adopt_runs(stages: list[Stage], items: list[str], dry_run: bool = False) -> None:
    """``--adopt RUN=DIR``: copy each saved model into its training stage's run folder (adopt_run.py)."""
    _siblings_importable()
    from adopt_run import adopt, check_recipe

    by_name = {s.name: s for s in stages}
    for item in items:
        run, sep, folder = item.partition("=")
        if not sep or run not in by_name or by_name[run].config_file is None:
            trainable = sorted(s.name for s in stages if s.config_file is not None)
            raise ValueError(f"--adopt takes RUN=DIR with RUN a training stage of this plan ({', '.join(trainable)}); got {item!r}")
        stage, source = by_name[run], Path(folder).resolve()
        if dry_run:
            check_recipe(run, stage.config, source)
            logger.info("[adopt] %s <- %s (dry run: checked, not copied)", run, source)
        elif adopt(run, stage.config, stage.done_marker, source):
            logger.info("[adopt] %s <- %s", run, source)
        else:
            logger.info("[adopt] %s: already complete (%s exists), left as it is", run, stage.done_marker)


def select_stages(parser: argparse.ArgumentParser, stages: list[Stage], force: list[str], only: list[str] | None):
    """``(stages to run, names to force)`` from ``--force`` / ``--only`` names or shell patterns (plan order
    kept); a pattern matching no stage is a usage error naming it."""
    for option, names in (("--force", force), ("--only", only or [])):
        unknown = [n for n in names if not any(fnmatch(s.name, n) for s in stages)]
        if unknown:
            parser.error(f"unknown stages in {option}: {sorted(unknown)}")
    forced = tuple(s.name for s in stages if any(fnmatch(s.name, n) for n in force))
    if only is not None:
        stages = [s for s in stages if any(fnmatch(s.name, n) for n in only)]
    return stages, forced


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, help="where data, runs, eval and results go")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--cache", default=None,
                   help="Debian package cache (default: tools/prepare_data.py's, ~/.cache/coda_hf/debs: outside the work "
                        "tree, the packages hold third-party code)")  # fmt: skip
    p.add_argument("--photos", default=None, help="an already prepared photo set (tools/prepare_data.py prepare-photos --out)")
    p.add_argument("--vae-photos", default=None,
                   help="an already prepared photo set for stage 0, other photos than --photos (an off-the-shelf VAE)")
    p.add_argument("--launcher", default=None, help='training launcher, e.g. "accelerate launch --num_processes 2"')
    p.add_argument("--force", nargs="*", default=[],
                   help="re-run these stages even if their output exists (names or shell patterns: 'eval-*')")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these stages, in plan order (names or shell patterns; e.g. the VQGAN in a second process: "
                        "--only vqgan eval-vqgan, or --only 'msvqgan*' 'vqgan-f2*')")
    p.add_argument("--reuse", nargs="*", default=[], metavar="RUN=DIR",
                   help="take RUN's row from an earlier report in DIR (its results.json) instead of training and "
                        "evaluating it; the report marks the row (e.g. vqgan=benchmarks/results/cpu-first)")
    p.add_argument("--adopt", nargs="*", default=[], metavar="RUN=DIR",
                   help="use the model saved in DIR as training stage RUN's output instead of training it (same "
                        "architecture, checked; trained elsewhere with the stage's recipe); provenance.json and the "
                        "report say so (e.g. vae-4x=src/coda_hf/bundled/models/photos-vae)")  # fmt: skip
    p.add_argument("--override", default=None, metavar="JSON",
                   help='replace top-level config keys for an ablation in its own --workdir, e.g. \'{"lora_learning_rate": 3e-5}\'')
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="run up to N stage commands at once, each when the stages it needs have finished (the fair plan "
                        "names them; other plans keep their order), output in WORK/logs/<stage>.log: many small "
                        "trainings share a GPU")  # fmt: skip
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs takes a positive number of stages; got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.workdir).resolve()
    launcher = shlex.split(args.launcher) if args.launcher else None
    cache = Path(os.path.expanduser(args.cache or DEFAULT_CACHE)).resolve()
    photos = Path(args.photos).resolve() if args.photos else None
    vae_photos = Path(args.vae_photos).resolve() if args.vae_photos else None
    try:
        overrides = json.loads(args.override) if args.override else None
    except json.JSONDecodeError as e:
        p.error(f"--override is not valid JSON: {e}")
    if overrides is not None and not isinstance(overrides, dict):
        p.error(f"--override takes a JSON object of config keys; got {args.override!r}")
    try:
        stages = build_plan(work, args.config, cache, launcher, photos, overrides, vae_photos)
        adopt_runs(stages, args.adopt, dry_run=args.dry_run)
    except ValueError as e:
        p.error(str(e))
    stages, force = select_stages(p, stages, args.force, args.only)
    reused = {}
    for item in args.reuse:
        run, sep, folder = item.partition("=")
        if not sep or run not in ("vae", *LADDER, "vqgan"):
            p.error(f"--reuse takes RUN=DIR with RUN one of {['vae', *LADDER, 'vqgan']}; got {item!r}")
        reused[run] = Path(folder).resolve()
        load_reused_row(reused[run], run)  # fail now, not after hours of training
    stages = [s for s in stages if s.name not in {*reused, *(f"eval-{r}" for r in reused)}]
    try:
        run_plan(stages, work, dry_run=args.dry_run, force=force, reused=reused, jobs=args.jobs)
    except subprocess.CalledProcessError as e:
        logger.error("stage command failed (exit %s): %s", e.returncode, shlex.join(e.cmd))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
