"""Offline real-image datasets (photo tiles, Fashion-MNIST) as streamable parquet shards.

The shards are written with :mod:`coda_hf.data.shards`, which the package's training and evaluation read.
"""

from .debian import DebianCopyright, ExtractedPackage, PackageFetchError, fetch_debian_package, read_copyright
from .fashion_mnist import FASHION_MNIST_LABELS, prepare_fashion_mnist, read_idx, write_idx
from .photos import PHOTO_FEATURES, PhotoRecord, collect_photos, photo_shard_dir, prepare_photo_dataset
from .tiling import Tile, iter_multiscale_tiles, split_groups, split_photo_groups

__all__ = [
    "FASHION_MNIST_LABELS",
    "PHOTO_FEATURES",
    "DebianCopyright",
    "ExtractedPackage",
    "PackageFetchError",
    "PhotoRecord",
    "Tile",
    "collect_photos",
    "fetch_debian_package",
    "iter_multiscale_tiles",
    "photo_shard_dir",
    "prepare_fashion_mnist",
    "prepare_photo_dataset",
    "read_copyright",
    "read_idx",
    "split_groups",
    "split_photo_groups",
    "write_idx",
]
