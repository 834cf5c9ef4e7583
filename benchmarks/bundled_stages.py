"""The python stages of ``benchmarks/train_bundled.py`` (the command stages are the package's CLI and trainers).

Each stage writes its done marker LAST (atomically where it is a file), so a killed stage is re-run whole.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

logger = logging.getLogger("train_bundled")

# The files of a saved model directory (checkpoints, logs and samples stay behind).
MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "preprocessor_config.json", "training_config.json",
               "training_config.yaml", "training_summary.json", "latent_stats.json")  # fmt: skip


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON atomically (a done marker is never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def copy_model_files(src: Path, dst: Path, last: str | None = None) -> None:
    """Copy the :data:`MODEL_FILES` of ``src`` that exist into ``dst``; ``last`` is copied after the others."""
    dst.mkdir(parents=True, exist_ok=True)
    names = [n for n in MODEL_FILES if (src / n).is_file() and n != last]
    for name in names + ([last] if last else []):
        tmp = dst / f".{name}.tmp"
        shutil.copyfile(src / name, tmp)
        tmp.replace(dst / name)


def copy_vae(vae_workdir: Path, work: Path) -> None:
    """Stage ``vae``: the reproduction's stage-0 VAE with its provenance (data manifest, config, wall time)."""
    src, dst = vae_workdir / "runs" / "vae", work / "runs" / "vae"
    for required in ("config.json", "diffusion_pytorch_model.safetensors", "latent_stats.json", "training_summary.json"):
        if not (src / required).is_file():
            raise FileNotFoundError(f"{src / required} is missing: the VAE of {vae_workdir} has not finished")
    timings = json.loads((vae_workdir / "timings.json").read_text()) if (vae_workdir / "timings.json").is_file() else {}
    manifest = vae_workdir / "data" / "vae-photos" / "manifest.json"
    provenance = {
        "workdir": str(vae_workdir), "train_wall_s": timings.get("vae"), "stats_wall_s": timings.get("vae-stats"),
        "data_manifest": json.loads(manifest.read_text()) if manifest.is_file() else None,
    }  # fmt: skip
    write_json(dst / "provenance.json", provenance)
    copy_model_files(src, dst, last="latent_stats.json")


def select_lora(work: Path, hw: dict) -> None:
    """Stage ``select-lora``: the LoRA rate with the highest VALIDATION PSNR (ties: lower FD-EffNet) becomes
    ``runs/coda``; every rate's validation figures go to ``lora_choice.json``."""
    from train_bundled import rate_name

    rows = {}
    for rate in hw["lora_rates"]:
        metrics = json.loads((work / "validation" / rate_name(rate) / "metrics.json").read_text())
        rows[f"{rate:g}"] = {k: metrics[k] for k in ("psnr", "ssim", "fd_effnet", "utilization", "num_images") if k in metrics}
    best = max(rows, key=lambda r: (rows[r]["psnr"], -rows[r].get("fd_effnet", 0.0)))
    chosen = work / "runs" / rate_name(float(best))
    target = work / "runs" / "coda"
    if target.exists():
        shutil.rmtree(target)
    copy_model_files(chosen, target)
    write_json(work / "lora_choice.json", {
        "rule": "highest PSNR on the validation split (ties: lower FD-EffNet)", "chosen": best, "validation": rows,
        "run": str(chosen),
    })  # fmt: skip
    logger.info("LoRA rate %s chosen on validation: %s", best, rows)


def export_tiles(tiles: Path, split: str, out: Path) -> None:
    """Stage ``prior-tiles``: the ``split`` tiles of a shard folder as PNG files (an image folder)."""
    from coda_hf.data.shards import load_image_shards

    out.mkdir(parents=True, exist_ok=True)
    dataset = load_image_shards(tiles, split, streaming=False)
    width = max(5, math.ceil(math.log10(len(dataset) + 1)))
    for i, row in enumerate(dataset):
        row["image"].convert("RGB").save(out / f"{split}-{i:0{width}d}.png")
    write_json(out / "done.json", {"split": split, "tiles": len(dataset), "source": str(tiles)})
