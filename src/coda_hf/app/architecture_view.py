"""View 2, Architecture: the loaded model's encoder, latent / quantizer levels and decoder as blocks.

Every block's tensor shapes come from a real forward pass with hooks (on the current photo), its parameter
count from the module, and for LoRA-adapted convs (peft, :mod:`coda_hf.models.lora`) the rank and the LoRA
share of the block's parameters. Hovering (or focusing) a block shows them.
"""

from __future__ import annotations

import html
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..models.lora import ADAPTER_NAME, lora_layers

GROUPS = ("encoder", "latent", "decoder")
_TRACES = weakref.WeakKeyDictionary()  # model -> (input shape, its traced blocks)
CSS = """
.arch-row { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
.arch-group { display: flex; flex-direction: column; gap: 6px; min-width: 190px; }
.arch-group h4 { margin: 0 0 4px 0; }
.arch-block { position: relative; border-radius: 6px; padding: 6px 8px; cursor: help; border: 1px solid #8884;
  font-size: 12px; }
.arch-encoder { background: #dbeafe; } .arch-latent { background: #fde68a; } .arch-decoder { background: #dcfce7; }
.arch-title { font-weight: 600; color: #111; } .arch-sub { color: #333; }
.arch-badge { position: absolute; right: 6px; top: 6px; background: #7c3aed; color: white; border-radius: 4px;
  padding: 0 4px; font-size: 10px; }
.arch-tip { display: none; position: absolute; left: 100%; top: 0; z-index: 50; margin-left: 8px; width: 300px;
  background: #111; color: #eee; padding: 8px; border-radius: 6px; font-family: monospace; font-size: 11px;
  white-space: normal; }
.arch-block:hover .arch-tip, .arch-block:focus .arch-tip { display: block; }
.arch-summary { margin-top: 10px; font-size: 13px; }
"""


@dataclass
class Block:
    """One drawn block: a module (or a quantizer level) with what the forward pass saw."""

    group: str
    name: str
    kind: str
    params: int
    input_shape: tuple | None = None
    output_shape: tuple | None = None
    lora: dict | None = None  # rank, layers, params, share
    note: str = ""


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _lora_info(module: nn.Module) -> dict | None:
    layers = lora_layers(module)
    if not layers:
        return None
    params = sum(p.numel() for layer in layers.values() for n, p in layer.named_parameters() if "lora_" in n)
    ranks = sorted({int(layer.r[ADAPTER_NAME]) for layer in layers.values()})
    return {"rank": "/".join(map(str, ranks)), "layers": len(layers), "params": params, "share": params / max(_count(module), 1)}


def _expand(group: str, prefix: str, module: nn.Module) -> list[tuple[Block, nn.Module]]:
    """The children of ``module`` with parameters as blocks (``ModuleList`` items one by one)."""
    found = []
    children = list(module.named_children()) or [("", module)]
    for name, child in children:
        items = list(enumerate(child)) if isinstance(child, nn.ModuleList) else [(None, child)]
        for i, item in items:
            if _count(item) == 0:
                continue
            label = ".".join(s for s in (prefix, name, None if i is None else str(i)) if s)
            found.append((Block(group, label, type(item).__name__, _count(item), lora=_lora_info(item)), item))
    return found


def _shape(value) -> tuple | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return None


def _traced(blocks: list[tuple[Block, nn.Module]], run) -> list[Block]:
    """Run ``run()`` with forward hooks recording each block's input and output shapes."""

    order: dict[int, int] = {}

    def hook(i, block):
        def record(_module, args, output):
            order.setdefault(i, len(order))  # sibling blocks: the order they finish is the order they run
            block.input_shape = block.input_shape or _shape(args)
            block.output_shape = _shape(output)

        return record

    handles = [module.register_forward_hook(hook(i, block)) for i, (block, module) in enumerate(blocks)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    ranked = sorted(range(len(blocks)), key=lambda i: order.get(i, len(blocks) + i))
    return [blocks[i][0] for i in ranked]


def _quantizer_blocks(model, latents: torch.Tensor) -> list[Block]:
    """One block per quantization level: what it quantizes and the token grid it writes."""
    q = model.quantizer
    if hasattr(q, "encode_levels"):
        inputs, indices = q.encode_levels(latents)
    else:
        inputs, indices = [latents], q(latents).indices
    shared = getattr(q, "shared_codebook", False)
    blocks = []
    for level, (inp, idx) in enumerate(zip(inputs, indices)):
        inner = q.level_quantizer(level) if hasattr(q, "level_quantizer") else q
        note = f"{type(inner).__name__}, {q.codebook_size} codes" + (" (one codebook shared by all levels)" if shared else "")
        owns = level == 0 or not shared
        kind = f"{idx.shape[-2]}x{idx.shape[-1]} tokens" + ("" if owns else ", level 1's codebook")
        blocks.append(Block("latent", f"level {level + 1}", kind, _count(inner) if owns else 0, tuple(inp.shape),
                            tuple(idx.shape), note=note))  # fmt: skip
    return blocks


def _conv_stack(model) -> tuple[list, list]:
    """Encoder and decoder blocks of a CodaVQModel (its ``vae``), VQGANModel, AutoencoderKL or DenseVAE."""
    parts = getattr(model, "vae", model)
    enc, dec = _expand("encoder", "encoder", parts.encoder), _expand("decoder", "decoder", parts.decoder)
    if getattr(parts, "quant_conv", None) is not None:
        enc.append((Block("encoder", "quant_conv", "Conv2d", _count(parts.quant_conv)), parts.quant_conv))
    if getattr(parts, "post_quant_conv", None) is not None:
        dec.insert(0, (Block("decoder", "post_quant_conv", "Conv2d", _count(parts.post_quant_conv)), parts.post_quant_conv))
    return enc, dec


def trace_model(model, x: torch.Tensor) -> list[Block]:
    """Blocks of a CodaVQModel / VQGANModel / AutoencoderKL / DenseVAE with shapes from a forward on ``x``."""
    enc, dec = _conv_stack(model)
    state = {}
    if hasattr(model, "quantizer"):  # a discrete tokenizer

        def run():
            state["encoded"] = model.encode(x)
            model.decode_latents(state["encoded"].quantized)

        blocks = _traced(enc + dec, run)
        middle = _quantizer_blocks(model, state["encoded"].latents)
    else:  # a continuous VAE: the posterior is the latent

        def run():
            state["posterior"] = model.encode(x).latent_dist
            model.decode(state["posterior"].mode())

        blocks = _traced(enc + dec, run)
        posterior = state["posterior"]
        middle = [Block("latent", "posterior q(z|x)", "DiagonalGaussianDistribution", 0, blocks[len(enc) - 1].output_shape,
                        tuple(posterior.mean.shape), note="mean and log-variance; z = mean + std * eps")]  # fmt: skip
    return blocks[: len(enc)] + middle + blocks[len(enc) :]


def _fmt_shape(shape) -> str:
    return "?" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _block_html(b: Block) -> str:
    tip = [html.escape(b.kind), f"in {_fmt_shape(b.input_shape)} &rarr; out {_fmt_shape(b.output_shape)}",
           f"parameters: {b.params:,}"]  # fmt: skip
    if b.note:
        tip.append(html.escape(b.note))
    badge = ""
    if b.lora:
        tip.append(f"LoRA rank {b.lora['rank']} on {b.lora['layers']} convs: {b.lora['params']:,} parameters "
                   f"({100 * b.lora['share']:.1f}% of the block)")  # fmt: skip
        badge = f"<span class='arch-badge'>LoRA r{b.lora['rank']}</span>"
    return (f"<div class='arch-block arch-{b.group}' tabindex='0' data-block='{html.escape(b.name)}'>{badge}"
            f"<div class='arch-title'>{html.escape(b.name)}</div>"
            f"<div class='arch-sub'>{html.escape(b.kind)}{f' &middot; {b.params:,} params' if b.params else ''}</div>"
            f"<div class='arch-tip'>{'<br>'.join(tip)}</div></div>")  # fmt: skip


def architecture_html(title: str, model, blocks: list[Block]) -> str:
    """The blocks as three columns (encoder, latent / quantizer, decoder) and a parameter summary."""
    columns = []
    for group in GROUPS:
        items = "".join(_block_html(b) for b in blocks if b.group == group)
        heading = {"encoder": "Encoder", "latent": "Latent / quantizer", "decoder": "Decoder"}[group]
        columns.append(f"<div class='arch-group'><h4>{heading}</h4>{items}</div>")
    total = _count(model)
    trainable = sum(b.lora["params"] for b in blocks if b.lora)
    lora = f"; LoRA: {trainable:,} ({100 * trainable / max(total, 1):.2f}%)" if trainable else ""
    return (f"<div class='arch-row'>{'&rarr;'.join(columns)}</div>"
            f"<div class='arch-summary'>{html.escape(title)}: {total:,} parameters{lora}</div>")  # fmt: skip


def _choices(models) -> dict:
    """Display name -> (model, example input) for every loaded model."""
    found = {"CODA tokenizer": models.coda, "VQGAN": models.vqgan, "continuous VAE": models.vae,
             "Fashion-MNIST VAE (2-D latent)": models.latent_vae}  # fmt: skip
    for beta, model in models.beta_vaes.items():
        found[f"Fashion-MNIST beta-VAE (beta {beta:g})"] = model
    return {name: model for name, model in found.items() if model is not None}


def render(models, name: str, photo_tensor: torch.Tensor | None) -> str:
    """The architecture HTML of the model called ``name`` (a forward on the photo, or a blank input)."""
    model = _choices(models).get(name)
    if model is None:
        return f"<p>No model called {html.escape(str(name))} is loaded.</p>"
    if hasattr(model, "config") and "latent_dim" in model.config:  # DenseVAE: a Fashion-MNIST test image
        x = torch.zeros(1, *model.image_shape)
        if models.fashion is not None:
            x = torch.from_numpy(models.fashion["images"][:1]).float().div(255.0)[:, None]
    else:
        x = photo_tensor if photo_tensor is not None else torch.zeros(1, 3, models.resolution, models.resolution)
    key = tuple(x.shape)  # shapes and counts do not depend on the pixels: one trace per model and input size
    cached = _TRACES.get(model)
    if cached is None or cached[0] != key:
        cached = (key, trace_model(model, x))
        _TRACES[model] = cached
    return architecture_html(name, model, cached[1])


def tab(models, ctx) -> None:
    import gradio as gr

    from .ui import handler

    names = list(_choices(models))
    with gr.Tab("Architecture", id="architecture"):
        gr.Markdown("Encoder, latent / quantizer levels and decoder of the chosen model. **Hover a block** for "
                    "its tensor shapes (from a forward pass on the current photo), parameters and LoRA rank.")  # fmt: skip
        choice = gr.Radio(names, value=names[0] if names else None, label="model", elem_id="arch-model")
        out = gr.HTML(elem_id="arch-html", css_template=CSS)

    @handler
    def run(name, photo):
        return render(models, name, ctx.tensor(photo) if photo is not None else None)

    choice.change(run, [choice, ctx.photo], out)
    ctx.on_photo.append((run, [choice, ctx.photo], out))
