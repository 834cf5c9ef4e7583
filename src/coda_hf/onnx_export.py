"""ONNX export of a discrete tokenizer (:class:`~coda_hf.models.CodaVQModel`, :class:`~coda_hf.models.VQGANModel`).

Two graphs, both with a dynamic batch and image size, written by :func:`export_onnx`:

* ``encoder.onnx``: ``pixel_values`` ``(B, 3, H, W)`` float32 in ``[-1, 1]`` (``H``, ``W`` multiples of the
  downsampling factor) -> ``token_ids`` ``(B, N)`` int64, what ``model.encode(images).token_ids`` returns
  (levels coarse to fine, each row-major);
* ``decoder.onnx``: one ``indices_<l>`` ``(B, h_l, w_l)`` int64 input per quantization level -> ``images``
  ``(B, 3, H, W)`` float32 in ``[-1, 1]``, what ``model.decode(indices)`` returns. The levels come as
  separate inputs because their sizes depend on the image size: a graph with one ``(B, N)`` input would
  have to derive them from the token values. :func:`split_token_ids` cuts ``token_ids`` into them
  (numpy only, the rule is in ``onnx_config.json``).

``onnx_config.json`` records the input and output names, the downsampling factor and the level-size rule
(``scales``, ``reference``): level ``l`` of an ``(h, w)`` latent has side
``max(1, (2 s_l n + S) // (2 S))`` along a side ``n`` (``S = reference``; the last level is ``(h, w)``).
A tile-wise tokenizer (``latent_tile_size`` ``T > 0``, also recorded) applies the rule to one ``T x T`` tile:
image sides are multiples of ``T`` times the downsampling factor and each level input is the mosaic of the
tiles' maps, ``(B, nh * h_l, nw * w_l)``.
:func:`verify_onnx` runs both graphs with ONNX Runtime and compares them with the PyTorch model.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE, CONFIG_FILE = "encoder.onnx", "decoder.onnx", "onnx_config.json"


class _TokenEncoder(nn.Module):
    """``pixel_values -> token_ids`` (the graph of ``encoder.onnx``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixel_values).token_ids


class _TokenDecoder(nn.Module):
    """``indices_0, ..., indices_{L-1} -> images`` (the graph of ``decoder.onnx``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *indices: torch.Tensor) -> torch.Tensor:
        to_codes = self.model.quantizer.indices_to_codes  # no range check: a graph holds no data-dependent branch
        if self.model.latent_tile_size:  # level mosaics, as the model's own decode takes them
            latents = self.model.mosaics_to_latents(list(indices), to_codes)
        else:
            latents = to_codes(list(indices))
        return self.model.decode_latents(latents).clamp(-1.0, 1.0)


def level_rule(model: nn.Module) -> dict:
    """``{"scales", "reference", "latent_tile_size"}``: a multi-scale quantizer's scales (``None``: every level
    is ``(h, w)``) and the tokenizer's latent tile (0: none; else each level is a mosaic of the tiles' maps)."""
    scales = getattr(model.quantizer, "scales", None)
    return {"scales": None if scales is None else list(scales), "reference": None if scales is None else scales[-1],
            "latent_tile_size": int(getattr(model, "latent_tile_size", 0))}  # fmt: skip


def _level_shapes(h: int, w: int, scales: list[int] | None, num_levels: int) -> list[tuple[int, int]]:
    """The level rule of the module docstring for an ``(h, w)`` latent (or tile)."""
    if scales is None:
        return [(h, w)] * num_levels
    ref = scales[-1]
    side = lambda s, n: n if s == ref else max(1, (2 * s * n + ref) // (2 * ref))  # noqa: E731
    return [(side(s, h), side(s, w)) for s in scales]


def split_token_ids(token_ids: np.ndarray, latent_size: tuple[int, int], scales: list[int] | None,
                    num_levels: int = 1, latent_tile_size: int = 0) -> list[np.ndarray]:  # fmt: skip
    """``(B, N)`` token ids -> the per-level ``(B, h_l, w_l)`` inputs of ``decoder.onnx`` (numpy only).

    ``scales``: ``onnx_config.json``'s ``scales`` (``None``: ``num_levels`` levels of the full latent size);
    ``latent_tile_size``: its ``latent_tile_size`` (``T > 0``: level ``l`` is the ``(h / T, w / T)`` mosaic of
    one ``T x T`` tile's level).
    """
    h, w = latent_size
    if latent_tile_size:
        if h % latent_tile_size or w % latent_tile_size:
            raise ValueError(f"a {latent_size} latent does not split into {latent_tile_size} x {latent_tile_size} tiles")
        nh, nw = h // latent_tile_size, w // latent_tile_size
        shapes = [(nh * a, nw * b) for a, b in _level_shapes(latent_tile_size, latent_tile_size, scales, num_levels)]
    else:
        shapes = _level_shapes(h, w, scales, num_levels)
    if token_ids.ndim != 2 or token_ids.shape[1] != sum(a * b for a, b in shapes):
        raise ValueError(f"token_ids of shape {token_ids.shape} do not fit the levels {shapes} of a {latent_size} latent")
    offsets = np.cumsum([0] + [a * b for a, b in shapes])
    return [token_ids[:, o : o + a * b].reshape(-1, a, b) for o, (a, b) in zip(offsets, shapes)]


def _require(*modules: str) -> None:
    """``ImportError`` naming the ``export`` extra when an optional package is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install \"coda_hf[export]\"")


def _example_latent_side(model: nn.Module) -> int:
    """The smallest square latent side whose levels all have sides >= 2 (torch.export specialises sizes of 1);
    with a latent tile, two tiles (the level mosaics are then at least two tiles' maps wide)."""
    if getattr(model, "latent_tile_size", 0):
        return 2 * model.latent_tile_size
    for side in range(2, 4097):
        if all(min(shape) >= 2 for shape in model.quantizer.level_shapes(side, side)):
            return side
    raise ValueError("no latent size up to 4096 gives every quantization level a side of at least 2")


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote (paths as strings, JSON-safe)."""

    encoder: str
    decoder: str
    config: str


def _dynamic_shapes(model: nn.Module, names: list[str]) -> tuple[dict, list[dict]]:
    """torch.export dims of ``pixel_values`` and of each level input: batch and image size dynamic; with a
    latent tile, image sides are ``f * T`` times a tile count and level ``l``'s sides a multiple of it."""
    f, tile, Dim = model.downsample_factor, model.latent_tile_size, torch.export.Dim  # noqa: N806
    batch = Dim("batch", min=1, max=4096)
    if not tile:
        height, width = Dim("latent_height", min=1, max=4096), Dim("latent_width", min=1, max=4096)
        return {0: batch, 2: f * height, 3: f * width}, [{0: batch, 1: Dim(f"{n}_height", min=1), 2: Dim(f"{n}_width", min=1)}
                                                          for n in names]  # fmt: skip
    nh, nw = Dim("tiles_high", min=1, max=1024), Dim("tiles_wide", min=1, max=1024)
    shapes = model.quantizer.level_shapes(tile, tile)
    return {0: batch, 2: f * tile * nh, 3: f * tile * nw}, [{0: batch, 1: h * nh, 2: w * nw} for h, w in shapes]


def export_onnx(model: nn.Module, output_dir: str | Path, opset_version: int | None = None) -> OnnxExport:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``onnx_config.json`` for ``model`` into ``output_dir``.

    Needs the ``onnx`` and ``onnxscript`` packages (``pip install "coda_hf[export]"``); the model is put in
    eval mode. Raises ``ValueError`` for a model without a quantizer.
    """
    if not hasattr(model, "quantizer") or not hasattr(model, "downsample_factor"):
        raise ValueError(f"export_onnx needs a discrete tokenizer (CodaVQModel, VQGANModel); got {type(model).__name__}")
    _require("onnx", "onnxscript")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    f, side = model.downsample_factor, _example_latent_side(model)
    images = torch.zeros(2, model.image_channels, side * f, side * f)
    with torch.no_grad():
        indices = model.encode(images).indices
    names = [f"indices_{level}" for level in range(len(indices))]
    image_dims, level_dims = _dynamic_shapes(model, names)
    graphs = (
        (_TokenEncoder(model), (images,), ["pixel_values"], ["token_ids"], (image_dims,), out / ENCODER_FILE),
        (_TokenDecoder(model), tuple(indices), names, ["images"], (tuple(level_dims),), out / DECODER_FILE),  # *indices: one input
    )  # fmt: skip
    for module, args, inputs, outputs, dims, path in graphs:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for m in model.modules():  # codebook keys: constants computed by PyTorch (same bits as eager)
                if hasattr(m, "constant_keys"):
                    stack.enter_context(m.constant_keys())
            torch.onnx.export(module.eval(), args, str(path), dynamo=True, input_names=inputs, output_names=outputs,
                              dynamic_shapes=dims, opset_version=opset_version, verbose=False)  # fmt: skip
        logger.info("wrote %s", path)
    config = {
        "encoder": {"file": ENCODER_FILE, "inputs": ["pixel_values"], "outputs": ["token_ids"]},
        "decoder": {"file": DECODER_FILE, "inputs": names, "outputs": ["images"]},
        "downsample_factor": f, "num_levels": len(names), "codebook_size": int(model.codebook_size),
        **level_rule(model),
    }  # fmt: skip
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return OnnxExport(encoder=str(out / ENCODER_FILE), decoder=str(out / DECODER_FILE), config=str(out / CONFIG_FILE))


@dataclass
class OnnxCheck:
    """:func:`verify_onnx`'s comparison of ONNX Runtime with the PyTorch model on the same images."""

    token_agreement: float  # share of token positions with the same id (1.0: identical)
    max_abs_image_diff: float  # decoder graph vs model.decode, both from the PyTorch token ids

    def to_dict(self) -> dict:
        return asdict(self)


def onnx_sessions(output_dir: str | Path, threads: int | None = None):
    """``(encoder, decoder)`` ONNX Runtime CPU sessions of an :func:`export_onnx` directory.

    ``threads``: intra-op threads (``None``: ONNX Runtime's default).
    """
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    out = Path(output_dir)
    return tuple(ort.InferenceSession(str(out / name), options, providers=["CPUExecutionProvider"])
                 for name in (ENCODER_FILE, DECODER_FILE))  # fmt: skip


def verify_onnx(model: nn.Module, output_dir: str | Path, images: torch.Tensor, sessions=None) -> OnnxCheck:
    """Run both graphs of ``output_dir`` with ONNX Runtime (CPU) on ``(B, 3, H, W)`` ``images`` and compare
    them with the eager model: token ids of the encoder graph, and the decoder graph's images from the
    PyTorch token ids. ``sessions``: reuse :func:`onnx_sessions`' pair."""
    encoder, decoder = sessions or onnx_sessions(output_dir)
    model = model.eval()
    x = images.detach().float().cpu()
    with torch.no_grad():
        enc = model.encode(x)
        recon = model.decode(enc.indices)
    ids = torch.from_numpy(encoder.run(None, {"pixel_values": x.numpy()})[0])
    onnx_recon = decoder.run(None, {f"indices_{i}": idx.numpy() for i, idx in enumerate(enc.indices)})[0]
    agreement = float((ids == enc.token_ids).float().mean()) if ids.shape == enc.token_ids.shape else 0.0
    return OnnxCheck(agreement, float((torch.from_numpy(onnx_recon) - recon).abs().max()))
