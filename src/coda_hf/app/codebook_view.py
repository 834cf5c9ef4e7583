"""View 4, Codebook lookup: one latent position through every quantization level.

For the clicked position: the encoder's latent vector ``z``; at each level the vector that level quantizes
(the residual left by the levels before it, resampled to the level's grid), the chosen code and, for the
attention quantizer (CODA), its top candidates with their softmax weights ``softmax(q k^T / sqrt(d))``; for a
nearest-neighbour quantizer, the nearest codes and their distances; the residual ``|z - f_hat_k|`` after each
level; and the codebook projected on its first two principal components with this image's usage counts.
"""

# No ``from __future__ import annotations`` here: Gradio must read the ``gr.SelectData`` annotation of the
# click handler below as a class, and ``gradio`` is only imported inside ``tab()``.

import hashlib
import html
import math
import weakref
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

from ..metrics.plots import pca_project
from . import charts
from .images import upscale

TOP_K = 5


@dataclass
class LevelLookup:
    """What level ``level`` did at the clicked position."""

    level: int
    grid: tuple[int, int]  # (h_l, w_l)
    cell: tuple[int, int]  # (row, column) on that grid
    input_norm: float  # |what this level quantized| at the cell
    code: int
    candidates: list[tuple[int, float]]  # (code, softmax weight) or (code, distance)
    score: str  # "softmax weight" or "distance"
    residual_after: float  # |z - f_hat_level| at the clicked latent position


def codebook_values(quantizer) -> torch.Tensor:
    """``(K, C)``: every code of a single-level quantizer in latent space (its ``indices_to_codes``)."""
    k = int(quantizer.codebook_size)
    return quantizer.indices_to_codes([torch.arange(k).view(1, 1, k)])[0, :, 0].T  # (1, C, 1, K) -> (K, C)


def _candidates(inner, vector: torch.Tensor) -> tuple[list[tuple[int, float]], str]:
    """Top codes for one ``(C,)`` level input: attention weights (CODA) or nearest-code distances."""
    if hasattr(inner, "queries") and hasattr(inner, "keys"):
        weights = inner.logits(inner.queries(vector[None]), inner.keys()).softmax(dim=-1)[0]  # (K,)
        top = weights.topk(min(TOP_K, weights.numel()))
        return [(int(i), float(w)) for w, i in zip(top.values, top.indices)], "softmax weight"
    distances = (codebook_values(inner) - vector[None]).norm(dim=1)  # (K,)
    top = distances.topk(min(TOP_K, distances.numel()), largest=False)
    return [(int(i), float(d)) for d, i in zip(top.values, top.indices)], "distance"


def _levels(model, latents: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Each level's input, codes and the reconstruction so far (a single-level quantizer has one level)."""
    q = model.quantizer
    if hasattr(q, "encode_levels"):
        inputs, indices = q.encode_levels(latents)
        return inputs, indices, q.cumulative_codes(indices)
    out = q(latents)
    return [latents], out.indices, [out.quantized]


_ENCODED = weakref.WeakKeyDictionary()  # model -> (image key, its encoding): clicks on one photo reuse it
_VALUES = weakref.WeakKeyDictionary()  # quantizer -> its codebook values


def _encoded(model, x: torch.Tensor) -> tuple:
    """``(latents, level inputs, indices, partial sums)`` of ``x``, cached for the last image of each model."""
    key = (tuple(x.shape), hashlib.sha1(x.detach().float().contiguous().numpy().tobytes()).hexdigest())
    cached = _ENCODED.get(model)
    if cached is None or cached[0] != key:
        latents = model.encode_latents(x)  # (1, C, h, w)
        cached = (key, (latents, *_levels(model, latents)))
        _ENCODED[model] = cached
    return cached[1]


@torch.no_grad()
def lookup(model, x: torch.Tensor, row: int, col: int) -> dict:
    """The lookup at latent position ``(row, col)`` of the ``(1, 3, R, R)`` image ``x``."""
    latents, inputs, indices, partial = _encoded(model, x)
    h, w = latents.shape[-2:]
    row, col = min(max(row, 0), h - 1), min(max(col, 0), w - 1)
    z = latents[0, :, row, col]  # (C,)
    levels = []
    for level, (inp, idx, f_hat) in enumerate(zip(inputs, indices, partial)):
        hl, wl = idx.shape[-2:]
        r, c = row * hl // h, col * wl // w
        inner = model.quantizer.level_quantizer(level) if hasattr(model.quantizer, "level_quantizer") else model.quantizer
        candidates, score = _candidates(inner, inp[0, :, r, c])
        levels.append(LevelLookup(level + 1, (hl, wl), (r, c), float(inp[0, :, r, c].norm()), int(idx[0, r, c]),
                                  candidates, score, float((z - f_hat[0, :, row, col]).norm())))  # fmt: skip
    return {"z": z, "latent_size": (h, w), "position": (row, col), "levels": levels, "indices": indices,
            "level_inputs": [inp[0, :, lv.cell[0], lv.cell[1]] for inp, lv in zip(inputs, levels)]}  # fmt: skip


def levels_html(result: dict) -> str:
    rows = []
    for lv in result["levels"]:
        cands = ", ".join(f"<b>{c}</b>: {s:.3f}" if c == lv.code else f"{c}: {s:.3f}" for c, s in lv.candidates)
        rows.append(f"<tr><td>{lv.level}</td><td>{lv.grid[0]}x{lv.grid[1]}</td><td>{lv.cell}</td><td>{lv.input_norm:.3f}</td>"
                    f"<td><b>{lv.code}</b></td><td>{cands} <i>({lv.score})</i></td><td>{lv.residual_after:.3f}</td></tr>")  # fmt: skip
    z = result["z"]
    head = (f"<p>latent position {result['position']} of {result['latent_size'][0]}x{result['latent_size'][1]}; "
            f"encoder vector z ({z.numel()} channels, |z| = {float(z.norm()):.3f}): "
            f"<code>{html.escape(', '.join(f'{v:.2f}' for v in z.tolist()[:32]))}</code></p>")  # fmt: skip
    return (head + "<table class='coda-table'><tr><th>level</th><th>grid</th><th>cell</th><th>|input|</th>"
            "<th>code</th><th>top candidates</th><th>|z - f&#770;| after</th></tr>" + "".join(rows) + "</table>")


def residual_charts(result: dict) -> str:
    """The encoder vector's channels and the residual norm level by level, as two SVG charts."""
    z = result["z"].float().tolist()
    norms = [float(result["z"].norm())] + [lv.residual_after for lv in result["levels"]]
    return charts.row(charts.bars(z, "encoder vector z at the position", "channel", "value"),
                      charts.lines({"|z - f_hat|": list(enumerate(norms))}, "residual after each level",
                                   "levels quantized", "norm"))  # fmt: skip


def _values(inner) -> torch.Tensor:
    """The codebook values ``(K, C)`` (cached: the app's models are frozen)."""
    if inner not in _VALUES:
        _VALUES[inner] = codebook_values(inner).float()
    return _VALUES[inner]


def codebook_image(model, result: dict, size: tuple[int, int] = (440, 400)) -> Image.Image:
    """Codes on the codebook's first two principal axes (grey), this image's used codes (blue, area ~ count),
    each level's input (orange cross) with an arrow to its chosen code (red, level number)."""
    inner = model.quantizer.level_quantizer(0) if hasattr(model.quantizer, "level_quantizer") else model.quantizer
    values = _values(inner)
    codes_2d, inputs_2d = pca_project(values, torch.stack(result["level_inputs"]).float())  # (K, 2), (L, 2) on the codebook's axes
    counts = torch.bincount(torch.cat([i.reshape(-1) for i in result["indices"]]), minlength=len(values))
    everything = torch.cat([codes_2d, inputs_2d])
    low, high = everything.min(0).values, everything.max(0).values
    span = (high - low).clamp_min(1e-6)
    width, height = size
    top = 4

    def pixel(p):
        return (12 + float((p[0] - low[0]) / span[0]) * (width - 24), top + 8 + float((high[1] - p[1]) / span[1]) * (height - top - 20))

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    radius = 1.5 if len(values) <= 4096 else 0.5
    for p in codes_2d:
        x, y = pixel(p)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(170, 170, 170))
    peak = float(counts.max()) if counts.numel() else 1.0
    for code in torch.nonzero(counts).flatten().tolist():
        x, y = pixel(codes_2d[code])
        r = 1.5 + 6 * math.sqrt(float(counts[code]) / peak)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(37, 99, 235))
    for lv, point in zip(result["levels"], inputs_2d):
        (ix, iy), (cx, cy) = pixel(point), pixel(codes_2d[lv.code])
        draw.line([(ix, iy), (cx, cy)], fill=(245, 158, 11), width=1)
        draw.line([(ix - 3, iy - 3), (ix + 3, iy + 3)], fill=(245, 158, 11), width=2)
        draw.line([(ix - 3, iy + 3), (ix + 3, iy - 3)], fill=(245, 158, 11), width=2)
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], outline=(220, 38, 38), width=2)
        draw.text((cx + 5, cy - 12), str(lv.level), fill=(220, 38, 38))
    return image


def marked_image(photo: Image.Image, result: dict, display: int) -> Image.Image:
    """The photo (upscaled to ``display``) with the clicked latent cell and each level's cell outlined."""
    image = upscale(photo, display).copy()
    draw = ImageDraw.Draw(image)
    for lv in result["levels"]:
        sy, sx = image.height / lv.grid[0], image.width / lv.grid[1]
        r, c = lv.cell
        draw.rectangle([c * sx, r * sy, (c + 1) * sx - 1, (r + 1) * sy - 1], outline=(255, 64, 64), width=1)
    h, w = result["latent_size"]
    r, c = result["position"]
    sy, sx = image.height / h, image.width / w
    draw.rectangle([c * sx, r * sy, (c + 1) * sx - 1, (r + 1) * sy - 1], outline=(255, 255, 0), width=2)
    return image


__all__ = ["LevelLookup", "codebook_image", "codebook_values", "levels_html", "lookup", "marked_image", "residual_charts"]


DISPLAY = 384


def click_view(model, photo: Image.Image, x: torch.Tensor, px: float, py: float, display: int = DISPLAY) -> tuple:
    """A click at ``(px, py)`` on the photo shown at ``display`` pixels -> the view's four outputs."""
    h, w = model.latent_size(*x.shape[-2:])
    shown = upscale(photo, display)
    row, col = int(py * h / shown.height), int(px * w / shown.width)
    result = lookup(model, x, row, col)
    return marked_image(photo, result, display), levels_html(result), residual_charts(result), codebook_image(model, result)


def tab(models, ctx) -> None:
    import gradio as gr

    from .ui import handler

    names = list(models.tokenizers())
    with gr.Tab("Codebook lookup", id="codebook"):
        if not names:
            gr.Markdown("No discrete tokenizer is loaded.")
            return
        gr.Markdown("**Click a position of the photo.** The encoder's vector there goes through every level: each "
                    "level quantizes what the levels before it left (the residual), picks a code (the attention "
                    "quantizer's top candidates and softmax weights are listed), and the residual shrinks.")  # fmt: skip
        choice = gr.Radio(names, value=names[0], label="tokenizer", elem_id="codebook-model")
        with gr.Row():
            image = gr.Image(label="photo (click a position)", interactive=False, elem_id="codebook-image")
            codebook = gr.Image(label="codebook on its 2-D PCA: grey codes, blue = used by this photo (area ~ count), "
                                "orange x = each level's input, red = its chosen code (level number)",
                                interactive=False, elem_id="codebook-pca")  # fmt: skip
        table = gr.HTML(elem_id="codebook-table", css_template=charts.TABLE_CSS)
        residual = gr.HTML(elem_id="codebook-residual")

    def run(name, photo, px, py):
        if photo is None:
            return None, "<p>Pick or upload a photo.</p>", "", None
        return click_view(models.tokenizers()[name], ctx.image(photo), ctx.tensor(photo), px, py)

    @handler
    def centre(name, photo):  # a new photo or model: look up the centre
        return run(name, photo, DISPLAY / 2, DISPLAY / 2)

    @handler
    def on_click(name, photo, evt: gr.SelectData):
        return run(name, photo, *map(float, evt.index))

    outputs = [image, table, residual, codebook]
    choice.change(centre, [choice, ctx.photo], outputs)
    image.select(on_click, [choice, ctx.photo], outputs)
    ctx.on_photo.append((centre, [choice, ctx.photo], outputs))
