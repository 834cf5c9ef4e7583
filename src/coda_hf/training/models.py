"""Build the model a training run optimises, and save it at the end.

* ``coda``: :meth:`CodaVQModel.from_vae` on a pretrained AutoencoderKL (frozen base + LoRA + quantizer).
* ``vqgan``: :class:`VQGANModel` from scratch.
* ``vae``: a continuous (beta-)VAE, a diffusers ``AutoencoderKL`` from scratch, trained through
  :class:`KLAutoencoderForTraining` so the loop sees the same ``forward(images) -> .sample/.losses/.stats``
  interface as the tokenizers (plus the posterior for the KL term).
* ``--pretrained_model``: any of the three loaded with ``from_pretrained`` to fine-tune.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from .config import TrainingConfig

logger = logging.getLogger(__name__)


@dataclass
class KLAutoencoderOutput:
    """``forward`` of :class:`KLAutoencoderForTraining`.

    Attributes:
        sample: ``(B, 3, H, W)`` reconstruction from a posterior SAMPLE (training-time VAE).
        posterior: the diagonal Gaussian ``q(z | x)`` over ``(B, C, h, w)`` latents (KL term).
        losses / stats: empty (a continuous VAE has no quantizer terms); same fields as the tokenizers.
    """

    sample: torch.Tensor
    posterior: DiagonalGaussianDistribution
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class KLAutoencoderForTraining(nn.Module):
    """Training view of a diffusers ``AutoencoderKL``: encode, sample the posterior, decode."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> KLAutoencoderOutput:
        posterior = self.vae.encode(images).latent_dist  # over (B, latent_channels, H/f, W/f)
        sample = self.vae.decode(posterior.sample()).sample  # (B, 3, H, W)
        return KLAutoencoderOutput(sample=sample, posterior=posterior)

    def get_last_layer(self) -> torch.Tensor:
        return self.vae.decoder.conv_out.weight

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        self.vae.save_pretrained(save_directory, **kwargs)


def _reinit_quantizer(model: nn.Module, quantizer: dict[str, Any]) -> None:
    """Replace a loaded tokenizer's quantizer by a freshly initialised one (``--reinit_codebook``): its own
    config with ``quantizer`` merged in (a different ``name`` replaces it, :func:`coda_hf.settings.deep_merge`)."""
    from ..quantizers import build_quantizer
    from ..settings import deep_merge

    spec = deep_merge(model.quantizer.to_dict(), quantizer or {})
    name = spec.pop("name")
    spec.setdefault("dim", getattr(model.quantizer, "dim", None))
    if spec["dim"] is None:
        spec.pop("dim")
    new = build_quantizer(name, **spec).to(next(model.quantizer.parameters(), torch.empty(0)).device)
    model.quantizer = new
    model.register_to_config(quantizer=new.to_dict())
    logger.info("re-initialised the codebook: %s", new.to_dict())


def build_model(config: TrainingConfig) -> nn.Module:
    """The trainable module of ``config.model`` (see the module docstring)."""
    kwargs = dict(config.model_kwargs)
    if config.model == "vae":
        if config.pretrained_model:
            from ..models.loading import load_autoencoder_kl

            vae = load_autoencoder_kl(config.pretrained_model, subfolder=config.vae_subfolder, **kwargs)
        else:
            vae = AutoencoderKL(**kwargs)
        return KLAutoencoderForTraining(vae)

    if config.model == "vqgan":
        from ..models.vqgan import VQGANModel

        if config.pretrained_model:
            model = VQGANModel.from_pretrained(config.pretrained_model, **kwargs)
        else:
            model = VQGANModel(quantizer=config.quantizer or None, **kwargs)
    else:
        from ..models.coda_vq import CodaVQModel

        if config.pretrained_model:
            model = CodaVQModel.from_pretrained(config.pretrained_model, **kwargs)
        else:
            extra = dict(kwargs)
            if config.vae_subfolder is not None:
                extra["subfolder"] = config.vae_subfolder
            if config.preset is not None:
                extra["preset"] = config.preset
            if config.quantizer:
                extra["quantizer"] = config.quantizer
            model = CodaVQModel.from_vae(config.pretrained_vae, **extra)
    if config.pretrained_model and config.reinit_codebook:
        _reinit_quantizer(model, config.quantizer)
    elif config.pretrained_model and config.quantizer:
        logger.warning("--quantizer options are ignored when fine-tuning without --reinit_codebook: the "
                       "pretrained model's codebook and quantizer are kept")
    return model


@torch.no_grad()
def data_initialize(
    model: nn.Module, batches, num_images: int, device: torch.device | str = "cpu", seed: int | None = None
) -> int:
    """Data-dependent start of ``model.quantizer`` (when it ``needs_data_init``) from ``num_images`` images.

    ``batches`` yields training batches (``{"pixel_values": (B, 3, H, W)}``); their inference latents
    (``encode_latents`` in eval mode: the posterior mean for a CODA model) go to ``quantizer.initialize``
    all at once, so the codes are sampled from many images rather than the first batch alone. ``seed``:
    the draw uses its own generator, so two runs on the same data and seed start from the same codebook
    whatever else they initialise (a LoRA row and its LoRA-free twin); ``None``: the global RNG. Under
    ``torch.distributed`` every rank calls it; rank 0's sample is broadcast. Returns the images used
    (0 when the quantizer needs no initialisation).
    """
    quantizer = getattr(model, "quantizer", None)
    if quantizer is None or not quantizer.needs_data_init or num_images < 1:
        return 0
    was_training = model.training
    model.eval()
    try:
        latents, seen = [], 0
        while seen < num_images:
            images = next(batches)["pixel_values"][: num_images - seen].to(device)
            latents.append(model.encode_latents(images))  # (b, C, h, w)
            seen += images.shape[0]
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        latents = torch.cat(latents)
        # what the quantizer sees: the latents, or their tiles (latent_tile_size)
        quantizer.initialize(model.quantizer_input(latents) if hasattr(model, "quantizer_input") else latents, generator)
    finally:
        model.train(was_training)
    return seen


def save_model(model: nn.Module, output_dir: str | Path) -> None:
    """``save_pretrained`` (safetensors) of the tokenizer, or of the bare ``AutoencoderKL`` for ``vae`` runs."""
    model.save_pretrained(str(output_dir), safe_serialization=True)
