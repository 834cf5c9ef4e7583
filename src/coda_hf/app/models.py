"""The models and data the app shows, loaded once: :class:`AppModels`.

Every slot takes a model object, a saved directory, ``None`` (that part of the app says it has no model) or
is left at its default, the bundled model of :data:`BUNDLED_NAMES` when this installation ships it
(``coda_hf.bundled_model``). So the same app runs on the package's bundled models, on your own
directories, and in tests on tiny random stand-ins (``tools/app_models.py`` in the repository).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import bundled

logger = logging.getLogger(__name__)

BUNDLED_NAMES = {
    "vae": "photos-vae",  # continuous AutoencoderKL (the off-the-shelf VAE's role)
    "coda": "photos-coda",  # CodaVQModel adapted from it
    "vqgan": "photos-vqgan",  # multi-scale VQGAN from scratch at matched bits
    "prior": "photos-prior",  # MaskGIT prior: a CodaMaskGitPipeline or MaskGitTransformer directory
    "latent_vae": "fashion-vae-2d",  # DenseVAE, 2-D latent
}
BETA_VAE_PREFIX = "fashion-beta-vae-"  # bundled DenseVAEs, one per beta
DEFAULT = object()  # "the bundled one, when present"
MAX_RESOLUTION = 256


def _bundled(name: str) -> str | None:
    return bundled.bundled_model(name) if name in bundled.bundled_models() else None


def _load_tokenizer(source: Any, allow_continuous: bool = False):
    from ..models.loading import load_tokenizer

    if source is None or isinstance(source, torch.nn.Module):
        return source
    return load_tokenizer(source, allow_continuous=allow_continuous)


def _load_dense_vae(source: Any):
    from ..models.dense_vae import DenseVAE

    if source is None or isinstance(source, torch.nn.Module):
        return source
    return DenseVAE.from_pretrained(str(source))


def _load_prior(source: Any, tokenizer):
    """A ``CodaMaskGitPipeline`` object or directory, or a ``MaskGitTransformer`` directory (+ ``tokenizer``)."""
    from ..maskgit import MaskGitScheduler, MaskGitTransformer
    from ..pipelines.maskgit import CodaMaskGitPipeline

    if source is None or isinstance(source, CodaMaskGitPipeline):
        return source
    path = Path(source)
    if (path / "model_index.json").is_file():
        return CodaMaskGitPipeline.from_pretrained(str(path))
    if tokenizer is None:
        raise ValueError(f"{path} holds a MaskGIT transformer without its tokenizer: the app needs a CODA model too")
    scheduler_dir = path / "scheduler" if (path / "scheduler").is_dir() else path
    scheduler = (MaskGitScheduler.from_pretrained(str(scheduler_dir))
                 if (scheduler_dir / "scheduler_config.json").is_file() else MaskGitScheduler())  # fmt: skip
    transformer = MaskGitTransformer.from_pretrained(str(path))
    return CodaMaskGitPipeline(tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)


def _beta_of(source: Any) -> float:
    config = Path(source) / "training_config.json"
    if not config.is_file() or "beta" not in json.loads(config.read_text()):
        raise ValueError(f"{source}: no training_config.json with the model's beta; pass beta_vaes={{beta: dir}}")
    return float(json.loads(config.read_text())["beta"])


def _beta_vaes(source: Any) -> dict[float, Any]:
    if source is DEFAULT:
        source = [bundled.bundled_model(n) for n in bundled.bundled_models() if n.startswith(BETA_VAE_PREFIX)]
    if isinstance(source, dict):
        found = {float(b): _load_dense_vae(m) for b, m in source.items()}
    else:
        found = {_beta_of(m): _load_dense_vae(m) for m in (source or [])}
    return dict(sorted(found.items()))


@dataclass
class AppModels:
    """What the app runs on (every model in eval mode). Build it with :meth:`load`."""

    coda: Any = None  # CodaVQModel (or any multi-scale tokenizer of the package)
    vqgan: Any = None  # VQGANModel
    vae: Any = None  # diffusers AutoencoderKL
    prior: Any = None  # CodaMaskGitPipeline
    latent_vae: Any = None  # DenseVAE with a 2-D latent
    beta_vaes: dict[float, Any] = field(default_factory=dict)  # beta -> DenseVAE (same architecture)
    photos: list[Path] = field(default_factory=list)
    fashion: dict[str, np.ndarray] | None = None  # images (N, 28, 28) uint8, labels (N,)
    resolution: int = MAX_RESOLUTION

    @classmethod
    def load(
        cls, coda=DEFAULT, vqgan=DEFAULT, vae=DEFAULT, prior=DEFAULT, latent_vae=DEFAULT, beta_vaes=DEFAULT,
        photos=DEFAULT, fashion=DEFAULT, resolution: int | None = None,
    ) -> AppModels:  # fmt: skip
        """Load every slot (see the module docstring). ``photos``: image paths or a folder (default: the
        bundled demo photos); ``fashion``: ``{"images", "labels"}`` arrays (default: the bundled test-split
        sample); ``resolution``: the side of the photos the tokenizers see (default: the tokenizers' own,
        at most 256)."""
        slots = {"coda": coda, "vqgan": vqgan, "vae": vae, "prior": prior, "latent_vae": latent_vae}
        slots = {k: (_bundled(BUNDLED_NAMES[k]) if v is DEFAULT else v) for k, v in slots.items()}
        models = cls(
            coda=_load_tokenizer(slots["coda"]), vqgan=_load_tokenizer(slots["vqgan"]),
            vae=_load_tokenizer(slots["vae"], allow_continuous=True), latent_vae=_load_dense_vae(slots["latent_vae"]),
            beta_vaes=_beta_vaes(beta_vaes), photos=_photos(photos), fashion=_fashion(fashion),
        )  # fmt: skip
        models.prior = _load_prior(slots["prior"], models.coda)
        for module in models.modules():
            module.eval().requires_grad_(False)
        models.resolution = resolution or models.default_resolution()
        models.check_resolution()
        return models

    def modules(self) -> list[torch.nn.Module]:
        found = [self.coda, self.vqgan, self.vae, self.latent_vae, *self.beta_vaes.values()]
        if self.prior is not None:
            found += [self.prior.transformer, self.prior.tokenizer]
        return [m for m in found if isinstance(m, torch.nn.Module)]

    def tokenizers(self) -> dict[str, Any]:
        """Display name -> discrete tokenizer, for the views that compare them."""
        return {k: m for k, m in (("CODA", self.coda), ("VQGAN", self.vqgan)) if m is not None}

    def default_resolution(self) -> int:
        """256 px (``MAX_RESOLUTION``) for tokenizers that quantize tile by tile (``latent_tile_size``: any
        multiple of the tile's pixels), else the VAE config's ``sample_size`` (at most 256)."""
        if any(getattr(getattr(m, "config", None), "latent_tile_size", 0) for m in self.tokenizers().values()):
            return MAX_RESOLUTION
        for model in (self.coda, self.vae):
            vae = getattr(model, "vae", model)
            size = getattr(getattr(vae, "config", None), "sample_size", None)
            if size:
                return min(int(size if isinstance(size, int) else size[0]), MAX_RESOLUTION)
        return MAX_RESOLUTION

    def check_resolution(self) -> None:
        for name, model in (*self.tokenizers().items(), ("VAE", self.vae)):
            if model is None:
                continue
            factor = getattr(model, "downsample_factor", None) or 2 ** (len(model.config.block_out_channels) - 1)
            if self.resolution % factor:
                raise ValueError(f"resolution {self.resolution} is not a multiple of the {name} model's factor {factor}")


def _photos(source: Any) -> list[Path]:
    if source is DEFAULT:
        return bundled.bundled_photos()
    if source is None:
        return []
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return sorted(p for p in Path(source).iterdir() if p.suffix.lower() in bundled.PHOTO_SUFFIXES)
    return [Path(p) for p in source]


def _fashion(source: Any) -> dict[str, np.ndarray] | None:
    if source is DEFAULT:
        try:
            return bundled.fashion_mnist_sample()
        except FileNotFoundError:
            logger.warning("no bundled Fashion-MNIST sample: the latent-space view has no points to show")
            return None
    return source
