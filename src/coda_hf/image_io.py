"""The package's one image path: any source -> 8-bit RGB -> one resize / crop policy -> ``[-1, 1]`` tensor, and back.

Training (``training/data.py``), evaluation (``metrics/eval_data.py``), MaskGIT pre-tokenisation
(``training/maskgit_data.py``), :class:`~coda_hf.image_processing.CodaImageProcessor`, the pipelines and
:mod:`coda_hf.data.transforms` all go through the functions below, so one file gives the same pixels
everywhere (``tests/test_image_path.py`` checks it bit for bit).

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

* EXIF orientation: a file or PIL image whose EXIF ``Orientation`` tag says it is rotated or mirrored is
  turned upright first (``PIL.ImageOps.exif_transpose``, as ``diffusers.utils.load_image`` does), so a phone
  photo is seen the way viewers show it.

An unreadable, truncated or empty image (a zero-sized array, a missing file, a URL that does not answer
with an image) raises :class:`ImageLoadError` naming the input.

Resize / crop policy (:func:`resize_center_crop`, :func:`load_pixel_values`): resize so that the SHORTER side
equals the target (bicubic; PIL antialiases when it shrinks; the longer side becomes
``int(size * long / short)``), then center-crop (offsets ``(H - h) // 2``, ``(W - w) // 2``). It is
torchvision's ``Resize(size) + CenterCrop(size)`` and transformers' ``shortest_edge`` + ``crop_size``:
what a user of either expects (resizing before the crop lets the filter see the real neighbours of the
crop's edge pixels; cropping first, as evaluation once did, clamps them). An image that already has the
target size passes untouched (no resampling): the photo tiles the
reproduction trains on are exactly the training resolution. Pixels map to ``v / 127.5 - 1`` in float32,
bit for bit what transformers' ``rescale(1/255)`` + ``normalize(0.5, 0.5)`` give; back to 8 bits with
:func:`to_uint8_range` (clamp to ``[-1, 1]``, ``(x + 1) * 127.5`` in float64, rounded), which the 8-bit
metrics use too.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | dict | Image.Image | np.ndarray | Any  # Any: a torch.Tensor
URL_SCHEMES = ("http://", "https://")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
RESAMPLE = Image.Resampling.BICUBIC  # the policy's resampling filter
EXIF_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads


class ImageLoadError(ValueError):
    """An image could not be read or converted; the message names the offending input."""


def _white_composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF ``Orientation`` tag says (the image itself when it has none)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: show the pixels as stored
        return image
    return ImageOps.exif_transpose(image) if orientation not in (None, 1) else image


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
        return to_rgb(upright(source), name=label)
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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file read from its header alone, nothing decoded (to check a size before
    paying for the decode); PIL's errors as they are."""
    with Image.open(path) as image:
        return image.size


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


# ---------------------------------------------------------------------------------------- resize / crop policy
def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``size`` (the longer one ``int(size * long /
    short)``, torchvision's and transformers' rounding)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_box(width: int, height: int, crop_width: int, crop_height: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the centred ``crop_width`` x ``crop_height`` box."""
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def resize_shorter_side(image: Image.Image, size: int, resample: int = RESAMPLE) -> Image.Image:
    """Resize (aspect kept) so that the shorter side is ``size``; the image itself when it already is."""
    target = shorter_side_size(image.width, image.height, int(size))
    return image if target == image.size else image.resize(target, resample)


def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """The centred ``width`` x ``height`` part of ``image`` (at most its own size)."""
    if (width, height) == image.size:
        return image
    if width > image.width or height > image.height:
        raise ValueError(f"cannot center-crop {width}x{height} from an image of size {image.width}x{image.height}")
    return image.crop(center_box(image.width, image.height, width, height))


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """THE policy for a square model input: shorter side to ``size``, then the central ``size`` x ``size``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return center_crop(resize_shorter_side(image, size), size, size)


# ---------------------------------------------------------------------------------------- tensors
def pil_to_tensor(image: Image.Image):
    """8-bit RGB PIL image -> ``(3, H, W)`` float32 tensor in ``[-1, 1]`` (``v / 127.5 - 1``)."""
    import torch

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    array = np.asarray(image if image.mode == "RGB" else to_rgb(image), dtype=np.float32)  # (H, W, 3) in [0, 255]
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def load_pixel_values(source: ImageSource, resolution: int, name: str | None = None, timeout: float | None = 30.0):
    """The whole path: any source -> :func:`load_image` -> :func:`resize_center_crop` -> ``(3, R, R)`` in ``[-1, 1]``."""
    return pil_to_tensor(resize_center_crop(load_image(source, name=name, timeout=timeout), int(resolution)))


def to_uint8_range(images):
    """``[-1, 1]`` images -> float64 values in ``{0, ..., 255}`` (clamped and rounded like saving a PNG)."""
    return ((images.detach().double() + 1.0) * 127.5).clamp(0, 255).round()


def tensor_to_pil(images):
    """``(3, H, W)`` tensor in ``[-1, 1]`` -> RGB PIL image; a ``(B, 3, H, W)`` batch -> a list of B images.
    Values outside ``[-1, 1]`` are clamped (:func:`to_uint8_range`)."""
    if images.ndim == 4:
        return [tensor_to_pil(image) for image in images]
    if images.ndim != 3 or images.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor or a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
    array = to_uint8_range(images.cpu()).byte().permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    return Image.fromarray(array)
