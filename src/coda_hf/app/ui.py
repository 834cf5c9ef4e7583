"""The Gradio app: the shared photo picker, one tab per view (``<view>_view.tab``), readable errors.

Every event handler goes through :func:`handler`: a bad input (``ValueError``, e.g. :class:`InputImageError`)
is shown as its own message, anything else as one line naming the error (the browser never sees a
traceback), and the images it returns reach Gradio as files (:func:`as_files`).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import inspect
import io
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..data.transforms import pil_to_tensor
from ..image_io import load_image
from . import architecture_view, codebook_view, elbo_view, generate_view, latent_view, tokenize_view
from .images import InputImageError, image_tensor, open_upload, to_pil
from .models import AppModels

logger = logging.getLogger(__name__)

UPLOAD_LABEL = "Upload an image"
_IMAGE_DIR: str | None = None  # where as_files writes the app's output images
TITLE = "coda_hf: the VAE / VQ-VAE tokenizer family, live"
INTRO = """# The VAE / VQ-VAE family, live on this package's models
Four views of the encoder-decoder family (after the "VAE / VQ-VAE Tokenization" page of the Architecture
Atlas): **architecture**, **latent space**, **codebook lookup** and the **ELBO**, plus CODA's tokenizer
level by level and MaskGIT generation. Every picture comes from a forward pass of the loaded models."""


def _readable_error(name: str, error: Exception) -> gr.Error:
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, ValueError):  # bad input: InputImageError, ImageLoadError, model size checks...
        return gr.Error(str(error))
    logger.error("app handler %s failed", name, exc_info=error)
    return gr.Error(f"{name} failed: {type(error).__name__}: {error}")


def _image_file(image: Image.Image) -> str:
    """A PNG of ``image`` in the app's folder, named by its content and written once (atomically)."""
    global _IMAGE_DIR
    if _IMAGE_DIR is None:
        _IMAGE_DIR = tempfile.mkdtemp(prefix="coda_hf_app_")
        atexit.register(shutil.rmtree, _IMAGE_DIR, True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    path = os.path.join(_IMAGE_DIR, hashlib.sha1(data).hexdigest() + ".png")
    if not os.path.exists(path):
        staging = f"{path}.{threading.get_ident()}.tmp"
        with open(staging, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    return path


def as_files(value):
    """PIL images anywhere in a handler's outputs (lists, tuples, gallery pairs) -> PNG file paths.

    Gradio caches a returned PIL image by rewriting its file in place on every return; when the same picture
    comes back while the browser is still fetching it, the browser gets a truncated file. A file path is
    copied into the cache once, atomically.
    """
    if isinstance(value, Image.Image):
        return _image_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_files(v) for v in value)
    return value


def handler(fn):
    """Wrap an event handler (a function or a generator): readable errors, images as files."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                for value in fn(*args, **kwargs):
                    yield as_files(value)
            except Exception as e:
                raise _readable_error(fn.__name__, e) from e

        return stream

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return as_files(fn(*args, **kwargs))
        except Exception as e:
            raise _readable_error(fn.__name__, e) from e

    return wrapper


@dataclass
class Context:
    """What the tabs share: the current photo (a ``gr.State`` holding the ``(R, R, 3)`` uint8 array of the
    ``resolution`` x ``resolution`` photo) and the handlers to run when it changes (``(fn, inputs, outputs)``)."""

    models: AppModels
    photo: gr.State
    on_photo: list = field(default_factory=list)

    @staticmethod
    def image(photo: np.ndarray) -> Image.Image:
        return Image.fromarray(np.asarray(photo, dtype=np.uint8))

    def tensor(self, photo: np.ndarray) -> torch.Tensor:
        """``(1, 3, R, R)`` in ``[-1, 1]`` of the current photo."""
        return pil_to_tensor(self.image(photo))[None]


def _square(image: Image.Image, resolution: int) -> Image.Image:
    return to_pil(image_tensor(image, resolution))


def photo_picker(models: AppModels, ctx: Context):
    """The bundled-photo dropdown and the upload box above the tabs."""
    names = [p.name for p in models.photos]
    with gr.Row():
        picker = gr.Dropdown(choices=names, value=names[0] if names else None, label="bundled photo",
                             elem_id="photo-picker", scale=2)  # fmt: skip
        upload = gr.UploadButton(UPLOAD_LABEL, file_types=["image"], type="filepath", elem_id="photo-upload", scale=1)
        preview = gr.Image(label=f"what the tokenizers see ({models.resolution} px)", interactive=False, height=160,
                           elem_id="photo-preview", scale=1)  # fmt: skip

    @handler
    def pick(name):
        if not name:
            return None, None
        photo = _square(load_image(next(p for p in models.photos if p.name == name)), models.resolution)
        return np.asarray(photo), photo

    @handler
    def uploaded(path):
        if path is None:
            raise InputImageError("no file was received")
        photo = _square(open_upload(path), models.resolution)
        return np.asarray(photo), photo

    return picker, upload, preview, pick, uploaded


def build_app(models: AppModels | None = None) -> gr.Blocks:
    """The app's ``gr.Blocks`` (launch it with :func:`coda_hf.app.launch`, which adds its theme)."""
    models = AppModels.load() if models is None else models
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        ctx = Context(models=models, photo=gr.State(None))
        picker, upload, preview, pick, uploaded = photo_picker(models, ctx)
        with gr.Tabs():
            tokenize_view.tab(models, ctx)
            architecture_view.tab(models, ctx)
            latent_view.tab(models, ctx, demo)
            codebook_view.tab(models, ctx)
            elbo_view.tab(models, ctx, demo)
            generate_view.tab(models, ctx)
        for trigger, fn, inputs in ((picker.change, pick, [picker]), (upload.upload, uploaded, [upload]),
                                    (demo.load, pick, [picker])):  # fmt: skip
            # One queue for every photo event: a new photo's results never interleave with the previous one's.
            event = trigger(fn, inputs, [ctx.photo, preview], concurrency_id="photo", trigger_mode="always_last")
            for handler, handler_inputs, outputs in ctx.on_photo:
                event = event.success(handler, handler_inputs, outputs, concurrency_id="photo")
    return demo


def theme() -> gr.themes.Theme:
    """Gradio's default theme with system fonts (the default fetches web fonts; the app works offline)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # fmt: skip


def launch(demo: gr.Blocks | None = None, **kwargs):
    """``demo.launch(**kwargs)`` with the app's theme (a new :func:`build_app` when ``demo`` is None)."""
    demo = build_app() if demo is None else demo
    kwargs.setdefault("theme", theme())
    return demo.launch(**kwargs)
