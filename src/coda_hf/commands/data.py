"""``coda-hf data ...``: build the offline real-image datasets (photo tiles, Fashion-MNIST)."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)

DEFAULT_CACHE = "~/.cache/coda_hf/debs"


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare offline real-image datasets as parquet shards")
    sub = p.add_subparsers(dest="data_command", required=True)

    photos = sub.add_parser("prepare-photos", help="multi-scale photo tiles from Debian wallpapers, OpenCV and skimage")
    photos.add_argument("--out", required=True, help="output folder (manifest.json, tilesN/ shards)")
    photos.add_argument("--cache", default=DEFAULT_CACHE, help="where downloaded / extracted .deb packages are kept")
    photos.add_argument("--tile-sizes", type=int, nargs="+", default=[64, 128])
    photos.add_argument("--eval-fraction", type=float, default=0.2, help="fraction of scenes held out (per source)")
    photos.add_argument("--validation-fraction", type=float, default=0.0,
                        help="fraction of scenes held out as a validation split for choosing hyperparameters "
                             "(validation-* shards; taken from train, eval unchanged; default 0: none)")  # fmt: skip
    photos.add_argument("--seed", type=int, default=0)
    photos.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="zoom levels: the photo's short side is resized to level * tile size")
    photos.add_argument("--stride", type=int, default=None, help="tile grid step in pixels (default: tile size)")
    photos.add_argument("--train-shards", type=int, default=8)
    photos.add_argument("--eval-shards", type=int, default=4)
    photos.add_argument("--validation-shards", type=int, default=2)
    photos.add_argument("--sources", nargs="+", default=None,
                        help="subset of: mate-backgrounds plasma-workspace-wallpapers opencv-doc skimage sklearn")
    photos.add_argument("--overwrite", action="store_true", help="rebuild even if an up-to-date manifest exists")
    photos.set_defaults(func=run_prepare_photos)

    fmnist = sub.add_parser("prepare-fashion-mnist", help="Fashion-MNIST from the Debian package dataset-fashion-mnist")
    fmnist.add_argument("--out", required=True)
    fmnist.add_argument("--cache", default=DEFAULT_CACHE)
    fmnist.add_argument("--image-size", type=int, default=28, help="28 (native) or larger, e.g. 32")
    fmnist.add_argument("--resize-mode", choices=["pad", "resize"], default="pad")
    fmnist.add_argument("--rgb", action="store_true", help="store 3-channel images")
    fmnist.add_argument("--train-shards", type=int, default=8)
    fmnist.add_argument("--test-shards", type=int, default=2)
    fmnist.add_argument("--limit", type=int, default=None, help="keep the first N images of each split")
    fmnist.add_argument("--overwrite", action="store_true")
    fmnist.set_defaults(func=run_prepare_fashion_mnist)


def _expand(path: str) -> str:
    import os

    return os.path.expanduser(path)


def run_prepare_photos(args) -> int:
    from ..data import PackageFetchError, prepare_photo_dataset
    from ..data.photos import DEFAULT_SOURCES
    from ..output_files import check_output_dir

    check_output_dir(_expand(args.out), option="--out")  # before any download: a folder we can write

    try:
        manifest = prepare_photo_dataset(
            _expand(args.out), _expand(args.cache), tile_sizes=args.tile_sizes, eval_fraction=args.eval_fraction,
            seed=args.seed, levels=args.levels, stride=args.stride, train_shards=args.train_shards,
            eval_shards=args.eval_shards, sources=args.sources or DEFAULT_SOURCES, overwrite=args.overwrite,
            validation_fraction=args.validation_fraction, validation_shards=args.validation_shards,
        )
    except PackageFetchError as e:  # a download problem, not a usage error (those raise: exit code 2)
        logger.error("%s", e)
        return 1
    summary = {"sources": manifest["sources"],
               "splits": {s: {k: v["tiles"] for k, v in d.items()} for s, d in manifest["splits"].items()}}
    logger.info("photo dataset written to %s: %s", args.out, json.dumps(summary))
    return 0


def run_prepare_fashion_mnist(args) -> int:
    from ..data import PackageFetchError, prepare_fashion_mnist
    from ..output_files import check_output_dir

    check_output_dir(_expand(args.out), option="--out")  # before any download: a folder we can write

    try:
        manifest = prepare_fashion_mnist(
            _expand(args.out), _expand(args.cache), image_size=args.image_size, resize_mode=args.resize_mode,
            rgb=args.rgb, train_shards=args.train_shards, test_shards=args.test_shards, limit=args.limit,
            overwrite=args.overwrite,
        )
    except PackageFetchError as e:  # a download problem, not a usage error (those raise: exit code 2)
        logger.error("%s", e)
        return 1
    logger.info("Fashion-MNIST written to %s: %s", args.out,
                {k: v["images"] for k, v in manifest["splits"].items()})
    return 0
