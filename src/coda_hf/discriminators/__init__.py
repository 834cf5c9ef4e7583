"""Discriminators for adversarial tokenizer training: PatchGAN and a projected (frozen-feature) one."""

from .augment import AUGMENT_POLICIES, diff_augment
from .patchgan import PatchGANDiscriminator
from .projected import (
    BatchNormLocal,
    DiscriminatorHead,
    EfficientNetFeatureLevels,
    ProjectedDiscriminator,
    TransformersViTFeatures,
)

DISCRIMINATORS = {"patchgan": PatchGANDiscriminator, "projected": ProjectedDiscriminator}


def build_discriminator(name: str, **kwargs):
    """``build_discriminator("patchgan", ndf=64)`` / ``("projected", ...)`` from JSON-safe kwargs."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; choose from {sorted(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](**kwargs)


__all__ = [
    "AUGMENT_POLICIES",
    "DISCRIMINATORS",
    "BatchNormLocal",
    "DiscriminatorHead",
    "EfficientNetFeatureLevels",
    "PatchGANDiscriminator",
    "ProjectedDiscriminator",
    "TransformersViTFeatures",
    "build_discriminator",
    "diff_augment",
]
