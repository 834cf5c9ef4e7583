"""A small fully connected (beta-)VAE (Kingma & Welling 2013, arXiv 1312.6114; Higgins et al. 2017, beta-VAE).

``images (B, C, H, W) in [0, 1] -> flatten -> MLP -> (mean, logvar) of q(z|x), a diagonal Gaussian over
L latent dimensions -> z -> MLP -> Bernoulli logits of p(x|z) per pixel``.

It is the model of the atlas's latent-space and ELBO views (``coda-hf app``): with ``latent_dim=2`` the
latent space is a plane one can click on; a family trained with different KL weights ``beta`` shows the
trade-off between the two ELBO terms. ``beta`` is a training setting (the loss is
``reconstruction_nll + beta * KL``, :meth:`DenseVAEOutput.loss`), never part of the model config.

Latent layout: the posterior's tensors are ``(B, L, 1, 1)`` (an ``AutoencoderKL``-style latent image of
``L`` channels and one pixel), so diffusers' :class:`DiagonalGaussianDistribution` and
:func:`coda_hf.losses.kl_per_channel` apply unchanged; :meth:`DenseVAE.decode` takes ``(B, L)`` or
``(B, L, 1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..losses.kl import kl_per_channel

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass
class DenseVAEDecoderOutput(BaseOutput):
    """``DenseVAE.decode`` result: the Bernoulli decoder ``p(x|z)``.

    Attributes:
        sample: ``(B, C, H, W)`` its mean ``sigmoid(logits)`` in ``[0, 1]`` (the reconstructed image).
        logits: ``(B, C, H, W)`` its per-pixel logits.
    """

    sample: torch.Tensor
    logits: torch.Tensor


@dataclass
class DenseVAEOutput(BaseOutput):
    """``DenseVAE.forward`` result: the reconstruction and the two terms of the ELBO, in nats.

    Attributes:
        sample: ``(B, C, H, W)`` reconstruction in ``[0, 1]`` (decoder mean at the chosen ``z``).
        logits: ``(B, C, H, W)`` Bernoulli logits of ``p(x|z)``.
        posterior: ``q(z|x)``, diffusers' ``DiagonalGaussianDistribution`` with ``(B, L, 1, 1)`` tensors.
        latents: ``(B, L)`` the ``z`` that was decoded (a posterior sample or its mean).
        reconstruction_nll: ``(B,)`` ``-log p(x|z)`` summed over pixels (the input is the target).
        kl: ``(B, L)`` ``KL(q(z_j|x) || N(0, 1))`` of each latent dimension.
    """

    sample: torch.Tensor
    logits: torch.Tensor
    posterior: DiagonalGaussianDistribution
    latents: torch.Tensor
    reconstruction_nll: torch.Tensor
    kl: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        """``(B,)`` evidence lower bound ``log p(x|z) - KL`` (a one-sample estimate when ``z`` was sampled)."""
        return -(self.reconstruction_nll + self.kl.sum(dim=1))

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """The beta-VAE objective ``mean_B(reconstruction_nll + beta * KL)`` (``beta = 1``: the negative ELBO)."""
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        return (self.reconstruction_nll + beta * self.kl.sum(dim=1)).mean()


def _mlp(sizes: list[int], act_fn: str) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with an activation after every one but the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[act_fn]())
    return nn.Sequential(*layers)


class DenseVAE(ModelMixin, ConfigMixin):
    """Fully connected VAE with a diagonal Gaussian posterior and a Bernoulli pixel likelihood.

    Args:
        image_size: side of the square input images (Fashion-MNIST: 28).
        in_channels: image channels (Fashion-MNIST: 1).
        hidden_sizes: widths of the encoder's hidden layers; the decoder mirrors them.
        latent_dim: ``L``, the number of latent dimensions (2 for a clickable latent plane).
        act_fn: activation between layers (``"silu"``, ``"relu"``, ``"gelu"``, ``"tanh"``).
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 28,
        in_channels: int = 1,
        hidden_sizes: list[int] = (256,),
        latent_dim: int = 16,
        act_fn: str = "silu",
    ):
        super().__init__()
        hidden = [int(h) for h in hidden_sizes]
        if image_size < 1 or in_channels < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"image_size, in_channels, latent_dim and every hidden size must be >= 1; got image_size={image_size}, "
                f"in_channels={in_channels}, latent_dim={latent_dim}, hidden_sizes={hidden}"
            )
        if act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn must be one of {sorted(ACTIVATIONS)}; got {act_fn!r}")
        pixels = in_channels * image_size * image_size
        self.encoder = _mlp([pixels, *hidden, 2 * latent_dim], act_fn)  # -> [mean, logvar]
        self.decoder = _mlp([latent_dim, *hidden[::-1], pixels], act_fn)  # -> Bernoulli logits
        self.register_to_config(hidden_sizes=hidden)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, s = int(self.config.in_channels), int(self.config.image_size)
        return c, s, s

    def _check_images(self, images: torch.Tensor) -> None:
        shape = self.image_shape
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, {', '.join(map(str, shape))}) float tensor in [0, 1]; got {got}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor in [0, 1]; got dtype {images.dtype}")

    def encode(self, images: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """``(B, C, H, W)`` images in ``[0, 1]`` -> ``q(z|x)`` (``.latent_dist``, ``(B, L, 1, 1)`` tensors)."""
        self._check_images(images)
        params = self.encoder(images.flatten(1))  # (B, 2L) = [mean, logvar]
        posterior = DiagonalGaussianDistribution(params[:, :, None, None])
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> DenseVAEDecoderOutput | tuple:
        """``(B, L)`` or ``(B, L, 1, 1)`` latents -> the decoder's mean image in ``[0, 1]`` and its logits."""
        dim = int(self.config.latent_dim)
        if not isinstance(latents, torch.Tensor) or latents.ndim not in (2, 4) or latents[0].numel() != dim:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be (B, {dim}) or (B, {dim}, 1, 1); got {got}")
        logits = self.decoder(latents.flatten(1)).view(-1, *self.image_shape)  # (B, C, H, W)
        sample = torch.sigmoid(logits)
        return DenseVAEDecoderOutput(sample=sample, logits=logits) if return_dict else (sample, logits)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DenseVAEOutput | tuple:
        """Encode, decode a posterior sample (``sample_posterior``, the reparameterisation trick
        ``z = mean + std * eps``) or the posterior mean, and score the reconstruction against ``sample``."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()  # (B, L, 1, 1)
        decoded = self.decode(z)
        # Bernoulli log-likelihood of the (grey-level) pixels, summed per image: -BCE with logits.
        nll = F.binary_cross_entropy_with_logits(decoded.logits, sample.to(decoded.logits.dtype), reduction="none")
        out = DenseVAEOutput(
            sample=decoded.sample, logits=decoded.logits, posterior=posterior, latents=z.flatten(1),
            reconstruction_nll=nll.flatten(1).sum(dim=1), kl=kl_per_channel(posterior),
        )  # fmt: skip
        return out if return_dict else out.to_tuple()


__all__ = ["DenseVAE", "DenseVAEDecoderOutput", "DenseVAEOutput"]
