"""Images in and out of the app: checked uploads, model tensors, token maps and display sizes.

Uploads are checked before anything decodes them (:func:`open_upload`): a file that is not an image, an
image above :data:`MAX_PIXELS` (checked from the header, before decoding) or below :data:`MIN_SIDE` pixels
raises :class:`InputImageError`, whose message the app shows as is.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from ..data.transforms import center_crop_resize
from ..image_io import ImageLoadError, to_rgb

MAX_PIXELS = 40_000_000  # 40 megapixels
MIN_SIDE = 16
DISPLAY_SIZE = 256  # small model images are shown upscaled (nearest: every model pixel stays visible)


class InputImageError(ValueError):
    """An uploaded file cannot be used; the message says why in words meant for the app's user."""


def open_upload(path: str | Path) -> Image.Image:
    """An uploaded file -> an RGB PIL image, or :class:`InputImageError` naming the file and the problem."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise InputImageError(
                        f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
                        f"the app takes images up to {MAX_PIXELS / 1e6:.0f} MP: please resize it"
                    )
                if min(width, height) < MIN_SIDE:
                    raise InputImageError(
                        f"{name} is only {width}x{height} pixels; the app needs at least {MIN_SIDE}x{MIN_SIDE}"
                    )
                image.load()
                return to_rgb(image, name=name).copy()
    except Image.DecompressionBombError as e:
        raise InputImageError(f"{name} is too large to open safely: {e}") from e
    except (UnidentifiedImageError, ImageLoadError, OSError, SyntaxError) as e:
        if isinstance(e, FileNotFoundError):
            raise InputImageError(f"{name} was not received; please upload it again") from e
        raise InputImageError(f"{name} is not an image the app can read (PNG, JPEG, WebP, ...)") from e


def image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> ``(1, 3, size, size)`` in ``[-1, 1]``: the central square, resized."""
    return center_crop_resize(image, size)[None]


def to_pil(images: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` / ``(1, 3, H, W)`` in ``[-1, 1]`` or ``(1, H, W)`` / ``(H, W)`` in ``[0, 1]`` -> PIL image."""
    x = images.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    if x.ndim == 3 and x.shape[0] == 3:
        array = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(array, mode="RGB")
    array = (x.reshape(x.shape[-2:]).clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(array, mode="L").convert("RGB")


def upscale(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Enlarge a small image by an integer factor (nearest) so its longer side reaches about ``size``."""
    factor = max(1, size // max(image.size))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def code_colors(indices: np.ndarray) -> np.ndarray:
    """Integer codes -> ``(..., 3)`` uint8 colours: a fixed hue per code (golden-ratio steps), so equal codes
    share a colour across levels and models."""
    from matplotlib.colors import hsv_to_rgb

    idx = np.asarray(indices, dtype=np.int64)
    hue = (idx * 0.6180339887) % 1.0
    saturation = np.where(idx % 2 == 0, 0.55, 0.8)
    value = np.where((idx // 2) % 2 == 0, 0.95, 0.75)
    return (hsv_to_rgb(np.stack([hue, saturation, value], axis=-1)) * 255).round().astype(np.uint8)


def token_map(indices: torch.Tensor, size: int, masked: torch.Tensor | None = None) -> Image.Image:
    """``(h, w)`` codes -> a ``size`` x ``size`` picture of the token grid (one colour per code, cell borders;
    ``masked`` ``(h, w)`` bool cells are drawn grey)."""
    idx = indices.detach().cpu().numpy()
    h, w = idx.shape
    rgb = code_colors(idx)
    if masked is not None:
        rgb[masked.cpu().numpy()] = (60, 60, 60)
    cell = max(1, size // max(h, w))
    image = Image.fromarray(rgb).resize((w * cell, h * cell), Image.NEAREST)
    if cell >= 6:  # grid lines once cells are big enough to see them
        draw = ImageDraw.Draw(image)
        for k in range(1, w):
            draw.line([(k * cell, 0), (k * cell, h * cell)], fill=(255, 255, 255), width=1)
        for k in range(1, h):
            draw.line([(0, k * cell), (w * cell, k * cell)], fill=(255, 255, 255), width=1)
    return image


def side_by_side(*images: Image.Image, gap: int = 4) -> Image.Image:
    """Images next to each other on white, each scaled to the tallest one's height."""
    height = max(im.height for im in images)
    scaled = [im if im.height == height else im.resize((round(im.width * height / im.height), height), Image.NEAREST)
              for im in images]  # fmt: skip
    canvas = Image.new("RGB", (sum(im.width for im in scaled) + gap * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas


def bits(codebook_size: int) -> float:
    """Bits of one token of a ``codebook_size`` codebook."""
    return math.log2(max(int(codebook_size), 2))
