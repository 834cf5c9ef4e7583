"""Load images from paths, PIL images or numpy arrays as 8-bit RGB PIL images.

Conversion rules (one place for the whole package):

* grayscale (``L``, ``1``) -> RGB by channel replication;
* transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) -> composited on WHITE;
* palette (``P``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> RGB through PIL;
* 16-bit (``I;16*``, ``I``) -> 8-bit by ``round(v / 257)`` (full 16-bit range maps to 0..255);
* float PIL images (``F``) and float arrays must hold values in ``[0, 1]``;
* numpy arrays: ``(H, W)``, ``(H, W, 1|3|4)`` or channel-first ``(1|3|4, H, W)``; ``uint8``, ``uint16``,
  ``bool`` or float in ``[0, 1]``.

An unreadable or truncated file raises :class:`ImageLoadError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

ImageSource = str | os.PathLike | Image.Image | np.ndarray


class ImageLoadError(ValueError):
    """An image could not be read or converted; the message names the offending input."""


def _white_composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Convert a PIL image of any common mode to 8-bit RGB following the module's rules."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _white_composite(image)
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_sixteen_to_eight(np.asarray(image))).convert("RGB")
    if mode == "F":
        return from_array(np.asarray(image, dtype=np.float32), name=name)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageLoadError(f"cannot convert {name} (PIL mode {mode!r}) to RGB: {e}") from e


def from_array(array: np.ndarray, name: str = "array") -> Image.Image:
    """Convert a numpy image array (see the module rules for layouts and dtypes) to an RGB PIL image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ImageLoadError(f"{name}: expected an (H, W), (H, W, 1|3|4) or (1|3|4, H, W) array; got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = _sixteen_to_eight(a)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise ImageLoadError(f"{name}: float image values must lie in [0, 1]; got [{a.min()}, {a.max()}]")
        a = np.round(a * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageLoadError(f"{name}: unsupported dtype {a.dtype} (use uint8, uint16, bool or float in [0, 1])")
    return to_rgb(Image.fromarray(np.ascontiguousarray(a)), name=name)


def load_image(source: ImageSource) -> Image.Image:
    """A path, PIL image or numpy array -> an 8-bit RGB PIL image (fully decoded).

    Raises :class:`ImageLoadError` naming the file for missing, unreadable or truncated files.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return from_array(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {path}")
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
        try:
            with Image.open(path) as image:
                image.load()
                return to_rgb(image, name=str(path)).copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if isinstance(e, ImageLoadError):
                raise
            raise ImageLoadError(f"cannot read image file {path}: {e}") from e
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    raise ImageLoadError(f"cannot load an image from a {type(source).__name__}; pass a path, PIL image or numpy array")


def load_images(sources) -> list[Image.Image]:
    """:func:`load_image` over a list (or one source, returned as a list of one)."""
    if isinstance(sources, (str, os.PathLike, Image.Image, np.ndarray)):
        sources = [sources]
    return [load_image(s) for s in sources]
