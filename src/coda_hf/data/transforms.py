"""Training augmentation and batching on the package's image path (no torchvision).

The deterministic steps (loading rules, the resize / crop policy, the ``[-1, 1]`` mapping and back) are
:mod:`coda_hf.image_io`'s, imported here: :func:`~coda_hf.image_io.load_pixel_values` is the evaluation
transform. Every transform returns a float tensor ``(3, size, size)`` in ``[-1, 1]``. Randomness comes only
from an optional ``torch.Generator`` so that a seeded generator reproduces the same crops and flips.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ..image_io import RESAMPLE, load_image, load_pixel_values, pil_to_tensor, tensor_to_pil

__all__ = [
    "center_crop_resize",
    "collate_images",
    "image_transform",
    "pil_to_tensor",
    "random_resized_crop_and_flip",
    "tensor_to_pil",
]


def _check_image(image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    return load_image(image)  # EXIF orientation, RGB rules; ImageLoadError (a ValueError) for an empty image


def _check_size(size: int) -> int:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return size


def center_crop_resize(image: Image.Image, size: int) -> torch.Tensor:
    """Deprecated: :func:`coda_hf.image_io.load_pixel_values` (the package's one policy: shorter side to
    ``size``, then the central square; this function cropped first before)."""
    warnings.warn("coda_hf.data.transforms.center_crop_resize is deprecated: use coda_hf.image_io.load_pixel_values "
                  "(shorter side to size, then the central square)", FutureWarning, stacklevel=2)  # fmt: skip
    return load_pixel_values(_check_image(image), _check_size(size))


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _sample_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """Random box ``(left, top, right, bottom)`` covering ``scale`` of the area with aspect in ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            return left, top, left + w, top + h
    # Fallback: the largest central crop whose aspect lies inside ``ratio``.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def random_resized_crop_and_flip(
    image: Image.Image,
    size: int,
    scale: Sequence[float] = (0.5, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training transform: random crop (area fraction in ``scale``, aspect in ``ratio``), resize, h-flip.

    Returns a ``(3, size, size)`` tensor in ``[-1, 1]``. The same ``generator`` state gives the same crop
    and flip.
    """
    image, size = _check_image(image), _check_size(size)
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < low <= high, got {tuple(ratio)}")
    if not (0.0 <= flip_p <= 1.0):
        raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
    box = _sample_crop_box(image.width, image.height, scale, ratio, generator)
    crop = image.crop(box)
    crop = crop if crop.size == (size, size) else crop.resize((size, size), RESAMPLE)
    if float(torch.rand((), generator=generator)) < flip_p:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return pil_to_tensor(crop)


def image_transform(
    size: int, train: bool = True, generator: torch.Generator | None = None, **crop_kwargs
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform for one split: ``random_resized_crop_and_flip`` when ``train``, else the package's policy
    (:func:`coda_hf.image_io.load_pixel_values`)."""
    _check_size(size)
    if train:
        return lambda image: random_resized_crop_and_flip(image, size, generator=generator, **crop_kwargs)
    if crop_kwargs:
        raise ValueError(f"evaluation transform takes no crop options, got {sorted(crop_kwargs)}")
    return lambda image: load_pixel_values(_check_image(image), size)


def collate_images(
    examples: Sequence[dict], transform: Callable[[Image.Image], torch.Tensor], key: str = "image"
) -> torch.Tensor:
    """Stack ``transform(example[key])`` over a list of dataset rows -> ``(B, 3, size, size)`` in ``[-1, 1]``."""
    if not examples:
        raise ValueError("collate_images got an empty batch")
    missing = [i for i, ex in enumerate(examples) if key not in ex]
    if missing:
        raise KeyError(f"examples {missing[:5]} have no column {key!r}")
    return torch.stack([transform(ex[key]) for ex in examples])
