"""KL divergence of a diagonal Gaussian posterior to N(0, I), for continuous (beta-)VAEs.

The closed form lives in diffusers' ``DiagonalGaussianDistribution.kl()``; we call it, never
re-derive it: ``KL = 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)`` over ``(C, H, W)``.
"""

from __future__ import annotations

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution


def kl_divergence(
    posterior: DiagonalGaussianDistribution | None = None,
    mean: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B,)`` KL(q || N(0, I)) summed over latent elements.

    Pass either a diffusers ``posterior`` (``AutoencoderKL.encode(x).latent_dist``) or the
    ``(B, C, H, W)`` ``mean`` and ``logvar`` tensors.
    """
    if posterior is None:
        if mean is None or logvar is None:
            raise ValueError("kl_divergence needs a posterior or both mean and logvar")
        if mean.shape != logvar.shape or mean.ndim != 4:
            raise ValueError(
                f"mean and logvar must both be (B, C, H, W); got {tuple(mean.shape)} and {tuple(logvar.shape)}"
            )
        posterior = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    elif mean is not None or logvar is not None:
        raise ValueError("pass either posterior or mean/logvar, not both")
    return posterior.kl()


def kl_per_channel(posterior: DiagonalGaussianDistribution) -> torch.Tensor:
    """``(B, C)`` KL(q || N(0, I)) of each latent channel, summed over its ``(H, W)`` positions.

    The same closed form (diffusers' ``kl()``), applied to each channel as its own one-channel posterior;
    ``kl_per_channel(p).sum(1)`` equals ``p.kl()``. For a dense VAE (``(B, L, 1, 1)`` latents) this is the
    KL of each latent dimension: the "active units" picture of a beta-VAE.
    """
    mean, logvar = posterior.mean, posterior.logvar  # (B, C, H, W) each
    b, c, h, w = mean.shape
    if posterior.deterministic:  # diffusers' kl() is then a scalar 0
        return mean.new_zeros(b, c)
    params = torch.stack([mean, logvar], dim=2).reshape(b * c, 2, h, w)  # one (mean, logvar) pair per channel
    one_channel = DiagonalGaussianDistribution(params, deterministic=posterior.deterministic)
    return one_channel.kl().reshape(b, c)


def kl_loss(
    posterior: DiagonalGaussianDistribution | None = None,
    mean: torch.Tensor | None = None,
    logvar: torch.Tensor | None = None,
    beta: float = 1.0,
) -> torch.Tensor:
    """Scalar beta-VAE penalty: ``beta * mean_B KL`` (KL summed over latent elements)."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    return beta * kl_divergence(posterior, mean, logvar).mean()
