#!/usr/bin/env python
"""Train, evaluate and bundle the package's pretrained PHOTO models (``coda_hf.bundled_model("photos-...")``).

Resumable like ``benchmarks/reproduce.py`` (whose stage runner, training stages and configs it imports):
every stage is skipped when its output exists, training stages resume from their latest checkpoint, and a
killed run goes on where it stopped. The continuous VAE is NOT trained here: it is stage 0 of a
``reproduce.py`` workdir (``--vae-workdir``; the VAE trained on the wallpaper photos only), copied in.

    data          tools/prepare_data.py prepare-photos (opencv-doc + skimage; train / validation / eval by scene)
    vae           copy the reproduction's stage-0 VAE (+ its latent stats, data manifest, wall time)
    coda-lr-R     CODA (cpu-latent16 recipe, decoder LoRA at rate R), one run per rate in ``lora_rates``
    val-coda-lr-R coda-hf evaluate on the VALIDATION split
    select-lora   the rate with the best validation PSNR -> runs/coda (+ lora_choice.json)
    vqgan         multi-scale VQGAN from scratch: same scales and codebook, dead-code restarts, 6N steps
    prior-tiles   the train tiles as PNG files (the MaskGIT trainer reads an image folder)
    prior         MaskGIT prior on the CODA tokens of the train tiles
    eval-*        coda-hf evaluate on the EVAL split, once per model (the prior: samples vs eval tiles)
    demo-photos   a few EVAL photos at 256 px, with their licences
    bundle        merged / tiled inference checkpoints, demo metrics on the demo photos, model cards,
                  copied into the package (--bundle-dir, --cards-dir)

    python benchmarks/train_bundled.py --workdir runs/bundled --vae-workdir runs/vae4x            # ~2-3 h, 1 thread
    python benchmarks/train_bundled.py --workdir runs/bundled --vae-workdir runs/vae4x --dry-run  # the plan
    python benchmarks/train_bundled.py --workdir /tmp/b --vae-workdir W --config smoke --photos P  # 2-step wiring

The VAE's workdir comes from ``python benchmarks/reproduce.py --workdir runs/vae4x --config
cpu-latent16-offdomain --override '{"vae_steps": 9600}' --only data-vae vae vae-stats``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (the sibling script: stage runner, training stages, configs)
from reproduce import Stage, run_plan  # noqa: E402  (one stage runner: locked, atomic invocations.json)

logger = logging.getLogger("train_bundled")
REPO = reproduce.REPO

# The photo models: the reproduction's off-domain recipe (cpu-latent16-offdomain: 16-channel f4 latents,
# 10 levels, 4,096 codes, attention quantizer with k-means data init, decoder LoRA r8, N = 200 steps) with
# ``validation_fraction`` of the scenes held out for choosing the LoRA rate among ``lora_rates``; the
# VQGAN: multi-scale VQ with the same scales and codebook, dead-code restarts (``vq``), 16-d codes
# (``vqgan_embed_dim``, the CODA latent's channels), 6N steps. ``latent_tile``: the bundled tokenizers
# quantize each 16 x 16 latent tile of a larger image on its own (``latent_tile_size``), as trained.
# ``lora_rates``: 1e-4 (the configured in-domain rate) to 3e-3. 3e-3, the largest, came out best on
# validation; a fourth rate (1e-2) would bracket the choice, but the prior is trained on the chosen run's
# tokens, and a fourth LoRA run plus a new prior did not fit the CPU budget of the bundled models.
# ``prior``: MaskGitTrainingConfig settings of the MaskGIT prior (MLP width 2x: the 30 MB bundle budget; 500
# steps at batch 16: ~45 min of one core at the ~5.5 CPU-seconds per step measured on this machine).
CONFIGS: dict[str, dict] = {
    "cpu": {
        **reproduce.CONFIGS["cpu-latent16-offdomain"], "validation_fraction": 0.15, "lora_rates": [1e-4, 1e-3, 3e-3],
        "vq": {"restart_after": 20}, "vqgan_embed_dim": 16, "latent_tile": 16, "demo_photos": 4, "prior_samples": 322,
        "prior": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 384,
                  "dropout": 0.1, "train_batch_size": 16, "max_train_steps": 500, "learning_rate": 1e-3,
                  "lr_warmup_steps": 50, "checkpointing_steps": 50, "validation_steps": 100000,
                  "num_inference_steps": 8, "guidance_scale": 1.0},
    },
    "smoke": {
        **reproduce.CONFIGS["smoke"], "validation_fraction": 0.15, "lora_rates": [1e-3, 1e-2], "vq": {"restart_after": 2},
        "vqgan_embed_dim": 4, "latent_tile": 16, "demo_photos": 1, "prior_samples": 4,
        "prior": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                  "dropout": 0.0, "train_batch_size": 2, "max_train_steps": 2, "learning_rate": 1e-3,
                  "lr_warmup_steps": 1, "checkpointing_steps": 1, "validation_steps": 100000,
                  "num_inference_steps": 2, "guidance_scale": 1.0},
    },
}
# The bundled names and the run each comes from.
BUNDLED = {"photos-vae": "vae", "photos-coda": "coda", "photos-vqgan": "vqgan", "photos-prior": "prior"}


def rate_name(rate: float) -> str:
    return f"coda-lr-{rate:g}"


def _training(work: Path, name: str, hw: dict, photos: Path, extra: dict) -> Stage:
    """A ``train_tokenizer.py`` stage (reproduce.py's, with its objective, batch, checkpointing and seed)."""
    return reproduce._train_stage(name, work, hw, [sys.executable], photos, extra)


def _evaluate(work: Path, run_dir: Path, out: Path, tiles: Path, split: str, hw: dict) -> list[str]:
    return [
        sys.executable, "-m", "coda_hf.cli", "evaluate", "--model", str(run_dir), "--data", str(tiles), "--split", split,
        "--resolution", str(hw["tile_size"]), "--output-dir", str(out), "--no-progress", "--overwrite",
    ] + (["--cpu"] if hw["cpu"] else [])  # fmt: skip


def build_plan(work: Path, config_name: str, vae_workdir: Path, cache_dir: Path, photos: Path | None = None,
               bundle_dir: Path | None = None, cards_dir: Path | None = None) -> list[Stage]:  # fmt: skip
    """The ordered stages (nothing is run)."""
    import bundled_stages as bs  # the python actions (benchmarks/bundled_stages.py)

    if config_name not in CONFIGS:
        raise ValueError(f"unknown config {config_name!r}; choose from {sorted(CONFIGS)}")
    hw = CONFIGS[config_name]
    photos = photos or work / "data" / "photos"
    tiles = photos / f"tiles{hw['tile_size']}"
    data = reproduce._prepare_photos("data", photos, cache_dir, hw, hw["sources"])
    stages = [Stage("data", data.done_marker, data.command + ["--validation-fraction", str(hw["validation_fraction"])])]
    runs = work / "runs"
    stages.append(Stage("vae", runs / "vae" / "latent_stats.json", [], action=lambda: bs.copy_vae(vae_workdir, work)))
    for rate in hw["lora_rates"]:
        stages.append(_training(work, rate_name(rate), hw, photos, {
            "model": "coda", "pretrained_vae": str(runs / "vae"), "max_train_steps": hw["steps"],
            "quantizer": reproduce._quantizer("coda", hw), "model_kwargs": {"lora": hw["lora"]},
            "quantizer_learning_rate": hw["attention_learning_rate"], "data_init_images": hw["data_init_images"],
            "learning_rate": rate,
        }))
    for rate in hw["lora_rates"]:
        out = work / "validation" / rate_name(rate)
        stages.append(Stage(f"val-{rate_name(rate)}", out / "metrics.json",
                            _evaluate(work, runs / rate_name(rate), out, tiles, "validation", hw)))
    stages.append(Stage("select-lora", work / "lora_choice.json", [], action=lambda: bs.select_lora(work, hw)))
    arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"],
            "norm_num_groups": hw["norm_num_groups"]}  # fmt: skip
    stages.append(_training(work, "vqgan", hw, photos, {
        "model": "vqgan", "max_train_steps": hw["vqgan_factor"] * hw["steps"], "quantizer": reproduce._quantizer("msvq", hw),
        "model_kwargs": {**arch, "latent_channels": hw["latent_channels"], "embed_dim": hw["vqgan_embed_dim"]},
    }))
    prior_tiles = work / "data" / "prior-tiles"
    stages.append(Stage("prior-tiles", prior_tiles / "done.json", [], action=lambda: bs.export_tiles(tiles, "train", prior_tiles)))
    stages.append(_prior_stage(work, hw, prior_tiles))
    for run in ("vae", "coda", "vqgan"):
        out = work / "eval" / run
        stages.append(Stage(f"eval-{run}", out / "metrics.json", _evaluate(work, runs / run, out, tiles, "eval", hw)))
    stages.append(Stage("eval-prior", work / "eval" / "prior" / "metrics.json", [],
                        action=lambda: bs.evaluate_prior(work, tiles, hw)))
    stages.append(Stage("demo-photos", work / "demo-photos" / "photos.json", [],
                        action=lambda: bs.demo_photos(photos, work / "demo-photos", hw)))
    bundle_dir = bundle_dir or REPO / "src" / "coda_hf" / "bundled"
    cards_dir = cards_dir or REPO / "src" / "coda_hf" / "model_cards"
    stages.append(Stage("bundle", work / "bundle" / "bundle.json", [],
                        action=lambda: bs.bundle(work, hw, config_name, vae_workdir, photos, bundle_dir, cards_dir)))
    return stages


def _prior_stage(work: Path, hw: dict, prior_tiles: Path) -> Stage:
    out = work / "runs" / "prior"
    config = {
        "tokenizer": str(work / "runs" / "coda"), "train_data_dir": str(prior_tiles), "label_column": "none",
        "resolution": hw["tile_size"], "output_dir": str(out), "checkpoints_total_limit": 2,
        "resume_from_checkpoint": "latest", "seed": 0, "report_to": "tensorboard", **hw["prior"],
    }  # fmt: skip
    config_file = work / "configs" / "prior.yaml"
    command = [sys.executable, str(REPO / "examples" / "train_maskgit.py"), "--config", str(config_file)]
    return Stage("prior", out / "pipeline" / "model_index.json", command, config_file=config_file, config=config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, help="where data, runs, eval and the bundle go")
    p.add_argument("--vae-workdir", required=True,
                   help="a reproduce.py workdir whose stage 0 (runs/vae with latent_stats.json) is the continuous VAE")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--cache", default=None, help="Debian package cache (default: tools/prepare_data.py's)")
    p.add_argument("--photos", default=None, help="an already prepared photo set with a validation split")
    p.add_argument("--bundle-dir", default=None, help="the package's bundled/ folder to install into (default: this repo's)")
    p.add_argument("--cards-dir", default=None, help="where the model cards go (default: this repo's model_cards/)")
    p.add_argument("--only", nargs="*", default=None, help="run only these stages, in plan order")
    p.add_argument("--force", nargs="*", default=[], help="re-run these stages even if their output exists")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.workdir).resolve()
    vae_workdir = Path(args.vae_workdir).resolve()
    cache = Path(os.path.expanduser(args.cache or reproduce.DEFAULT_CACHE)).resolve()
    stages = build_plan(
        work, args.config, vae_workdir, cache, Path(args.photos).resolve() if args.photos else None,
        Path(args.bundle_dir).resolve() if args.bundle_dir else None, Path(args.cards_dir).resolve() if args.cards_dir else None,
    )  # fmt: skip
    for option, names in (("--force", args.force), ("--only", args.only or [])):
        unknown = set(names) - {s.name for s in stages}
        if unknown:
            p.error(f"unknown stages in {option}: {sorted(unknown)} (stages: {[s.name for s in stages]})")
    if args.only is not None:
        stages = [s for s in stages if s.name in args.only]
    try:
        run_plan(stages, work, dry_run=args.dry_run, force=tuple(args.force))
    except reproduce.subprocess.CalledProcessError as e:
        logger.error("stage command failed (exit %s): %s", e.returncode, " ".join(e.cmd))
        return 1
    except (FileNotFoundError, ValueError) as e:  # a python stage's missing or bad input
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
