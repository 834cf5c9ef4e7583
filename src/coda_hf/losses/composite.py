"""The tokenizer training objective: what the training loop calls.

Generator step (``ReconstructionLoss.generator_loss``)::

    total = l1_weight * L1 + l2_weight * L2 + perceptual_weight * P          (= nll)
          + disc_factor * lambda * L_G                                        (adversarial)
          + sum(quantizer_losses)                                             (already weighted)
          + kl_weight * KL                                                    (continuous VAEs only)

with ``lambda`` the VQGAN adaptive weight (times ``gan_weight``) or ``gan_weight`` itself, and
``disc_factor`` 0 before ``disc_start`` and 1 from it on. Defaults follow the CODA recipe
(coda-facts.md): L1 0.2, L2 1.0, perceptual 1.0, GAN 1.0, hinge, adaptive weight.
Discriminator step: ``discriminator_loss``.

The discriminator is the caller's module (e.g. :func:`coda_hf.discriminators.build_discriminator`), passed
to each call: a training loop gives the generator step the bare module and the discriminator step its
DDP-wrapped one, and trains its parameters with its own optimiser.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..discriminators import build_discriminator
from .gan import GAN_LOSSES, adaptive_generator_weight, discriminator_loss, generator_loss, warmup_factor
from .kl import kl_loss
from .perceptual import PerceptualLoss
from .pixel import l1_loss, l2_loss


@dataclass
class GeneratorLossOutput:
    """Named terms of the generator (autoencoder) step; every term is a scalar tensor.

    ``l1``, ``l2``, ``perceptual``, ``gan`` (the raw generator GAN loss), ``quantizer``, ``kl`` are
    UNWEIGHTED except ``quantizer`` (the quantizer weights its own losses) and ``kl`` (times beta).
    ``nll`` is the weighted reconstruction part; ``gan_weight`` the applied adversarial weight
    (adaptive weight x disc factor, detached); ``total`` what to backpropagate.
    """

    total: torch.Tensor
    nll: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    perceptual: torch.Tensor
    gan: torch.Tensor
    gan_weight: torch.Tensor
    quantizer: torch.Tensor
    kl: torch.Tensor
    disc_factor: float
    quantizer_losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        """Flat ``{name: float}`` for logging (``quantizer/<name>`` for each quantizer term)."""
        out = {
            name: float(getattr(self, name).detach())
            for name in ("total", "nll", "l1", "l2", "perceptual", "gan", "gan_weight", "quantizer", "kl")
        }
        out["disc_factor"] = float(self.disc_factor)
        out.update({f"quantizer/{k}": float(v.detach()) for k, v in self.quantizer_losses.items()})
        return out


@dataclass
class DiscriminatorLossOutput:
    """Discriminator step: ``total = disc_factor * d_loss``; mean logits for monitoring (detached)."""

    total: torch.Tensor
    d_loss: torch.Tensor
    logits_real: torch.Tensor
    logits_fake: torch.Tensor
    disc_factor: float

    def to_dict(self) -> dict[str, float]:
        return {
            "disc/total": float(self.total.detach()),
            "disc/d_loss": float(self.d_loss.detach()),
            "disc/logits_real": float(self.logits_real),
            "disc/logits_fake": float(self.logits_fake),
            "disc/disc_factor": float(self.disc_factor),
        }


class ReconstructionLoss(nn.Module):
    """Pixel + perceptual + adversarial (+ quantizer, + KL) tokenizer loss; the discriminator is passed in.

    Args:
        l1_weight: weight of the pixel L1 loss.
        l2_weight: weight of the pixel L2 (MSE) loss.
        perceptual_weight: weight of the perceptual loss (0 disables it and builds no network).
        perceptual_backend: ``"efficientnet"`` (offline; uncalibrated LPIPS-style, not LPIPS) or ``"lpips"``.
        perceptual_pretrained: EfficientNet backend: load ImageNet weights (``False`` only for tests).
        lpips_weights: LPIPS backend: safetensors path or Hub repo id.
        gan_weight: weight of the generator GAN loss (multiplies the adaptive weight); 0 disables the GAN
            (otherwise the calls need a ``discriminator``).
        gan_loss: ``"hinge"`` or ``"non_saturating"``.
        adaptive_weight: use the VQGAN adaptive weight (needs ``last_layer`` in the generator step).
        adaptive_weight_max: clamp of the adaptive weight.
        disc_start: optimisation step from which the GAN terms are on (warm-up; 0 = from the start).
            coda-facts.md does not give the authors' value.
        kl_weight: beta of the beta-VAE KL term, used when a ``posterior`` is passed.
        discriminator / discriminator_kwargs: deprecated: a discriminator NAME built here and used when a
            call passes none. Build it yourself (``build_discriminator(name, **kwargs)``) and pass it to
            :meth:`generator_loss` / :meth:`discriminator_loss`.
    """

    def __init__(
        self,
        l1_weight: float = 0.2,
        l2_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        perceptual_backend: str = "efficientnet",
        perceptual_pretrained: bool = True,
        lpips_weights: str | None = None,
        gan_weight: float = 1.0,
        gan_loss: str = "hinge",
        adaptive_weight: bool = True,
        adaptive_weight_max: float = 1e4,
        disc_start: int = 0,
        kl_weight: float = 1e-6,
        discriminator: str | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the arguments, JSON-safe
        super().__init__()
        if gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {GAN_LOSSES}; got {gan_loss!r}")
        for name, w in (
            ("l1_weight", l1_weight),
            ("l2_weight", l2_weight),
            ("perceptual_weight", perceptual_weight),
            ("gan_weight", gan_weight),
            ("kl_weight", kl_weight),
        ):
            if w < 0:
                raise ValueError(f"{name} must be >= 0; got {w}")
        if disc_start < 0:
            raise ValueError(f"disc_start must be >= 0; got {disc_start}")
        self.config = config
        self.l1_weight, self.l2_weight, self.perceptual_weight = l1_weight, l2_weight, perceptual_weight
        self.gan_weight, self.gan_loss, self.adaptive_weight = gan_weight, gan_loss, adaptive_weight
        self.adaptive_weight_max, self.disc_start, self.kl_weight = adaptive_weight_max, disc_start, kl_weight
        self.perceptual = (
            PerceptualLoss(perceptual_backend, pretrained=perceptual_pretrained, lpips_weights=lpips_weights)
            if perceptual_weight > 0
            else None
        )
        self.discriminator = None
        if discriminator is not None:
            warnings.warn(
                "ReconstructionLoss(discriminator=NAME) is deprecated: build it with coda_hf.discriminators."
                "build_discriminator(NAME, **kwargs) and pass it as generator_loss(..., discriminator=d) / "
                "discriminator_loss(..., discriminator=d)", FutureWarning, stacklevel=2,
            )  # fmt: skip
            if gan_weight > 0:
                self.discriminator = build_discriminator(discriminator, **(discriminator_kwargs or {}))

    @property
    def uses_gan(self) -> bool:
        """The generator loss has an adversarial term (``gan_weight > 0``)."""
        return self.gan_weight > 0

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Deprecated path: trainable parameters of the discriminator built here (frozen backbones excluded)."""
        if self.discriminator is None:
            return []
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    def _discriminator(self, discriminator: nn.Module | None) -> nn.Module:
        discriminator = discriminator if discriminator is not None else self.discriminator
        if discriminator is None:
            raise ValueError("gan_weight > 0 needs a discriminator: pass discriminator=build_discriminator(...) "
                             "(coda_hf.discriminators), or gan_weight=0")  # fmt: skip
        return discriminator

    def generator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        step: int = 0,
        last_layer: torch.Tensor | None = None,
        quantizer_losses: dict[str, torch.Tensor] | None = None,
        posterior=None,
        discriminator: nn.Module | None = None,
    ) -> GeneratorLossOutput:
        """Generator-step loss.

        Args:
            inputs / reconstructions: ``(B, 3, H, W)`` in ``[-1, 1]``.
            step: global optimisation step (for the ``disc_start`` warm-up).
            last_layer: the decoder's last weight (``model.get_last_layer()``), needed for the
                adaptive weight while gradients are enabled.
            quantizer_losses: ``QuantizerOutput.losses`` / model output ``losses`` (already weighted).
            posterior: a diffusers ``DiagonalGaussianDistribution`` for the beta-VAE KL term.
            discriminator: the discriminator (needed while the GAN term is on).

        Note: the GAN term backpropagates through the discriminator too; freeze its parameters for
        this step or zero its gradients before the discriminator step (``optimizer_d.zero_grad()``).
        """
        zero = reconstructions.new_zeros((), dtype=torch.float32)
        l1 = l1_loss(reconstructions, inputs)
        l2 = l2_loss(reconstructions, inputs)
        perceptual = self.perceptual(reconstructions, inputs) if self.perceptual is not None else zero
        nll = self.l1_weight * l1 + self.l2_weight * l2 + self.perceptual_weight * perceptual

        disc_factor = warmup_factor(step, self.disc_start)
        gan, gan_weight = zero, zero
        if self.uses_gan and disc_factor > 0:
            gan = generator_loss(self._discriminator(discriminator)(reconstructions), self.gan_loss)
            if self.adaptive_weight and torch.is_grad_enabled():
                if last_layer is None:
                    raise ValueError(
                        "adaptive_weight=True needs last_layer=model.get_last_layer() in generator_loss"
                    )
                gan_weight = adaptive_generator_weight(
                    nll, gan, last_layer, disc_weight=self.gan_weight, max_weight=self.adaptive_weight_max
                )
            else:
                gan_weight = torch.tensor(self.gan_weight, device=nll.device)
            gan_weight = gan_weight * disc_factor

        quantizer_losses = dict(quantizer_losses or {})
        quantizer = (
            torch.stack([v.float() for v in quantizer_losses.values()]).sum() if quantizer_losses else zero
        )
        kl = kl_loss(posterior, beta=self.kl_weight) if posterior is not None else zero
        total = nll + gan_weight * gan + quantizer + kl
        return GeneratorLossOutput(
            total=total, nll=nll, l1=l1, l2=l2, perceptual=perceptual, gan=gan, gan_weight=gan_weight,
            quantizer=quantizer, kl=kl, disc_factor=disc_factor, quantizer_losses=quantizer_losses,
        )  # fmt: skip

    def discriminator_loss(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor, step: int = 0,
        discriminator: nn.Module | None = None,
    ) -> DiscriminatorLossOutput:
        """Discriminator-step loss of ``discriminator`` on real ``inputs`` and (detached) ``reconstructions``."""
        if not self.uses_gan:
            raise ValueError(
                "discriminator_loss called but this ReconstructionLoss has no GAN (gan_weight=0)"
            )
        discriminator = self._discriminator(discriminator)
        disc_factor = warmup_factor(step, self.disc_start)
        logits_real = discriminator(inputs.detach())
        logits_fake = discriminator(reconstructions.detach())
        d_loss = discriminator_loss(logits_real, logits_fake, self.gan_loss)
        return DiscriminatorLossOutput(
            total=disc_factor * d_loss,
            d_loss=d_loss,
            logits_real=logits_real.detach().float().mean(),
            logits_fake=logits_fake.detach().float().mean(),
            disc_factor=disc_factor,
        )

    def forward(self, *args, **kwargs) -> GeneratorLossOutput:
        """Alias of :meth:`generator_loss`."""
        return self.generator_loss(*args, **kwargs)


# The same objective under the name the issue uses.
TokenizerLoss = ReconstructionLoss
