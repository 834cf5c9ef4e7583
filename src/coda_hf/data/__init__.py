"""Image datasets as streamable parquet shards (:mod:`.shards`) and the training augmentation (:mod:`.transforms`).

The offline dataset builders (photo tiles, Fashion-MNIST) are repository tooling: ``tools/prepare_data.py``.
"""

from .fashion_mnist import FASHION_MNIST_LABELS
from .shards import encode_png, load_image_shards, write_parquet_shards
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
    "center_crop_resize",
    "collate_images",
    "encode_png",
    "image_transform",
    "load_image_shards",
    "pil_to_tensor",
    "random_resized_crop_and_flip",
    "tensor_to_pil",
    "write_parquet_shards",
]
