"""Tokenizer training losses: pixel, perceptual (LPIPS / EfficientNet), GAN, KL, and the composite."""

from .composite import DiscriminatorLossOutput, GeneratorLossOutput, ReconstructionLoss, TokenizerLoss
from .gan import (
    GAN_LOSSES,
    adaptive_generator_weight,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    warmup_factor,
)
from .kl import kl_divergence, kl_loss, kl_per_channel
from .lpips import LPIPS, make_vgg16_features, normalize_channels
from .perceptual import PERCEPTUAL_BACKENDS, EfficientNetPerceptualDistance, PerceptualLoss
from .pixel import l1_loss, l2_loss

__all__ = [
    "GAN_LOSSES",
    "LPIPS",
    "PERCEPTUAL_BACKENDS",
    "DiscriminatorLossOutput",
    "EfficientNetPerceptualDistance",
    "GeneratorLossOutput",
    "PerceptualLoss",
    "ReconstructionLoss",
    "TokenizerLoss",
    "adaptive_generator_weight",
    "discriminator_loss",
    "generator_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "kl_divergence",
    "kl_loss",
    "kl_per_channel",
    "l1_loss",
    "l2_loss",
    "make_vgg16_features",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "normalize_channels",
    "warmup_factor",
]
