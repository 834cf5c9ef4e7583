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


def evaluate_prior(work: Path, tiles: Path, hw: dict) -> None:
    """Stage ``eval-prior``: FD-EffNet of prior samples against the EVAL tiles (next to the same distance for
    the TRAIN tiles, the data's own gap), and the masked-token cross-entropy / accuracy on the eval and train
    tiles' CODA tokens (the MaskGIT objective, 4 seeded mask draws per tile)."""
    import torch
    from prior_metrics import masked_token_metrics, shard_batches

    from coda_hf.metrics import FrechetStatistics, effnet_features
    from coda_hf.pipelines.maskgit import CodaMaskGitPipeline

    torch.manual_seed(0)
    pipe = CodaMaskGitPipeline.from_pretrained(work / "runs" / "prior" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    features = effnet_features()
    sets = {split: [images for images, _ in shard_batches(tiles, split)] for split in ("eval", "train")}
    stats = {split: FrechetStatistics.from_features(torch.cat([features(b) for b in batches]))
             for split, batches in sets.items()}  # fmt: skip
    n, steps, generator = hw["prior_samples"], hw["prior"]["num_inference_steps"], torch.Generator().manual_seed(0)
    samples = []
    with torch.no_grad():
        while sum(s.shape[0] for s in samples) < n:
            batch = min(32, n - sum(s.shape[0] for s in samples))
            samples.append(pipe(batch_size=batch, num_inference_steps=steps, generator=generator, output_type="pt").images)
    sampled = FrechetStatistics.from_features(torch.cat([features(s * 2 - 1) for s in samples]))  # pt: [0, 1]
    result = {
        "samples": n, "num_inference_steps": steps, "guidance_scale": 1.0, "seed": 0,
        "fd_effnet_samples_vs_eval": sampled.distance(stats["eval"]),
        "fd_effnet_train_vs_eval": stats["train"].distance(stats["eval"]),
        "eval_tiles": sum(b.shape[0] for b in sets["eval"]), "train_tiles": sum(b.shape[0] for b in sets["train"]),
    }  # fmt: skip
    for split, batches in sets.items():
        result[f"{split}_masked_token"] = masked_token_metrics(pipe, [(b, torch.zeros(b.shape[0], dtype=torch.long)) for b in batches])
    write_json(work / "eval" / "prior" / "metrics.json", result)


# Eval photos never shown by the demo: a person's likeness.
DEMO_EXCLUDED = ("opencv-doc:usr/share/doc/opencv-doc/examples/data/messi5.jpg",)
DEMO_SIZE = 256


def demo_photos(photos: Path, out: Path, hw: dict) -> None:
    """Stage ``demo-photos``: the first ``demo_photos`` EVAL photos (by photo id, one per scene, none of
    :data:`DEMO_EXCLUDED`), shorter side resized to 256 px and centre-cropped to 256 x 256 (PNG), with their
    sources and licences (``photos.json``; the Debian copyright file of each package beside them)."""
    from PIL import Image

    from tools.data.tiling import resize_short_side

    manifest = json.loads((photos / "manifest.json").read_text())
    chosen, groups = [], set()
    for photo in sorted(manifest["photos"], key=lambda p: p["photo_id"]):
        if photo["split"] == "eval" and photo["group"] not in groups and photo["photo_id"] not in DEMO_EXCLUDED:
            chosen.append(photo)
            groups.add(photo["group"])
    chosen = chosen[: hw["demo_photos"]]
    if len(chosen) < hw["demo_photos"]:
        raise ValueError(f"{photos}: only {len(chosen)} eval scenes can be demo photos; the config asks for {hw['demo_photos']}")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for photo in chosen:
        name = f"{Path(photo['path']).stem}.png"
        with Image.open(photo["file"]) as image:
            small = resize_short_side(image.convert("RGB"), DEMO_SIZE)
        left, top = (small.width - DEMO_SIZE) // 2, (small.height - DEMO_SIZE) // 2
        small.crop((left, top, left + DEMO_SIZE, top + DEMO_SIZE)).save(out / name, optimize=True)
        entries.append({"file": name, **{k: photo.get(k) for k in ("photo_id", "source", "package", "package_version",
                        "license", "upstream_license", "reason", "width", "height")}, "split": "eval",
                        "license_text": _copy_license(photo, out)})  # fmt: skip
    config = manifest["config"]
    dataset = (f"eval split of `python tools/prepare_data.py prepare-photos --sources {' '.join(config['sources'])} --seed {config['seed']}"
               f" --validation-fraction {config.get('validation_fraction', 0.0)}`")  # fmt: skip
    write_json(out / "photos.json", {"size": DEMO_SIZE, "resize": "shorter side to 256 px (Lanczos), centre crop",
                                     "dataset": dataset, "photos": entries})  # fmt: skip


def _copy_license(photo: dict, out: Path) -> str | None:
    """Copy a Debian package's copyright file next to the demo photos; its name there (``None``: no file)."""
    if not photo.get("license_file") or photo["source"] in ("skimage", "sklearn"):
        return None
    root = Path(photo["file"][: -len(photo["path"])])  # the extracted package tree
    name = f"LICENSE-{photo['package']}.txt"
    shutil.copyfile(root / photo["license_file"], out / name)
    return name


# What each bundled model is (bundle.json "description"; `coda-hf models` lists it).
DESCRIPTIONS = {
    "photos-vae": "continuous VAE (AutoencoderKL f4, 16 latent channels) trained on wallpaper photos: the "
                  "off-the-shelf VAE that photos-coda adapts",
    "photos-coda": "CODA tokenizer on photos-vae: 10-level attention quantizer, 4,096 codes, decoder LoRA merged; "
                   "680 tokens per 64 px tile, tile-wise on larger images",
    "photos-vqgan": "multi-scale VQGAN from scratch at the same bits as photos-coda (same scales and codebook, "
                    "6x its steps), tile-wise on larger images",
    "photos-prior": "MaskGIT prior over photos-coda's tokens of 64 px tiles, as a CodaMaskGitPipeline (its "
                    "tokenizer/ is photos-coda)",
}  # fmt: skip


def stage_models(work: Path, hw: dict, models: Path) -> dict[str, Path]:
    """Inference checkpoints of the four photo models under ``models``; returns name -> model directory.

    CODA: LoRA merged into the decoder convs, ``latent_tile_size`` set, stored once as the ``tokenizer/`` of
    the prior's pipeline; VQGAN: ``latent_tile_size`` set; VAE: the AutoencoderKL as trained."""
    from diffusers import AutoencoderKL

    from coda_hf.image_processing import CodaImageProcessor
    from coda_hf.maskgit import MaskGitScheduler, MaskGitTransformer
    from coda_hf.models import CodaVQModel, VQGANModel
    from coda_hf.pipelines.maskgit import CodaMaskGitPipeline

    if models.exists():
        shutil.rmtree(models)
    AutoencoderKL.from_pretrained(work / "runs" / "vae").save_pretrained(models / "photos-vae")
    coda = CodaVQModel.from_pretrained(work / "runs" / "coda").merge_lora()
    coda.register_to_config(latent_tile_size=hw["latent_tile"])
    pipe = CodaMaskGitPipeline(
        tokenizer=coda.eval(), transformer=MaskGitTransformer.from_pretrained(work / "runs" / "prior" / "prior"),
        scheduler=MaskGitScheduler.from_pretrained(work / "runs" / "prior" / "pipeline", subfolder="scheduler"),
    )  # fmt: skip
    pipe.check_components()
    pipe.save_pretrained(models / "photos-prior")
    # 256 px photos by default (a whole number of 64 px tiles), not the VAE's 64 px training size
    side = 4 * coda.size_divisor
    CodaImageProcessor(size={"shortest_edge": side}, size_divisor=coda.size_divisor).save_pretrained(
        models / "photos-prior" / "tokenizer"
    )
    vqgan = VQGANModel.from_pretrained(work / "runs" / "vqgan")
    vqgan.register_to_config(latent_tile_size=hw["latent_tile"])
    vqgan.save_pretrained(models / "photos-vqgan")
    (models / "photos-coda").mkdir()
    return {"photos-vae": models / "photos-vae", "photos-coda": models / "photos-prior" / "tokenizer",
            "photos-vqgan": models / "photos-vqgan", "photos-prior": models / "photos-prior"}  # fmt: skip


def bundle(
    work: Path, hw: dict, config_name: str, vae_workdir: Path, photos_data: Path, bundle_dir: Path, cards_dir: Path
) -> None:
    """Stage ``bundle``: stage the inference checkpoints and demo photos under ``work/bundle``, measure the
    demo figures there (``coda_hf.demo.measure_bundled``, what ``coda-hf demo`` prints), write the model
    cards and ``bundle.json`` files from the measured values, then install all of it into ``bundle_dir``
    (``models/<name>/``, ``photos/``) and ``cards_dir``."""
    import bundled_cards

    from coda_hf.demo import measure_bundled

    staged = work / "bundle"
    dirs = stage_models(work, hw, staged / "models")
    photos = staged / "photos"
    if photos.exists():
        shutil.rmtree(photos)
    shutil.copytree(work / "demo-photos", photos)
    demo = measure_bundled(sorted(photos.glob("*.png")), {k: str(v) for k, v in dirs.items()})
    facts = bundled_cards.collect_facts(work, hw, config_name, vae_workdir, photos_data, demo)
    cards = bundled_cards.write_cards(facts, staged / "cards")
    for name in DESCRIPTIONS:
        info = {"description": DESCRIPTIONS[name], "card": f"{name}.md", **bundled_cards.bundle_metrics(facts, name)}
        if name == "photos-coda":
            info["directory"] = "../photos-prior/tokenizer"
        write_json(staged / "models" / name / "bundle.json", info)
    install(staged, cards, bundle_dir, cards_dir)
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (staged / "models").iterdir()}
    write_json(staged / "bundle.json", {"models": sorted(DESCRIPTIONS), "bytes": sizes, "installed_into": str(bundle_dir)})


def install(staged: Path, cards: list[Path], bundle_dir: Path, cards_dir: Path) -> None:
    """Replace the photo models, the demo photos and the photo model cards in the package."""
    for model in (staged / "models").iterdir():
        target = bundle_dir / "models" / model.name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(model, target)
    if (bundle_dir / "photos").exists():
        shutil.rmtree(bundle_dir / "photos")
    shutil.copytree(staged / "photos", bundle_dir / "photos")
    cards_dir.mkdir(parents=True, exist_ok=True)
    for card in cards:
        shutil.copyfile(card, cards_dir / card.name)
