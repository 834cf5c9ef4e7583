"""GAN objectives, the VQGAN adaptive generator weight and discriminator warm-up.

Conventions: ``logits_real`` / ``logits_fake`` are raw discriminator outputs of any shape
``(B, ...)`` (PatchGAN maps, projected-head token logits); every loss averages over all of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_LOSSES = ("hinge", "non_saturating")


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"gan loss must be one of {GAN_LOSSES}; got {kind!r}")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(G(z))))`` (taming-transformers' scaling)."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def non_saturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean softplus(-D(x)) + mean softplus(D(G(z))))``: BCE with real=1, fake=0."""
    return 0.5 * (F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``-mean D(G(z))``."""
    return -logits_fake.float().mean()


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``mean softplus(-D(G(z)))`` = ``-mean log sigmoid(D(G(z)))``."""
    return F.softplus(-logits_fake.float()).mean()


def discriminator_loss(
    logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge"
) -> torch.Tensor:
    """Discriminator objective of ``kind`` in :data:`GAN_LOSSES`."""
    _check_kind(kind)
    fn = hinge_d_loss if kind == "hinge" else non_saturating_d_loss
    return fn(logits_real, logits_fake)


def generator_loss(logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Generator objective of ``kind`` in :data:`GAN_LOSSES`."""
    _check_kind(kind)
    return hinge_g_loss(logits_fake) if kind == "hinge" else non_saturating_g_loss(logits_fake)


def warmup_factor(step: int, start_step: int, value: float = 1.0) -> float:
    """Discriminator warm-up: ``0`` before ``start_step``, ``value`` from it on (taming ``adopt_weight``)."""
    return 0.0 if step < start_step else float(value)


def adaptive_generator_weight(
    nll_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    disc_weight: float = 1.0,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN adaptive weight (Esser et al. 2021, eq. 7).

    ``lambda = ||grad_{last} L_rec|| / (||grad_{last} L_G|| + eps)``, clamped to ``[0, max_weight]``,
    detached, times ``disc_weight``. ``last_layer`` is the decoder's final conv weight
    (``model.get_last_layer()``); both losses must depend on it.
    """
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise ValueError("adaptive_generator_weight needs last_layer: a tensor that requires grad")
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grads) / (torch.norm(g_grads) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach() * disc_weight
