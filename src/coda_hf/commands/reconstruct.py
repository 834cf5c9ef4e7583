"""``coda-hf reconstruct``: encode images to tokens and decode them back, saving PNGs.

One PNG per input under ``--output-dir``, named by :func:`coda_hf.output_files.distinct_output_names`
(the inputs' folder tree below their common folder, so equal file names never overwrite each other), at
the processed size (see ``coda-hf tokenize``). Existing outputs are refused unless ``--overwrite``; each PNG
is written atomically. Unreadable files are reported by name, the others still finish, and the exit code
is then 1.
"""

from __future__ import annotations

import logging

from ..bundled import DEFAULT_TOKENIZER
from .tokenize import (
    add_common_arguments,
    check_resolution,
    default_model,
    iterate_images,
    load_model_and_processor,
    report_failures,
)

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="tokenize and decode images with a saved CODA tokenizer")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default=None, help=f"saved CodaVQModel directory (default: the bundled {DEFAULT_TOKENIZER})")
    p.add_argument("--output-dir", required=True, help="folder for the reconstructed PNGs")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..image_io import tensor_to_pil
    from ..output_files import atomic_output, check_output_dir, distinct_output_names

    check_resolution(args.resolution)
    names = distinct_output_names(args.images, ".png")
    out_dir = check_output_dir(args.output_dir, names, overwrite=args.overwrite)
    model, processor = load_model_and_processor(default_model(args.model), args.resolution)
    failed = []
    with torch.no_grad():
        for i, path, pixels in iterate_images(args.images, processor, not args.no_progress):
            if pixels is None:
                failed.append(path)
                continue
            recon = model.decode(model.encode(pixels).indices)  # (1, 3, H, W) in [-1, 1]
            with atomic_output(out_dir / names[i]) as tmp:
                tensor_to_pil(recon[0]).save(tmp, format="PNG")
    return report_failures(failed, len(args.images))
