"""View 6, Generate: MaskGIT sampling from the prior (Chang et al. 2022, arXiv 2202.04200), step by step.

The app runs the package's own :class:`~coda_hf.pipelines.maskgit.CodaMaskGitPipeline` with a scheduler that
records every unmasking step (:class:`RecordingScheduler`: the prior's scheduler plus a record), so the
pictures show exactly what the pipeline did: which tokens each step decided, and the image the model's
full guess at that step decodes to.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..maskgit.scheduler import MaskGitScheduler
from ..pipelines.maskgit import CodaMaskGitPipeline
from ..quantizers.output import unflatten_indices
from .images import side_by_side, to_pil, token_map, upscale


class RecordingScheduler(MaskGitScheduler):
    """:class:`MaskGitScheduler` that keeps each step's output and calls ``on_step(done, total)``."""

    def step(self, logits, step_index, sample, generator=None, return_dict=True):
        out = super().step(logits, step_index, sample, generator=generator, return_dict=True)
        self.record.append((out.prev_sample.clone(), out.pred_original_sample.clone()))  # (B, N) each
        if self.on_step is not None:
            self.on_step(step_index + 1, self.num_inference_steps)
        return out if return_dict else out.to_tuple()


def _level_maps(ids: torch.Tensor, level_shapes, mask_id: int, size: int) -> Image.Image:
    """``(N,)`` ids -> the token grids of every level side by side (masked tokens grey)."""
    levels = unflatten_indices(ids[None], level_shapes)
    return side_by_side(*[token_map(lv[0].clamp(max=mask_id - 1), size, masked=lv[0] == mask_id) for lv in levels])


def order_image(decided_at: torch.Tensor, level_shapes, steps: int, size: int) -> Image.Image:
    """``(N,)`` step at which each token was decided -> per level grid, dark (early) to bright (late)."""
    from matplotlib import colormaps

    colors = (colormaps["viridis"](np.linspace(0, 1, max(steps, 2)))[:, :3] * 255).astype(np.uint8)
    tiles = []
    for lv in unflatten_indices(decided_at[None], level_shapes):
        grid = colors[lv[0].numpy()]  # (h, w, 3)
        cell = max(1, size // max(grid.shape[:2]))
        tiles.append(Image.fromarray(grid).resize((grid.shape[1] * cell, grid.shape[0] * cell), Image.NEAREST))
    return side_by_side(*tiles)


def stack_rows(rows: list[tuple[Image.Image, str]], label_width: int = 150, gap: int = 6, top: int = 32) -> Image.Image:
    """``(picture, label)`` rows under each other on white, each label written left of its picture (``top``:
    room for the label Gradio draws over the image's corner)."""
    from PIL import ImageDraw

    width = label_width + max(im.width for im, _ in rows)
    canvas = Image.new("RGB", (width, top + sum(im.height + gap for im, _ in rows)), "white")
    draw, y = ImageDraw.Draw(canvas), top
    for im, label in rows:
        canvas.paste(im, (label_width, y))
        for k, line in enumerate(label.split("\n")):
            draw.text((4, y + 4 + 14 * k), line, fill=(30, 30, 30))
        y += im.height + gap
    return canvas


@torch.no_grad()
def generate(prior: CodaMaskGitPipeline, steps: int, class_label: int | None, guidance: float, seed: int,
             on_step=None) -> dict:  # fmt: skip
    """Sample one image with ``steps`` unmasking steps; returns the image and the step-by-step record."""
    scheduler = RecordingScheduler.from_config(prior.scheduler.config)
    scheduler.record, scheduler.on_step = [], on_step
    pipe = CodaMaskGitPipeline(tokenizer=prior.tokenizer, transformer=prior.transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(class_labels=None if class_label is None else [class_label], num_inference_steps=int(steps),
               guidance_scale=float(guidance), generator=torch.Generator().manual_seed(int(seed)))  # fmt: skip
    transformer = prior.transformer
    mask_id, level_shapes = transformer.mask_token_id, [tuple(s) for s in transformer.config.level_shapes]
    kept = torch.stack([prev[0] for prev, _ in scheduler.record])  # (T, N) decided ids (mask elsewhere)
    guesses = torch.stack([pred[0] for _, pred in scheduler.record])  # (T, N) the full guess at each step
    decided_at = (kept != mask_id).float().argmax(dim=0)  # (N,) first step with the token decided
    latent = (max(h for h, _ in level_shapes), max(w for _, w in level_shapes))
    images = prior.tokenizer.decode(unflatten_indices(guesses, level_shapes), latent_size=latent).clamp(-1, 1)
    n, rows = kept.shape[1], []
    for t in range(len(kept)):
        grids = _level_maps(kept[t], level_shapes, mask_id, 96)
        done = int((kept[t] != mask_id).sum())
        rows.append((side_by_side(grids, upscale(to_pil(images[t]), grids.height)),
                     f"step {t + 1}/{len(kept)}:\n{done}/{n} tokens decided"))  # fmt: skip
    return {"image": upscale(out.images[0]), "order": order_image(decided_at, level_shapes, len(kept), 96),
            "steps": stack_rows(rows), "rows": [label for _, label in rows], "tokens": out.tokens[0],
            "decided_at": decided_at}  # fmt: skip


def tab(models, ctx) -> None:
    import gradio as gr

    from .ui import handler

    with gr.Tab("Generate", id="generate"):
        prior = models.prior
        if prior is None:
            gr.Markdown("No MaskGIT prior is loaded.")
            return
        classes = int(prior.transformer.config.num_classes)
        gr.Markdown(f"MaskGIT sampling from the prior over {prior.transformer.config.num_tokens} tokens: every step "
                    "predicts all masked tokens and keeps the most confident ones. Below: each step's "
                    "decided tokens (grey: still masked) and the image its full guess decodes to.")  # fmt: skip
        with gr.Row():
            steps = gr.Slider(1, 16, value=8, step=1, label="unmasking steps", elem_id="gen-steps")
            label = gr.Dropdown(["unconditional", *[f"class {c}" for c in range(classes)]], value="unconditional",
                                label="class", elem_id="gen-class")  # fmt: skip
            guidance = gr.Slider(1.0, 5.0, value=1.0, step=0.5, label="guidance scale", elem_id="gen-guidance")
            seed = gr.Number(0, precision=0, label="seed", elem_id="gen-seed")
        button = gr.Button("Generate", variant="primary", elem_id="gen-button")
        with gr.Row():
            image = gr.Image(label="sample", interactive=False, elem_id="gen-image")
            order = gr.Image(label="unmasking order per level (dark: early, bright: late)", interactive=False,
                             elem_id="gen-order")  # fmt: skip
        gallery = gr.Image(label="step by step: each level's decided tokens (grey: masked), then the decoded full guess",
                           interactive=False, elem_id="gen-steps-image")  # fmt: skip

    @handler
    def run(n_steps, class_name, scale, seed_value, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        progress(0, desc="unmasking")
        class_label = None if class_name == "unconditional" else int(class_name.split()[-1])
        out = generate(prior, int(n_steps), class_label, float(scale), int(seed_value or 0),
                       on_step=lambda done, total: progress(done / total, desc=f"step {done}/{total}"))  # fmt: skip
        return out["image"], out["order"], out["steps"]

    button.click(run, [steps, label, guidance, seed], [image, order, gallery])
