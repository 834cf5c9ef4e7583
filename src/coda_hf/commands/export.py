"""``coda-hf export onnx``: a saved tokenizer as ONNX graphs (images -> token ids, per-level ids -> images).

Writes ``encoder.onnx``, ``decoder.onnx`` and ``onnx_config.json`` (:mod:`coda_hf.onnx_export`), then
runs both graphs with ONNX Runtime on two synthetic images and compares them with the PyTorch model
(``onnx_check.json``; skip with ``--no-verify``). Exit code 1 when a token id differs. Needs the
``export`` extra (``pip install "coda_hf[export]"``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a saved tokenizer for deployment")
    formats = p.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="ONNX graphs: images -> token ids and token ids -> images")
    onnx.add_argument("--model", required=True, help="saved tokenizer directory (CodaVQModel or VQGANModel)")
    onnx.add_argument("--output-dir", required=True, help="folder for encoder.onnx, decoder.onnx, onnx_config.json")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    onnx.add_argument("--verify-size", type=int, default=64,
                      help="side of the synthetic images of the ONNX Runtime check (rounded down to a multiple "
                           "of the model's size divisor: the downsampling factor, times the latent tile if any)")  # fmt: skip
    onnx.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    onnx.set_defaults(func=run_onnx)


def _check_images(model, size: int):
    """Two smooth seeded ``(3, size, size)`` images in ``[-1, 1]``."""
    import torch

    f = model.size_divisor
    side = max(f, size // f * f)
    gen = torch.Generator().manual_seed(0)
    low = torch.rand(2, model.image_channels, max(1, side // 4), max(1, side // 4), generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


def run_onnx(args) -> int:
    from ..models.loading import load_tokenizer
    from ..onnx_export import export_onnx, verify_onnx

    model = load_tokenizer(args.model).eval()
    written = export_onnx(model, args.output_dir, opset_version=args.opset)
    logger.info("exported %s and %s", written.encoder, written.decoder)
    if args.no_verify:
        return 0
    check = verify_onnx(model, args.output_dir, _check_images(model, args.verify_size))
    (Path(args.output_dir) / "onnx_check.json").write_text(json.dumps(check.to_dict(), indent=2) + "\n")
    logger.info("ONNX Runtime vs PyTorch: %.4f of token ids equal, images within %.2e", check.token_agreement,
                check.max_abs_image_diff)  # fmt: skip
    if check.token_agreement < 1.0:
        logger.error("ONNX Runtime gives different token ids on %.2f%% of positions", 100 * (1 - check.token_agreement))
        return 1
    return 0
