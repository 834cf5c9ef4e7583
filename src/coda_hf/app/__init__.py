"""The interactive app of the tokenizer family (Gradio; ``pip install "coda_hf[app]"``): ``coda-hf app``.

Six views, each a forward pass of the loaded models (:class:`AppModels`): Tokenize (levels coarse to fine,
bits per pixel, PSNR / SSIM, continuous VAE vs CODA vs VQGAN), Architecture (blocks with shapes, parameters,
LoRA), Latent space (a 2-D VAE's latent plane), Codebook lookup, ELBO (beta-VAEs) and Generate (MaskGIT).
They follow the four interactive views of the Architecture Atlas page "VAE / VQ-VAE Tokenization".

    from coda_hf.app import AppModels, build_app, launch

    launch(build_app(AppModels.load(coda="my-coda", vqgan=None)))

The compute of every view lives in its ``<view>_view`` module and needs no Gradio; ``build_app`` and
``launch`` import Gradio.
"""

from __future__ import annotations

from .models import BUNDLED_NAMES, DEFAULT, AppModels


def build_app(models: AppModels | None = None):
    """The app's ``gradio.Blocks`` on ``models`` (default: :meth:`AppModels.load`, the bundled models)."""
    from .ui import build_app as _build

    return _build(models)


def launch(demo=None, **kwargs):
    """Launch ``demo`` (default: :func:`build_app`) with the app's theme; ``kwargs`` go to ``Blocks.launch``."""
    from .ui import launch as _launch

    return _launch(demo, **kwargs)


__all__ = ["BUNDLED_NAMES", "DEFAULT", "AppModels", "build_app", "launch"]
