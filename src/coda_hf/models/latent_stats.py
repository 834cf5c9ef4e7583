"""Latent normalisation of a continuous VAE: ``z = (latent - shift_factor) * scaling_factor``.

Pretrained VAEs ship these two numbers (SD: scale 0.18215; FLUX: shift 0.1159, scale 0.3611) so that the
latents a quantizer or a diffusion model sees have zero mean and unit variance. A VAE you trained yourself
(``train_tokenizer.py --model vae``) has diffusers' default 0.18215, which fits nothing: measure them on
your data with :func:`estimate_latent_normalization` (or ``coda-hf latent-stats --write``) before
``CodaVQModel.from_vae`` reads them from the VAE config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch


@torch.no_grad()
def estimate_latent_normalization(vae, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """``shift_factor`` (mean) and ``scaling_factor`` (1 / std) of the posterior-mean latents over ``batches``.

    ``batches``: ``(B, 3, H, W)`` images in ``[-1, 1]``. All latent elements (every channel and position)
    share one shift and one scale, as in the SD / FLUX VAE configs. Sums are accumulated in float64.
    """
    device = next(vae.parameters()).device
    count, total, total_sq, num_images = 0, 0.0, 0.0, 0
    for images in batches:
        latents = vae.encode(images.to(device)).latent_dist.mean.double()  # (B, C, h, w)
        count += latents.numel()
        total += float(latents.sum())
        total_sq += float(latents.pow(2).sum())
        num_images += images.shape[0]
    if count == 0:
        raise ValueError("estimate_latent_normalization: batches yielded no images")
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if std == 0.0:
        raise ValueError("estimate_latent_normalization: the latents are constant (std 0); is the VAE trained?")
    return {"shift_factor": mean, "scaling_factor": 1.0 / std, "num_images": num_images}


def write_latent_normalization(vae_dir: str | Path, stats: dict[str, float]) -> Path:
    """Store ``shift_factor`` / ``scaling_factor`` in a saved VAE's ``config.json`` (atomic replace)."""
    path = Path(vae_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give the directory of a saved AutoencoderKL")
    config = json.loads(path.read_text())
    config["shift_factor"] = float(stats["shift_factor"])
    config["scaling_factor"] = float(stats["scaling_factor"])
    from ..output_files import write_text_atomic

    return write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
