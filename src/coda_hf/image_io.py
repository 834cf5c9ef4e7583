"""Load images from paths, URLs, bytes, PIL images, numpy arrays or torch tensors as 8-bit RGB PIL images.

Sources (one place for the whole package):

* a local path (``str`` / ``os.PathLike``); an ``http://`` / ``https://`` URL, fetched as transformers'
  ``load_image`` does (``httpx``, redirects followed; an HTTP error status raises);
* encoded file bytes, or a ``datasets`` image cell ``{"bytes": ..., "path": ...}``;
* a PIL image;
* a numpy array (layouts and dtypes below);
* a torch tensor: ``(H, W)``, ``(C, H, W)``, ``(H, W, C)`` or ``(1, C, H, W)`` with ``C`` in 1, 3, 4
  (channel-first wins when both readings fit, the torch convention), ``uint8`` / ``bool`` or float in
  ``[0, 1]``. A ``(B, C, H, W)`` batch is B images: :func:`load_images` and the tokenization pipeline split it.

Conversion rules:

* grayscale (``L``, ``1``) -> RGB by channel replication;
* transparency (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour) -> composited on WHITE;
* palette (``P``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> RGB through PIL;
* 16-bit (``I;16*``, ``I``) -> 8-bit by ``round(v / 257)`` (full 16-bit range maps to 0..255);
* float PIL images (``F``) and float arrays must hold values in ``[0, 1]``;
* numpy arrays: ``(H, W)``, ``(H, W, 1|3|4)`` or channel-first ``(1|3|4, H, W)``; ``uint8``, ``uint16``,
  ``bool`` or float in ``[0, 1]``.

An unreadable, truncated or empty image (a zero-sized array, a missing file, a URL that does not answer
with an image) raises :class:`ImageLoadError` naming the input.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | dict | Image.Image | np.ndarray | Any  # Any: a torch.Tensor
URL_SCHEMES = ("http://", "https://")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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
    if a.size == 0:
        raise ImageLoadError(f"{name}: empty image (shape {a.shape})")
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


def from_tensor(tensor, name: str = "tensor") -> Image.Image:
    """Convert a torch tensor (layouts and dtypes in the module rules) to an RGB PIL image."""
    import torch

    t = tensor.detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]  # a batch of one
    elif t.ndim == 4:
        raise ImageLoadError(f"{name}: a (B, C, H, W) tensor with B={t.shape[0]} is a batch; pass one image "
                             "or use load_images")  # fmt: skip
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if t.is_floating_point() and t.dtype != torch.float64:
        t = t.float()  # float16 / bfloat16 have no numpy twin
    return from_array(t.numpy(), name=name)


def _is_tensor(source) -> bool:
    return type(source).__module__.startswith("torch") and hasattr(source, "detach")


def _decode(fp, name: str) -> Image.Image:
    """Fully decode an image file (path or file object); a truncated file is an error."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
    try:
        with Image.open(fp) as image:
            image.load()
            return load_image(image, name=name).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageLoadError):
            raise
        raise ImageLoadError(f"cannot read image {name}: {e}") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def fetch_url(url: str, timeout: float | None = 30.0) -> bytes:
    """The body of an ``http(s)`` URL (``httpx`` as in transformers' ``load_image``); ``ImageLoadError`` on
    a connection error or an HTTP error status, naming the URL."""
    from huggingface_hub.utils import httpx  # the client transformers' load_image uses

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise ImageLoadError(f"cannot fetch image {url}: {e}") from e
    return response.content


def load_image(source: ImageSource, name: str | None = None, timeout: float | None = 30.0) -> Image.Image:
    """Any source of the module rules -> an 8-bit RGB PIL image (fully decoded).

    ``name``: what error messages call the input (default: the path / URL, or the input type).
    ``timeout``: seconds to wait for a URL. Raises :class:`ImageLoadError` naming the input.
    """
    if isinstance(source, Image.Image):
        label = name or "image"
        if source.width == 0 or source.height == 0:
            raise ImageLoadError(f"{label}: empty image (size {source.size})")
        return to_rgb(source, name=label)
    if isinstance(source, np.ndarray):
        return from_array(source, name=name or "array")
    if _is_tensor(source):
        return from_tensor(source, name=name or "tensor")
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source), name or "bytes")
    if isinstance(source, dict) and ("bytes" in source or "path" in source):  # a datasets image cell
        data, path = source.get("bytes"), source.get("path")
        if data is not None:
            return _decode(io.BytesIO(data), name or str(path or "bytes"))
        return load_image(path, name=name, timeout=timeout)
    if isinstance(source, str) and source.lower().startswith(URL_SCHEMES):
        return _decode(io.BytesIO(fetch_url(source, timeout)), name or source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {path}")
        return _decode(path, name or str(path))
    raise ImageLoadError(
        f"cannot load an image from a {type(source).__name__}; pass a path, URL, bytes, PIL image, numpy array "
        "or torch tensor"
    )


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Every image file (by :data:`IMAGE_EXTENSIONS`) under ``folder``, recursively, sorted, hidden files and
    folders left out: a folder of images means all of them, whatever their names (no ``train_*`` /
    ``valid*`` split convention)."""
    root = Path(folder)
    return sorted(
        str(p) for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )  # fmt: skip


def load_images(sources) -> list[Image.Image]:
    """:func:`load_image` over a list (or one source, returned as a list of one); a ``(B, C, H, W)`` tensor
    is B images."""
    if _is_tensor(sources) and sources.ndim == 4:
        sources = list(sources)
    elif isinstance(sources, (str, os.PathLike, bytes, dict, Image.Image, np.ndarray)) or _is_tensor(sources):
        sources = [sources]
    return [load_image(s) for s in sources]
