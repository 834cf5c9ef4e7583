#!/usr/bin/env python
"""Small-scale, offline reproduction of CODA's main claim on real photos (orchestration only).

Claim (coda-facts.md, Table 2): adapting a pretrained CONTINUOUS VAE into a discrete tokenizer (CODA)
reconstructs better than training a VQGAN from scratch, with a fraction of the training budget.
No Hub download is possible here, so the "pretrained VAE" is a small AutoencoderKL trained first on
the same photo tiles. Stages (each skipped when its output exists, so a killed run resumes):

    data     coda-hf data prepare-photos                 -> WORK/data/photos/manifest.json
    vae      train_tokenizer.py --model vae              -> WORK/runs/vae/training_summary.json
    coda     train_tokenizer.py --model coda (from vae)  -> WORK/runs/coda/training_summary.json
    vqgan    train_tokenizer.py --model vqgan (scratch)  -> WORK/runs/vqgan/training_summary.json
    eval-*   coda-hf evaluate on the held-out scenes     -> WORK/eval/<run>/metrics.json
    report   table of every metrics.json                 -> WORK/results.md, WORK/results.json

    python benchmarks/reproduce.py --workdir runs/repro --config cpu --dry-run   # print the plan
    python benchmarks/reproduce.py --workdir runs/repro --config gpu --launcher "accelerate launch"

Numbers in the report come only from the evaluate outputs; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

logger = logging.getLogger("reproduce")
REPO = Path(__file__).resolve().parents[1]

# Per-hardware settings. ``vae`` / ``vqgan`` model_kwargs use the same widths so both have the same
# downsampling factor (2 ** (len(block_out_channels) - 1)).
CONFIGS: dict[str, dict] = {
    "cpu": {
        "tile_size": 64, "batch_size": 8, "vae_steps": 300, "tokenizer_steps": 200, "eval_images": 128,
        "widths": [32, 32, 64], "layers_per_block": 1, "latent_channels": 4, "cpu": True,
        "checkpointing_steps": 100,
    },
    "gpu": {
        "tile_size": 128, "batch_size": 32, "vae_steps": 20000, "tokenizer_steps": 5000, "eval_images": 616,
        "widths": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16, "cpu": False,
        "checkpointing_steps": 1000,
    },
}


@dataclass
class Stage:
    name: str
    done_marker: Path  # the stage is complete when this file exists
    command: list[str]
    config_file: Path | None = None  # YAML written before running (train stages)
    config: dict = field(default_factory=dict)


def _train_stage(name: str, work: Path, hw: dict, launcher: list[str], extra: dict) -> Stage:
    out = work / "runs" / name
    config = {
        "train_data_dir": str(work / "data" / "photos" / f"tiles{hw['tile_size']}"),
        "dataset_split": "train",
        "resolution": hw["tile_size"],
        "train_batch_size": hw["batch_size"],
        "output_dir": str(out),
        "checkpointing_steps": hw["checkpointing_steps"],
        "resume_from_checkpoint": "latest",
        "cpu": hw["cpu"],
        "report_to": "tensorboard",
        "seed": 0,
        **extra,
    }
    config_file = work / "configs" / f"{name}.yaml"
    command = [*launcher, str(REPO / "examples" / "train_tokenizer.py"), "--config", str(config_file)]
    return Stage(name, out / "training_summary.json", command, config_file, config)


def build_plan(work: Path, config_name: str, cache_dir: Path, launcher: list[str] | None = None) -> list[Stage]:
    """The ordered stages of the experiment (nothing is run)."""
    if config_name not in CONFIGS:
        raise ValueError(f"unknown config {config_name!r}; choose from {sorted(CONFIGS)}")
    hw = CONFIGS[config_name]
    launcher = launcher or [sys.executable]
    coda_hf = [sys.executable, "-m", "coda_hf.cli"]
    photos = work / "data" / "photos"
    arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"]}
    stages = [
        Stage("data", photos / "manifest.json", [
            *coda_hf, "data", "prepare-photos", "--out", str(photos), "--cache", str(cache_dir),
            "--tile-sizes", str(hw["tile_size"]), "--seed", "0",
        ]),
        _train_stage("vae", work, hw, launcher, {
            "model": "vae", "max_train_steps": hw["vae_steps"], "gan_weight": 0.0,
            "model_kwargs": {**arch, "latent_channels": hw["latent_channels"],
                             "down_block_types": ["DownEncoderBlock2D"] * len(hw["widths"]),
                             "up_block_types": ["UpDecoderBlock2D"] * len(hw["widths"])},
        }),
        _train_stage("coda", work, hw, launcher, {
            "model": "coda", "pretrained_vae": str(work / "runs" / "vae"), "max_train_steps": hw["tokenizer_steps"],
        }),
        _train_stage("vqgan", work, hw, launcher, {
            "model": "vqgan", "max_train_steps": hw["tokenizer_steps"], "model_kwargs": arch,
        }),
    ]
    for run in ("vae", "coda", "vqgan"):
        out = work / "eval" / run
        command = [
            *coda_hf, "evaluate", "--model", str(work / "runs" / run), "--data", str(photos / f"tiles{hw['tile_size']}"),
            "--split", "eval", "--resolution", str(hw["tile_size"]), "--num-images", str(hw["eval_images"]),
            "--output-dir", str(out), "--no-progress",
        ]
        stages.append(Stage(f"eval-{run}", out / "metrics.json", command + (["--cpu"] if hw["cpu"] else [])))
    stages.append(Stage("report", work / "results.json", []))
    return stages


def write_report(work: Path) -> dict:
    """Collect ``eval/*/metrics.json`` into ``results.json`` and a Markdown table ``results.md``."""
    results = {}
    for metrics_file in sorted((work / "eval").glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        results[metrics_file.parent.name] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    keys = sorted({k for m in results.values() for k in m})
    lines = ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for run, metrics in results.items():
        lines.append(f"| {run} | " + " | ".join(f"{metrics[k]:.4g}" if k in metrics else "-" for k in keys) + " |")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def run_plan(stages: list[Stage], work: Path, dry_run: bool = False, force: tuple[str, ...] = ()) -> list[str]:
    """Run the stages in order, skipping those whose output exists (unless named in ``force``).

    Returns the names of the stages that ran (or would run, with ``dry_run``).
    """
    ran = []
    for stage in stages:
        if stage.done_marker.exists() and stage.name not in force:
            logger.info("[skip] %s: %s exists", stage.name, stage.done_marker)
            continue
        ran.append(stage.name)
        if stage.config_file is not None:
            logger.info("[%s] config %s:\n%s", stage.name, stage.config_file, yaml.safe_dump(stage.config))
        logger.info("[%s] %s", stage.name, shlex.join(stage.command) if stage.command else "write_report")
        if dry_run:
            continue
        if stage.config_file is not None:
            stage.config_file.parent.mkdir(parents=True, exist_ok=True)
            stage.config_file.write_text(yaml.safe_dump(stage.config, sort_keys=True))
        if stage.command:
            subprocess.run(stage.command, check=True, cwd=REPO)
        else:
            write_report(work)
    return ran


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="where data, runs, eval and results go")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--cache", default=None, help="Debian package cache (default: WORKDIR/debs)")
    p.add_argument("--launcher", default=None, help='training launcher, e.g. "accelerate launch --num_processes 2"')
    p.add_argument("--force", nargs="*", default=[], help="re-run these stages even if their output exists")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.workdir).resolve()
    launcher = shlex.split(args.launcher) if args.launcher else None
    stages = build_plan(work, args.config, Path(args.cache).resolve() if args.cache else work / "debs", launcher)
    unknown = set(args.force) - {s.name for s in stages}
    if unknown:
        p.error(f"unknown stages in --force: {sorted(unknown)}")
    try:
        run_plan(stages, work, dry_run=args.dry_run, force=tuple(args.force))
    except subprocess.CalledProcessError as e:
        logger.error("stage command failed (exit %s): %s", e.returncode, shlex.join(e.cmd))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
