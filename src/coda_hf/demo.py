"""The package's main job end to end, offline, on its bundled models and photos (``coda-hf demo``).

1. tokenize the bundled 256 px photos with the CODA tokenizer (``photos-coda``) and the from-scratch VQGAN
   at the same bits (``photos-vqgan``): tokens per image and per level, bits per pixel;
2. reconstruct them with the continuous VAE (``photos-vae``, the ceiling), CODA and the VQGAN;
3. measure PSNR / SSIM (per photo, 8-bit), FD-EffNet (over the photos' 64 px tiles) and codebook
   utilization (:func:`reconstruction_metrics`: the same function writes the model cards' demo figures);
4. sample tiles from the MaskGIT prior (``photos-prior``);
5. write ``reconstructions.png``, ``prior_samples.png``, ``tokens.safetensors`` (``coda-hf decode`` reads it),
   ``metrics.json`` and ``index.html`` to the output folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .bundled import DEFAULT_PRIOR as PRIOR
from .bundled import DEFAULT_TOKENIZER as CODA

logger = logging.getLogger(__name__)

VAE, VQGAN = "photos-vae", "photos-vqgan"
RECONSTRUCTION_MODELS = (VAE, CODA, VQGAN)  # the columns of the comparison, left to right
OUTPUT_NAMES = ("reconstructions.png", "prior_samples.png", "tokens.safetensors", "metrics.json", "index.html")
FD_TILE = 64  # FD-EffNet over the photos' 64 px tiles: the tokenizers' training crop, and more samples
FD_NOTE = ("FD-EffNet over the 64 px tiles of the demo photos: a few dozen samples, so it is biased upward; "
           "compare the models with each other, not with figures on other image sets")  # fmt: skip


@dataclass
class DemoModels:
    """The bundled models of the demo (eval mode): ``reconstruction`` maps a name of
    :data:`RECONSTRUCTION_MODELS` to its model; ``prior`` is the MaskGIT pipeline (or ``None``)."""

    reconstruction: dict
    prior: object | None


def load_models(dirs: dict[str, str] | None = None, prior: bool = True) -> DemoModels:
    """Load the demo's models from ``dirs`` (name -> directory; default: :func:`coda_hf.bundled_model`)."""
    from diffusers import AutoencoderKL

    from .bundled import bundled_model
    from .models import CodaVQModel, VQGANModel
    from .pipelines.maskgit import CodaMaskGitPipeline

    dirs = dirs or {name: bundled_model(name) for name in (*RECONSTRUCTION_MODELS, PRIOR)}
    classes = {VAE: AutoencoderKL, CODA: CodaVQModel, VQGAN: VQGANModel}
    models = {name: classes[name].from_pretrained(dirs[name]).eval() for name in RECONSTRUCTION_MODELS}
    pipe = CodaMaskGitPipeline.from_pretrained(dirs[PRIOR]) if prior else None
    return DemoModels(models, pipe)


def load_photos(paths: list[Path]) -> torch.Tensor:
    """``(B, 3, H, W)`` pixel values in ``[-1, 1]`` of same-size photos (the package's one image path)."""
    from .image_io import load_image, pil_to_tensor

    images = [pil_to_tensor(load_image(str(p))) for p in paths]
    if len({tuple(t.shape) for t in images}) != 1:
        raise ValueError(f"the demo photos must share one size; got {sorted({tuple(t.shape) for t in images})}")
    return torch.stack(images)


@torch.no_grad()
def reconstruct(models: DemoModels, images: torch.Tensor, progress: bool = True) -> tuple[dict, dict]:
    """``({name: (B, 3, H, W) reconstruction in [-1, 1]}, {tokenizer name: CodaEncoderOutput of the batch})``."""
    from tqdm.auto import tqdm

    recons, encodings = {}, {}
    for name in tqdm(RECONSTRUCTION_MODELS, desc="reconstruct", unit="model", disable=not progress):
        model = models.reconstruction[name]
        if name == VAE:
            recons[name] = model.decode(model.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
            continue
        parts = [model.encode(x[None]) for x in images]  # one photo at a time: memory stays flat
        encodings[name] = _concat_encodings(parts)
        recons[name] = torch.cat([model.decode(p.indices) for p in parts])
    return recons, encodings


def _concat_encodings(parts: list):
    from .models.outputs import CodaEncoderOutput

    return CodaEncoderOutput(
        indices=[torch.cat([p.indices[level] for p in parts]) for level in range(len(parts[0].indices))],
        quantized=torch.cat([p.quantized for p in parts]), latents=torch.cat([p.latents for p in parts]),
        token_ids=torch.cat([p.token_ids for p in parts]),
    )  # fmt: skip


def token_layout(model, height: int, width: int) -> dict:
    """Tokens of one ``(H, W)`` image: total, per level, per latent tile, bits per token and per pixel."""
    per_level = [h * w for h, w in model.level_shapes(height, width)]
    tile = model.latent_tile_size
    tiles = (height // model.size_divisor) * (width // model.size_divisor) if tile else 1
    bits = math.log2(model.codebook_size)
    total = sum(per_level)
    return {
        "image_size": [height, width], "tokens_per_image": total, "tokens_per_level": per_level,
        "level_shapes": [list(s) for s in model.level_shapes(height, width)], "latent_tiles": tiles,
        "tokens_per_tile": total // tiles, "codebook_size": model.codebook_size, "bits_per_token": bits,
        "bits_per_pixel": total * bits / (height * width),
    }  # fmt: skip


@torch.no_grad()
def reconstruction_metrics(
    images: torch.Tensor, recons: dict, encodings: dict, codebook_sizes: dict[str, int], features=None
) -> dict:
    """Per model: mean PSNR / SSIM over the photos (8-bit, as saved PNGs), FD-EffNet over their 64 px tiles
    (:data:`FD_NOTE`) and, for the tokenizers, utilization / perplexity of the photos' tokens."""
    from .metrics import CodebookStatistics, FrechetStatistics, effnet_features, psnr, ssim, to_uint8_range
    from .models.latent_tiles import to_tiles

    features = features or effnet_features()
    ref8 = to_uint8_range(images)

    def tile_statistics(x8: torch.Tensor) -> FrechetStatistics:  # (B, 3, H, W) in 0..255 -> 64 px tiles
        return FrechetStatistics.from_features(features((to_tiles(x8, FD_TILE) / 127.5 - 1.0).float()))

    reference = tile_statistics(ref8)
    out = {}
    for name, recon in recons.items():
        rec8 = to_uint8_range(recon)
        per_photo = psnr(rec8, ref8)
        out[name] = {"psnr": float(per_photo.mean()), "ssim": float(ssim(rec8, ref8).mean()),
                     "fd_effnet": float(reference.distance(tile_statistics(rec8))),
                     "psnr_per_photo": [float(v) for v in per_photo]}  # fmt: skip
        if name in encodings:
            stats = CodebookStatistics(codebook_sizes[name])
            stats.update(encodings[name].indices)
            codes = stats.compute()
            out[name].update({k: codes[k] for k in ("utilization", "perplexity", "codes_used", "tokens_per_image")})
    return out


def measure_bundled(photo_paths: list[Path], dirs: dict[str, str] | None = None, progress: bool = False) -> dict:
    """:func:`reconstruction_metrics` of the bundled models on ``photo_paths`` (what the model cards quote)."""
    models = load_models(dirs, prior=False)
    images = load_photos(photo_paths)
    recons, encodings = reconstruct(models, images, progress=progress)
    sizes = {n: models.reconstruction[n].codebook_size for n in encodings}
    return reconstruction_metrics(images, recons, encodings, sizes)


@torch.no_grad()
def sample_prior(pipe, num_samples: int, num_inference_steps: int, seed: int, progress: bool = True) -> list:
    """``num_samples`` unconditional samples of the prior (PIL), reproducible in ``seed``."""
    pipe.set_progress_bar_config(disable=not progress, desc="prior samples")
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=num_samples, num_inference_steps=num_inference_steps, generator=generator).images


def image_grid(rows: list[list[Image.Image]], scale: int = 1) -> Image.Image:
    """Equal-size images in a grid (``rows`` of columns), each enlarged ``scale`` times (nearest)."""
    w, h = rows[0][0].size
    grid = Image.new("RGB", (w * scale * len(rows[0]), h * scale * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.resize((w * scale, h * scale), Image.Resampling.NEAREST), (c * w * scale, r * h * scale))
    return grid


def photo_credits(paths: list[Path]) -> list[dict]:
    """Source and licence of each photo, from ``photos.json`` next to it (``{"photos": [{"file", ...}]}``)."""
    credits = {}
    for folder in {Path(p).parent for p in paths}:
        info = folder / "photos.json"
        if info.is_file():
            credits.update({e["file"]: e for e in json.loads(info.read_text(encoding="utf-8"))["photos"]})
    return [credits.get(Path(p).name, {"file": Path(p).name, "license": "unknown"}) for p in paths]


def run_demo(
    output_dir: str | Path, overwrite: bool = False, progress: bool = True, num_samples: int = 16,
    num_inference_steps: int = 8, seed: int = 0, dirs: dict[str, str] | None = None, photos: list[Path] | None = None,
) -> dict:  # fmt: skip
    """Run the demo (module docstring) and write its outputs to ``output_dir``; returns ``metrics.json``'s content.

    Existing outputs are refused unless ``overwrite`` (checked before any work); every file is written
    atomically. ``dirs`` / ``photos``: other model directories / photos than the bundled ones.
    """
    from .bundled import bundled_model, bundled_photos
    from .output_files import check_output_dir

    out = check_output_dir(output_dir, OUTPUT_NAMES, overwrite=overwrite)
    start = time.perf_counter()
    paths = [Path(p) for p in (photos or bundled_photos())]
    if not paths:
        raise FileNotFoundError("this installation ships no demo photos (coda_hf/bundled/photos is empty)")
    dirs = dirs or {name: bundled_model(name) for name in (*RECONSTRUCTION_MODELS, PRIOR)}
    models = load_models(dirs)
    images = load_photos(paths)
    recons, encodings = reconstruct(models, images, progress)
    sizes = {n: models.reconstruction[n].codebook_size for n in encodings}
    metrics = reconstruction_metrics(images, recons, encodings, sizes)
    samples = sample_prior(models.prior, num_samples, num_inference_steps, seed, progress)
    report = {
        "photos": photo_credits(paths), "image_size": list(images.shape[-2:]),
        "tokens": {n: token_layout(models.reconstruction[n], *images.shape[-2:]) for n in encodings},
        "metrics": metrics, "fd_note": FD_NOTE, "models": {n: str(d) for n, d in dirs.items()},
        "prior": {"samples": num_samples, "num_inference_steps": num_inference_steps, "seed": seed,
                  "sample_size": list(samples[0].size)},
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    report["wall_s"] = round(time.perf_counter() - start, 2)  # the work; writing the files below is not counted
    write_outputs(out, report, images, recons, encodings[CODA], samples, paths, dirs[CODA])
    return report


def write_outputs(out: Path, report: dict, images, recons: dict, coda_encoding, samples, paths, coda_dir) -> None:
    """The demo's files (:data:`OUTPUT_NAMES`), each written atomically."""
    from .output_files import atomic_output, write_text_atomic
    from .pipelines.maskgit import tensor_to_pil
    from .tokens_file import TokenizedImage, TokensFile, model_reference, save_tokens

    columns = [tensor_to_pil(images)] + [tensor_to_pil(recons[n]) for n in RECONSTRUCTION_MODELS]
    with atomic_output(out / "reconstructions.png") as tmp:  # rows: photos; columns: original, VAE, CODA, VQGAN
        image_grid([list(row) for row in zip(*columns)]).save(tmp, format="PNG")
    side = math.ceil(math.sqrt(len(samples)))
    rows = [samples[i : i + side] for i in range(0, len(samples), side)]
    rows[-1] = rows[-1] + [Image.new("RGB", samples[0].size, "white")] * (side - len(rows[-1]))
    with atomic_output(out / "prior_samples.png") as tmp:
        image_grid(rows, scale=2).save(tmp, format="PNG")
    size = tuple(images.shape[-2:])
    levels = [tuple(i.shape[-2:]) for i in coda_encoding.indices]
    items = [TokenizedImage(f"tokens_{i}", str(p), coda_encoding.token_ids[i], size, levels) for i, p in enumerate(paths)]
    save_tokens(out / "tokens.safetensors", TokensFile(items, model=model_reference(coda_dir),
                                                      codebook_size=int(report["tokens"][CODA]["codebook_size"])))  # fmt: skip
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "index.html", html_report(report))


def summary_lines(report: dict) -> list[str]:
    """The demo's printed summary: token layout and bits per pixel, then the metrics table."""
    h, w = report["image_size"]
    lines = [f"{len(report['photos'])} bundled photos, {h} x {w} px (held out from every model's training):"]
    lines += [f"  {p['file']}: {p.get('source', '?')}, licence {p['license']}" for p in report["photos"]]
    for name, t in report["tokens"].items():
        per_tile = f" ({t['latent_tiles']} latent tiles x {t['tokens_per_tile']})" if t["latent_tiles"] > 1 else ""
        lines.append(f"{name}: {t['tokens_per_image']:,} tokens per image{per_tile}, {t['codebook_size']:,} codes "
                     f"({t['bits_per_token']:g} bits each): {t['bits_per_pixel']:.3f} bits per pixel")  # fmt: skip
        lines.append("  tokens per level: " + ", ".join(f"{n:,}" for n in t["tokens_per_level"]))
    lines.append(f"{'model':<14}{'PSNR dB':>9}{'SSIM':>8}{'FD-EffNet':>11}{'utilization':>13}{'bpp':>7}")
    for name, m in report["metrics"].items():
        util = f"{m['utilization']:.1%}" if "utilization" in m else "-"
        bpp = f"{report['tokens'][name]['bits_per_pixel']:.2f}" if name in report["tokens"] else "cont."
        lines.append(f"{name:<14}{m['psnr']:>9.2f}{m['ssim']:>8.4f}{m['fd_effnet']:>11.2f}{util:>13}{bpp:>7}")
    lines.append(f"({report['fd_note']})")
    return lines


def html_report(report: dict) -> str:
    """A short self-contained HTML page of the demo (the PNGs next to it)."""
    import html

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{m['psnr']:.2f}</td><td>{m['ssim']:.4f}</td><td>{m['fd_effnet']:.2f}</td>"
        f"<td>{m['utilization']:.1%}</td></tr>" if "utilization" in m else
        f"<tr><td>{html.escape(n)}</td><td>{m['psnr']:.2f}</td><td>{m['ssim']:.4f}</td><td>{m['fd_effnet']:.2f}</td><td>-</td></tr>"
        for n, m in report["metrics"].items()
    )  # fmt: skip
    credits = "".join(
        f"<li>{html.escape(p['file'])}: {html.escape(str(p.get('source', '')))}, licence {html.escape(str(p['license']))}</li>"
        for p in report["photos"]
    )  # fmt: skip
    summary = html.escape("\n".join(summary_lines(report)[: 1 + len(report["photos"]) + 2 * len(report["tokens"])]))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>coda-hf demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 10px;text-align:right}}
img{{max-width:100%;image-rendering:pixelated}}</style></head><body>
<h1>coda-hf demo</h1>
<pre>{summary}</pre>
<h2>Reconstructions</h2><p>Rows: the photos. Columns: original, continuous VAE ({VAE}), CODA ({CODA}),
VQGAN from scratch at the same bits ({VQGAN}).</p><img src="reconstructions.png" alt="reconstructions">
<table><tr><th>model</th><th>PSNR dB</th><th>SSIM</th><th>FD-EffNet</th><th>utilization</th></tr>{rows}</table>
<p>{html.escape(report['fd_note'])}.</p>
<h2>Samples of the MaskGIT prior ({PRIOR})</h2>
<p>{report['prior']['samples']} samples, {report['prior']['num_inference_steps']} unmasking steps, seed {report['prior']['seed']}
(shown at 2x).</p><img src="prior_samples.png" alt="prior samples">
<h2>Photos</h2><ul>{credits}</ul><p>Tokens of each photo: tokens.safetensors (<code>coda-hf decode</code> reads it);
every figure: metrics.json. Demo wall time {report['wall_s']:.1f} s on {report['torch_threads']} torch thread(s).</p>
</body></html>
"""
