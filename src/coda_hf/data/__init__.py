"""Offline real-image datasets (photo tiles, Fashion-MNIST) as streamable parquet shards, and image transforms."""

from .debian import DebianCopyright, ExtractedPackage, PackageFetchError, fetch_debian_package, read_copyright
from .fashion_mnist import FASHION_MNIST_LABELS, prepare_fashion_mnist, read_idx, write_idx
from .photos import PHOTO_FEATURES, PhotoRecord, collect_photos, photo_shard_dir, prepare_photo_dataset
from .shards import load_image_shards, write_parquet_shards
from .tiling import Tile, iter_multiscale_tiles, split_groups, split_photo_groups
from .transforms import (
    center_crop_resize,
    collate_images,
    image_transform,
    pil_to_tensor,
    random_resized_crop_and_flip,
    tensor_to_pil,
)

__all__ = [
    "FASHION_MNIST_LABELS",
    "PHOTO_FEATURES",
    "DebianCopyright",
    "ExtractedPackage",
    "PackageFetchError",
    "PhotoRecord",
    "Tile",
    "center_crop_resize",
    "collate_images",
    "collect_photos",
    "fetch_debian_package",
    "image_transform",
    "iter_multiscale_tiles",
    "load_image_shards",
    "photo_shard_dir",
    "pil_to_tensor",
    "prepare_fashion_mnist",
    "prepare_photo_dataset",
    "random_resized_crop_and_flip",
    "read_copyright",
    "read_idx",
    "split_groups",
    "split_photo_groups",
    "tensor_to_pil",
    "write_idx",
    "write_parquet_shards",
]
