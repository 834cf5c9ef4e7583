"""``coda-hf tokenize``: images -> discrete token ids of a saved CodaVQModel, in one safetensors file.

The file layout is :mod:`coda_hf.tokens_file` (``coda-hf decode`` turns it back into images). Images are
resized/cropped by the model's ``CodaImageProcessor`` (``preprocessor_config.json``). The output location is
checked before any image is encoded; an existing file is kept unless ``--overwrite``; the file is written
atomically. A file that cannot be read is reported by name; the others still finish and the exit code is 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..bundled import DEFAULT_TOKENIZER

logger = logging.getLogger(__name__)



def default_model(model: str | None) -> str:
    """``--model``, or the bundled CODA tokenizer's directory when it was not given (said in one log line)."""
    if model is not None:
        return model
    from ..bundled import bundled_model

    path = bundled_model(DEFAULT_TOKENIZER)  # raises, naming the bundled models, when this install has none
    logger.info("no --model given: using the bundled CODA tokenizer %s (%s)", DEFAULT_TOKENIZER, path)
    return path


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenize", help="turn images into discrete token ids with a saved CODA tokenizer")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default=None, help=f"saved CodaVQModel directory (default: the bundled {DEFAULT_TOKENIZER})")
    p.add_argument("--output", default="tokens.safetensors", help="output .safetensors file")
    add_common_arguments(p)
    p.set_defaults(func=run)


def add_common_arguments(p) -> None:
    """Options shared by ``tokenize`` and ``reconstruct``."""
    p.add_argument("--resolution", type=int, default=None,
                   help="resize the shorter side to this before cropping to a multiple of the downsample factor "
                        "(default: the model's preprocessor_config.json)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_resolution(resolution: int | None) -> None:
    """``--resolution`` must be a positive size (the model's minimum is checked once it is loaded)."""
    if resolution is not None and resolution < 1:
        raise ValueError(f"--resolution {resolution}: must be a positive number of pixels")


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
        if resolution < model.min_image_size:
            raise ValueError(
                f"--resolution {resolution}: smaller than the model's minimum image size {model.min_image_size} "
                f"(downsample factor {model.downsample_factor})"
            )
        processor.size = {"shortest_edge": int(resolution)}
    processor.size_divisor = model.size_divisor
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


def report_failures(failed: list[str], total: int) -> int:
    """Log the inputs that failed; the exit code (1 if any failed)."""
    if failed:
        logger.error("%d of %d image(s) failed: %s", len(failed), total, ", ".join(map(str, failed)))
        return 1
    return 0


def run(args) -> int:
    import torch

    from ..output_files import check_output_file
    from ..tokens_file import TokenizedImage, TokensFile, model_reference, save_tokens

    check_resolution(args.resolution)
    out = check_output_file(args.output, overwrite=args.overwrite, option="--output")
    args.model = default_model(args.model)
    model, processor = load_model_and_processor(args.model, args.resolution)
    images, failed = [], []
    with torch.no_grad():
        for i, path, pixels in iterate_images(args.images, processor, not args.no_progress):
            if pixels is None:
                failed.append(path)
                continue
            enc = model.encode(pixels)
            images.append(TokenizedImage(
                key=f"tokens_{i}", path=str(path), token_ids=enc.token_ids[0],  # (N,) level-major
                image_size=tuple(pixels.shape[-2:]), level_shapes=[tuple(idx.shape[-2:]) for idx in enc.indices],
            ))  # fmt: skip
    if images:
        save_tokens(out, TokensFile(images, model=model_reference(args.model), codebook_size=model.codebook_size))
        logger.info("wrote tokens of %d image(s) to %s", len(images), out)
    return report_failures(failed, len(args.images))
