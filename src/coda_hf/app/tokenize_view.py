"""View 1, Tokenize: a photo through each tokenizer, level by level, next to the continuous VAE.

For a multi-scale tokenizer the reconstruction after level ``k`` decodes the partial sum ``f_hat_k`` of the
residual quantizer (VAR, Tian et al. 2024; ``quantizer.cumulative_codes``); the last one is the tokenizer's
own reconstruction. Bits per pixel: ``tokens * log2(codebook size) / pixels``. PSNR / SSIM on 8-bit images
(:mod:`coda_hf.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..metrics.image_quality import psnr, ssim, to_uint8_range
from . import charts
from .images import DISPLAY_SIZE, bits, to_pil, token_map, upscale


@dataclass
class Reconstruction:
    """One model's reconstruction of the photo and its numbers."""

    name: str
    image: Image.Image
    psnr: float
    ssim: float
    summary: str  # what the latent is: tokens and bits, or a continuous tensor
    bpp: float | None = None  # bits per pixel (discrete tokenizers)
    tokens: int | None = None
    token_maps: list[Image.Image] = field(default_factory=list)  # per level: its token grid
    levels: list[Image.Image] = field(default_factory=list)  # per level: the reconstruction so far
    level_captions: list[str] = field(default_factory=list)
    level_psnr: list[float] = field(default_factory=list)
    indices: list[torch.Tensor] | None = None  # the tokens, one (1, h_l, w_l) map per level


def _quality(recon: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3, H, W)`` reconstructions of ``(1, 3, H, W)`` -> ``(B,)`` PSNR and SSIM on 8-bit values."""
    ref = to_uint8_range(x).expand(recon.shape[0], -1, -1, -1)
    out = to_uint8_range(recon)
    quality_ssim = ssim(out, ref) if min(x.shape[-2:]) >= 11 else torch.full((recon.shape[0],), float("nan"))
    return psnr(out, ref), quality_ssim


def partial_latents(model, indices: list[torch.Tensor]) -> list[torch.Tensor]:
    """The quantized latent after each level, coarse to fine (one entry for a single-level quantizer)."""
    quantizer = model.quantizer
    if hasattr(quantizer, "cumulative_codes"):
        return quantizer.cumulative_codes(indices)
    return [model.indices_to_latents(indices)]


@torch.no_grad()
def run_tokenizer(name: str, model, x: torch.Tensor) -> Reconstruction:
    """Encode ``(1, 3, R, R)`` in ``[-1, 1]``, decode, measure; the token map of every level (no level decodes)."""
    enc = model.encode(x)
    recon = model.decode_latents(enc.quantized).clamp(-1, 1)  # = model.decode(enc.indices)
    peaks, sims = _quality(recon, x)
    height, width = x.shape[-2:]
    tokens, k = int(enc.token_ids.shape[1]), int(model.codebook_size)
    bpp = tokens * bits(k) / (height * width)
    result = Reconstruction(
        name=name, image=to_pil(recon), psnr=float(peaks[0]), ssim=float(sims[0]), bpp=bpp, tokens=tokens,
        summary=f"{tokens} tokens x {bits(k):.0f} bits ({k} codes) = {bpp:.4f} bits/pixel", indices=enc.indices,
    )  # fmt: skip
    running = 0
    for level, idx in enumerate(enc.indices):
        running += idx[0].numel()
        result.token_maps.append(token_map(idx[0], DISPLAY_SIZE))
        result.level_captions.append(f"level {level + 1}: {idx.shape[-2]}x{idx.shape[-1]} tokens ({running} so far)")
    return result


def decode_levels(result: Reconstruction, model, x: torch.Tensor):
    """Add the reconstruction after each level (decoding the partial sums, coarse to fine) and its PSNR,
    one level at a time: a generator that yields after each level (the last level is the full reconstruction)."""
    for latent in partial_latents(model, result.indices):  # (1, C, h, w) each
        with torch.no_grad():
            recon = model.decode_latents(latent).clamp(-1, 1)
        result.level_psnr.append(float(_quality(recon, x)[0][0]))
        result.levels.append(upscale(to_pil(recon)))
        yield result


@torch.no_grad()
def run_continuous_vae(vae, x: torch.Tensor) -> Reconstruction:
    """The continuous VAE's reconstruction from its posterior mean (the upper bound a tokenizer approaches)."""
    latent = vae.encode(x).latent_dist.mode()  # (1, C, h, w)
    recon = vae.decode(latent).sample.clamp(-1, 1)
    peaks, sims = _quality(recon, x)
    c, h, w = latent.shape[1:]
    return Reconstruction(name="continuous VAE", image=to_pil(recon), psnr=float(peaks[0]), ssim=float(sims[0]),
                          summary=f"continuous latent {c}x{h}x{w} (floats, not tokens)")  # fmt: skip


def psnr_by_level_chart(results: list[Reconstruction], vae: Reconstruction | None) -> str:
    series = {r.name: [(i + 1, p) for i, p in enumerate(r.level_psnr)] for r in results if r.level_psnr}
    if not series:
        return "<p>PSNR after each level: decoding the levels...</p>"
    hline = ("continuous VAE", vae.psnr) if vae is not None else None
    return charts.lines(series, "PSNR after each level", "levels decoded (coarse to fine)", "PSNR (dB)", hline=hline)


def summary_html(results: list[Reconstruction]) -> str:
    rows = "".join(
        f"<tr><td>{r.name}</td><td>{r.summary}</td><td>{r.psnr:.2f}</td><td>{r.ssim:.4f}</td></tr>" for r in results
    )
    return ("<table class='coda-table'><tr><th>model</th><th>latent</th><th>PSNR (dB)</th><th>SSIM</th></tr>"
            f"{rows}</table>")  # fmt: skip


def _view(results: list[Reconstruction], vae: Reconstruction | None, photo: Image.Image, x: torch.Tensor) -> dict:
    compared = ([vae] if vae else []) + results
    side = [(upscale(photo), f"original {x.shape[-1]}x{x.shape[-2]}")]
    side += [(upscale(r.image), f"{r.name}: PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.3f}"
              + (f", {r.bpp:.3f} bpp" if r.bpp is not None else "")) for r in compared]  # fmt: skip
    return {
        "side_by_side": side,
        "token_maps": {r.name: list(zip(r.token_maps, r.level_captions)) for r in results},
        "levels": {r.name: [(im, f"after {c}, PSNR {p:.2f} dB") for im, c, p in zip(r.levels, r.level_captions, r.level_psnr)]
                   for r in results},  # fmt: skip
        "table": summary_html(compared),
        "curve": psnr_by_level_chart(results, vae),
        "results": compared,
    }


def tokenize_steps(models, photo: Image.Image, x: torch.Tensor):
    """What the Tokenize view shows for one photo (``x``: its ``(1, 3, R, R)`` tensor), step by step: each
    model's reconstruction and token maps as it finishes (one encode and decode each), then one more picture
    per level decoded. Every step yields the whole view so far."""
    results, vae = [], None
    for name, model in models.tokenizers().items():
        results.append(run_tokenizer(name, model, x))
        yield _view(results, vae, photo, x)
    if models.vae is not None:
        vae = run_continuous_vae(models.vae, x)
        yield _view(results, vae, photo, x)
    for result, model in zip(results, models.tokenizers().values()):
        for _ in decode_levels(result, model, x):
            yield _view(results, vae, photo, x)


def tokenize(models, photo: Image.Image, x: torch.Tensor) -> dict:
    """The complete Tokenize view (the last of :func:`tokenize_steps`)."""
    *_, last = tokenize_steps(models, photo, x)
    return last


def tab(models, ctx) -> None:
    """The Tokenize tab; its outputs refresh whenever the shared photo changes (``ctx.on_photo``)."""
    import gradio as gr

    from .ui import handler

    with gr.Tab("Tokenize", id="tokenize"):
        gr.Markdown("Each multi-scale level adds tokens: the token map of every level (one colour per code), and "
                    "the image the running sum of the levels decodes to, coarse to fine.")  # fmt: skip
        table = gr.HTML(elem_id="tokenize-table", css_template=charts.TABLE_CSS)
        side = gr.Gallery(object_fit="contain", label="original and reconstructions", columns=4, height=300,
                          elem_id="tokenize-side")  # fmt: skip
        galleries = []
        for name in models.tokenizers():
            levels = len(models.tokenizers()[name].level_shapes(models.resolution, models.resolution))
            for kind, what in (("tokens", "token map of each level"), ("levels", "reconstruction after each level")):
                height = 60 + 230 * math.ceil(levels / 5)  # about one 5-image row per 5 levels, no empty space
                galleries.append((kind, name, gr.Gallery(object_fit="contain", label=f"{name}: {what}", height=height,
                                                         columns=min(levels, 5), elem_id=f"tokenize-{kind}-{name.lower()}")))  # fmt: skip
        curve = gr.HTML(elem_id="tokenize-curve")

    keys = {"tokens": "token_maps", "levels": "levels"}

    @handler
    def run(photo):  # a generator: the reconstructions and token maps first, then the level-by-level decodes
        if photo is None:
            yield ["<p>Pick or upload a photo.</p>", [], *[[] for _ in galleries], ""]
            return
        if not galleries and models.vae is None:
            yield ["<p>No tokenizer or VAE is loaded.</p>", [], ""]
            return
        for out in tokenize_steps(models, ctx.image(photo), ctx.tensor(photo)):
            if not any(out["levels"].values()):  # a model finished: everything may change
                yield [out["table"], out["side_by_side"], *[out[keys[k]].get(n, []) for k, n, _ in galleries],
                       out["curve"]]  # fmt: skip
            else:  # a level was decoded: only the level reconstructions and the curve change
                yield [gr.skip(), gr.skip(), *[out["levels"][n] if k == "levels" else gr.skip() for k, n, _ in galleries],
                       out["curve"]]  # fmt: skip

    ctx.on_photo.append((run, [ctx.photo], [table, side, *[g for _, _, g in galleries], curve]))
