"""``coda-hf reconstruct``: encode images to tokens and decode them back, saving PNGs.

``<output-dir>/<stem>.png`` per input (the processed size: see ``coda-hf tokenize``). Unreadable files are
reported by name, the others still finish, and the exit code is then 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .tokenize import add_common_arguments, iterate_images, load_model_and_processor

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="tokenize and decode images with a saved CODA tokenizer")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="saved CodaVQModel directory")
    p.add_argument("--output-dir", required=True, help="folder for the reconstructed PNGs")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..pipelines.maskgit import tensor_to_pil

    model, processor = load_model_and_processor(args.model, args.resolution)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed, used = [], set()
    with torch.no_grad():
        for i, path, pixels in iterate_images(args.images, processor, not args.no_progress):
            if pixels is None:
                failed.append(path)
                continue
            enc = model.encode(pixels)
            recon = model.decode(enc.indices)  # (1, 3, H, W) in ~[-1, 1]
            stem = Path(path).stem
            name = f"{stem}.png" if stem not in used else f"{stem}_{i}.png"
            used.add(stem)
            tensor_to_pil(recon)[0].save(out_dir / name)
    if failed:
        logger.error("%d of %d image(s) failed: %s", len(failed), len(args.images), ", ".join(map(str, failed)))
        return 1
    return 0
