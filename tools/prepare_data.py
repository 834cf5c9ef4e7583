#!/usr/bin/env python
"""Build the offline real-image datasets as parquet shards: photo tiles and Fashion-MNIST.

    python tools/prepare_data.py prepare-photos --out data/photos
    python tools/prepare_data.py prepare-fashion-mnist --out data/fashion-mnist

Repository tooling (``pip install -e ".[data]"`` for scikit-image's photos); it was ``coda-hf data`` before
it left the installed package. ``--help`` on each command lists every option with its default. Errors are
one line; exit code 2 for a usage error, 1 when a package download fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds the ``tools`` package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("prepare_data")

DEFAULT_CACHE = "~/.cache/coda_hf/debs"


def build_parser() -> argparse.ArgumentParser:
    from coda_hf.cli import Parser

    p = Parser(prog="prepare_data.py", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    photos = sub.add_parser("prepare-photos", help="multi-scale photo tiles from Debian wallpapers, OpenCV and skimage")
    photos.add_argument("--out", required=True, help="output folder (manifest.json, tilesN/ shards)")
    photos.add_argument("--cache", default=DEFAULT_CACHE, help="where downloaded / extracted .deb packages are kept")
    photos.add_argument("--tile-sizes", type=int, nargs="+", default=[64, 128], help="tile sides in pixels, one folder each")
    photos.add_argument("--eval-fraction", type=float, default=0.2, help="fraction of scenes held out (per source)")
    photos.add_argument("--validation-fraction", type=float, default=0.0,
                        help="fraction of scenes held out as a validation split for choosing hyperparameters "
                             "(validation-* shards; taken from train, eval unchanged; default 0: none)")  # fmt: skip
    photos.add_argument("--seed", type=int, default=0, help="seed of the scene split and the tile order")
    photos.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="zoom levels: the photo's short side is resized to level * tile size")
    photos.add_argument("--stride", type=int, default=None, help="tile grid step in pixels (default: tile size)")
    photos.add_argument("--train-shards", type=int, default=8, help="parquet shards of the train split")
    photos.add_argument("--eval-shards", type=int, default=4, help="parquet shards of the eval split")
    photos.add_argument("--validation-shards", type=int, default=2, help="parquet shards of the validation split")
    photos.add_argument("--sources", nargs="+", default=None,
                        help="subset of: mate-backgrounds plasma-workspace-wallpapers opencv-doc skimage sklearn")
    photos.add_argument("--overwrite", action="store_true", help="rebuild even if an up-to-date manifest exists")
    photos.set_defaults(func=run_prepare_photos)

    fmnist = sub.add_parser("prepare-fashion-mnist", help="Fashion-MNIST from the Debian package dataset-fashion-mnist")
    fmnist.add_argument("--out", required=True, help="output folder (manifest.json, train-* / test-* shards)")
    fmnist.add_argument("--cache", default=DEFAULT_CACHE, help="where downloaded / extracted .deb packages are kept")
    fmnist.add_argument("--image-size", type=int, default=28, help="28 (native) or larger, e.g. 32")
    fmnist.add_argument("--resize-mode", choices=["pad", "resize"], default="pad", help="how 28 px images reach --image-size")
    fmnist.add_argument("--rgb", action="store_true", help="store 3-channel images")
    fmnist.add_argument("--train-shards", type=int, default=8, help="parquet shards of the train split")
    fmnist.add_argument("--test-shards", type=int, default=2, help="parquet shards of the test split")
    fmnist.add_argument("--limit", type=int, default=None, help="keep the first N images of each split")
    fmnist.add_argument("--overwrite", action="store_true", help="rebuild even if an up-to-date manifest exists")
    fmnist.set_defaults(func=run_prepare_fashion_mnist)
    return p


def _build(args, build, **options) -> dict | None:
    """``build(out, cache, overwrite=..., **options)`` once ``--out`` is known to be writable (before any
    download); ``None`` after logging a failed package download (exit code 1, not a usage error)."""
    import os

    from coda_hf.output_files import check_output_dir
    from tools.data import PackageFetchError

    out, cache = os.path.expanduser(args.out), os.path.expanduser(args.cache)
    check_output_dir(out, option="--out")
    try:
        return build(out, cache, overwrite=args.overwrite, **options)
    except PackageFetchError as e:
        logger.error("%s", e)
        return None


def run_prepare_photos(args) -> int:
    from tools.data import prepare_photo_dataset
    from tools.data.photos import DEFAULT_SOURCES

    manifest = _build(args, prepare_photo_dataset, tile_sizes=args.tile_sizes, eval_fraction=args.eval_fraction,
                      seed=args.seed, levels=args.levels, stride=args.stride, train_shards=args.train_shards,
                      eval_shards=args.eval_shards, sources=args.sources or DEFAULT_SOURCES,
                      validation_fraction=args.validation_fraction, validation_shards=args.validation_shards)  # fmt: skip
    if manifest is None:
        return 1
    summary = {"sources": manifest["sources"],
               "splits": {s: {k: v["tiles"] for k, v in d.items()} for s, d in manifest["splits"].items()}}
    logger.info("photo dataset written to %s: %s", args.out, json.dumps(summary))
    return 0


def run_prepare_fashion_mnist(args) -> int:
    from tools.data import prepare_fashion_mnist

    manifest = _build(args, prepare_fashion_mnist, image_size=args.image_size, resize_mode=args.resize_mode,
                      rgb=args.rgb, train_shards=args.train_shards, test_shards=args.test_shards, limit=args.limit)  # fmt: skip
    if manifest is None:
        return 1
    logger.info("Fashion-MNIST written to %s: %s", args.out, {k: v["images"] for k, v in manifest["splits"].items()})
    return 0


def main(argv: list[str] | None = None) -> int:
    from coda_hf.cli import USAGE_ERRORS, one_line

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return int(args.func(args) or 0)
    except USAGE_ERRORS as e:
        if args.debug:
            raise
        sys.stderr.write(f"prepare_data.py {args.command}: error: {one_line(e)}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
