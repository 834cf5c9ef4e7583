"""``coda-hf tokenize``: images -> discrete token ids of a saved CodaVQModel, in one safetensors file.

File layout: one ``(N,)`` int64 tensor per successfully tokenized image under the key ``tokens_<i>``
(``i`` = position on the command line) and JSON metadata ``"images"``: a list of ``{"key", "path",
"image_size": [H, W], "level_shapes": [[h_l, w_l], ...]}`` plus ``"model"`` and ``"codebook_size"``.
Images are resized/cropped by the model's ``CodaImageProcessor`` (``preprocessor_config.json``).
A file that cannot be read is reported by name; the others still finish and the exit code is 1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="turn images into discrete token ids with a saved CODA tokenizer")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, help="saved CodaVQModel directory")
    p.add_argument("--output", default="tokens.safetensors", help="output .safetensors file")
    add_common_arguments(p)
    p.set_defaults(func=run)


def add_common_arguments(p) -> None:
    """Options shared by ``tokenize`` and ``reconstruct``."""
    p.add_argument("--resolution", type=int, default=None,
                   help="resize the shorter side to this before cropping to a multiple of the downsample factor "
                        "(default: the model's preprocessor_config.json)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_model_and_processor(model_dir: str, resolution: int | None = None):
    """``(CodaVQModel in eval mode, CodaImageProcessor)`` from a saved directory."""
    from ..image_processing import CodaImageProcessor
    from ..models.coda_vq import CodaVQModel

    model = CodaVQModel.from_pretrained(model_dir).eval()
    if (Path(model_dir) / "preprocessor_config.json").is_file():
        processor = CodaImageProcessor.from_pretrained(model_dir)
    else:
        processor = model.default_image_processor()
    if resolution is not None:
        if resolution < model.downsample_factor:
            raise ValueError(f"--resolution {resolution} is smaller than the downsample factor {model.downsample_factor}")
        processor.size = {"shortest_edge": int(resolution)}
    processor.size_divisor = model.downsample_factor
    return model, processor


def iterate_images(paths: list[str], processor, show_progress: bool):
    """Yield ``(position, path, pixel_values (1, 3, H, W) | None)``; unreadable files are logged and yield None."""
    from tqdm.auto import tqdm

    from ..image_io import ImageLoadError, load_image

    bar = tqdm(paths, desc="images", unit="img", disable=not show_progress or len(paths) < 2)
    for i, path in enumerate(bar):
        try:
            pixels = processor(load_image(path), return_tensors="pt")["pixel_values"]
        except (ImageLoadError, ValueError) as e:
            logger.error("skipping %s: %s", path, e)
            yield i, path, None
            continue
        yield i, path, pixels


def run(args) -> int:
    import torch
    from safetensors.torch import save_file

    model, processor = load_model_and_processor(args.model, args.resolution)
    tensors, records, failed = {}, [], []
    with torch.no_grad():
        for i, path, pixels in iterate_images(args.images, processor, not args.no_progress):
            if pixels is None:
                failed.append(path)
                continue
            enc = model.encode(pixels)
            key = f"tokens_{i}"
            tensors[key] = enc.token_ids[0].to(torch.int64).contiguous()  # (N,) level-major
            records.append({
                "key": key, "path": str(path), "image_size": list(pixels.shape[-2:]),
                "level_shapes": [list(idx.shape[-2:]) for idx in enc.indices],
            })  # fmt: skip
    if tensors:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"images": json.dumps(records), "model": str(args.model), "codebook_size": str(model.codebook_size)}
        save_file(tensors, str(out), metadata=metadata)
        logger.info("wrote tokens of %d image(s) to %s", len(tensors), out)
    if failed:
        logger.error("%d of %d image(s) failed: %s", len(failed), len(args.images), ", ".join(map(str, failed)))
        return 1
    return 0
