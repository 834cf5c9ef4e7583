"""View 3, Latent space: the 2-D latent of a VAE with Fashion-MNIST test images scattered by class.

The points are the posterior means ``E_q[z|x]`` of the test images (a live forward of the model). A click
decodes the clicked point ``z`` (the decoder's mean image); a second click draws the line between the two
points and decodes evenly spaced points along it (the interpolation the atlas's smooth latent space allows).
"""

# No ``from __future__ import annotations`` here: Gradio must read the ``gr.SelectData`` annotation of the
# click handler below as a class, and ``gradio`` is only imported inside ``tab()``.

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.fashion_mnist import FASHION_MNIST_LABELS
from .images import side_by_side, to_pil, upscale

CANVAS = 480
MARGIN = 16
INTERPOLATION_STEPS = 8
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")  # fmt: skip


@dataclass
class LatentMap:
    """The scattered test set and the pixel <-> latent mapping of the drawn canvas."""

    points: np.ndarray  # (N, 2) posterior means
    labels: np.ndarray  # (N,)
    limit: float  # the canvas shows [-limit, limit]^2

    def to_pixel(self, z) -> tuple[float, float]:
        scale = (CANVAS - 2 * MARGIN) / (2 * self.limit)
        return MARGIN + (z[0] + self.limit) * scale, MARGIN + (self.limit - z[1]) * scale  # y grows downwards

    def to_latent(self, x: float, y: float) -> tuple[float, float]:
        scale = (CANVAS - 2 * MARGIN) / (2 * self.limit)
        return (x - MARGIN) / scale - self.limit, self.limit - (y - MARGIN) / scale


@torch.no_grad()
def latent_map(model, images: np.ndarray, labels: np.ndarray) -> LatentMap:
    """Encode ``(N, 28, 28)`` uint8 images to their 2-D posterior means (the model must have ``latent_dim=2``)."""
    if int(model.config.latent_dim) != 2:
        raise ValueError(f"the latent-space view needs a 2-D latent; this model has latent_dim={model.config.latent_dim}")
    x = torch.from_numpy(images).float().div(255.0)[:, None]
    points = model.encode(x).latent_dist.mean.flatten(1).numpy()  # (N, 2)
    limit = float(np.quantile(np.abs(points), 0.995)) * 1.1 + 1e-3
    return LatentMap(points=points, labels=np.asarray(labels), limit=limit)


def draw_map(lmap: LatentMap, clicks: list[tuple[float, float]]) -> Image.Image:
    """The scatter (one colour per class), the axes through 0, the clicked points and the line between two."""
    image = Image.new("RGB", (CANVAS, CANVAS), "white")
    draw = ImageDraw.Draw(image)
    cx, cy = lmap.to_pixel((0.0, 0.0))
    draw.line([(MARGIN, cy), (CANVAS - MARGIN, cy)], fill=(200, 200, 200))
    draw.line([(cx, MARGIN), (cx, CANVAS - MARGIN)], fill=(200, 200, 200))
    draw.text((CANVAS - MARGIN - 70, cy + 3), f"z1 = {lmap.limit:.1f}", fill=(120, 120, 120))
    draw.text((cx + 4, MARGIN - 12), f"z2 = {lmap.limit:.1f}", fill=(120, 120, 120))
    for (zx, zy), label in zip(lmap.points, lmap.labels):
        x, y = lmap.to_pixel((zx, zy))
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=CLASS_COLORS[int(label) % 10])
    if len(clicks) == 2:
        draw.line([lmap.to_pixel(clicks[0]), lmap.to_pixel(clicks[1])], fill=(0, 0, 0), width=2)
    for z in clicks:
        x, y = lmap.to_pixel(z)
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=(0, 0, 0), width=3)
    return image


def legend_html() -> str:
    items = "".join(f"<span style='margin-right:10px'><span style='color:{c}'>&#9679;</span> {name}</span>"
                    for c, name in zip(CLASS_COLORS, FASHION_MNIST_LABELS))  # fmt: skip
    return f"<div class='latent-legend'>{items}</div>"


@torch.no_grad()
def decode_points(model, points: list[tuple[float, float]]) -> list[Image.Image]:
    z = torch.tensor(points, dtype=torch.float32)  # (P, 2)
    return [to_pil(image) for image in model.decode(z).sample]


def click(model, lmap: LatentMap, clicks: list, x: float, y: float) -> dict:
    """A click at canvas pixel ``(x, y)``: a new first point, or (after one) the second point of a line."""
    z = lmap.to_latent(x, y)
    clicks = [clicks[0], z] if len(clicks) == 1 else [z]
    decoded = upscale(decode_points(model, [z])[0], 224)
    strip = None
    if len(clicks) == 2:
        a, b = np.array(clicks[0]), np.array(clicks[1])
        line = [tuple(a + t * (b - a)) for t in np.linspace(0.0, 1.0, INTERPOLATION_STEPS)]
        strip = side_by_side(*[upscale(im, 112) for im in decode_points(model, line)])
    text = f"z = ({z[0]:.3f}, {z[1]:.3f})"
    if len(clicks) == 2:
        text = f"line from ({clicks[0][0]:.3f}, {clicks[0][1]:.3f}) to ({z[0]:.3f}, {z[1]:.3f}), {INTERPOLATION_STEPS} points"
    return {"map": draw_map(lmap, clicks), "decoded": decoded, "interpolation": strip, "clicks": clicks, "text": text}


def tab(models, ctx, demo) -> None:
    import gradio as gr

    from .ui import handler

    with gr.Tab("Latent space", id="latent"):
        if models.latent_vae is None or models.fashion is None:
            gr.Markdown("No 2-D Fashion-MNIST VAE (or no test images) is loaded.")
            return
        lmap = latent_map(models.latent_vae, models.fashion["images"], models.fashion["labels"])
        gr.Markdown(f"The {len(lmap.points)} bundled Fashion-MNIST test images at their posterior means "
                    "E[z|x] in the VAE's 2-D latent. **Click anywhere** to decode that point; a second click "
                    "interpolates along the line between the two.")  # fmt: skip
        gr.HTML(legend_html())
        clicks = gr.State([])
        with gr.Row():
            canvas = gr.Image(value=draw_map(lmap, []), label="latent plane (click)", interactive=False,
                              height=CANVAS, width=CANVAS, elem_id="latent-map")  # fmt: skip
            with gr.Column():
                info = gr.Textbox(label="clicked", elem_id="latent-info")
                decoded = gr.Image(label="decoded point", interactive=False, elem_id="latent-decoded")
        strip = gr.Image(label="interpolation (two clicks)", interactive=False, elem_id="latent-interpolation")

    @handler
    def on_click(state, evt: gr.SelectData):
        x, y = evt.index
        out = click(models.latent_vae, lmap, state, float(x), float(y))
        return out["map"], out["decoded"], out["interpolation"], out["clicks"], out["text"]

    canvas.select(on_click, [clicks], [canvas, decoded, strip, clicks, info])
