"""Frozen pretrained feature networks (perceptual loss, projected discriminator, FD-EffNet)."""

from .efficientnet import EfficientNetLite0Features, efficientnet_lite0_weights_path

__all__ = ["EfficientNetLite0Features", "efficientnet_lite0_weights_path"]
