"""InceptionV3 pool features for FID, the TensorFlow-FID network of pytorch-fid, without torchvision.

The architecture is Inception-v3 (Szegedy et al. 2016) with the changes of the TF graph
``inception-2015-12-05`` that FID is defined on (as ported by pytorch-fid): 1008 classes, no aux
head, average pools that ignore padding, and a max pool in the last block's pool branch.
Module names follow torchvision / pytorch-fid (``Conv2d_1a_3x3.conv.weight``,
``Mixed_7c.branch3x3dbl_3b.bn.running_var``, ``fc.weight`` ...), so the pytorch-fid weights file
``pt_inception-2015-12-05-6726825d.pth`` loads key for key (``torch.load(weights_only=True)``), or its
safetensors conversion (:func:`convert_pytorch_fid_weights`), or a Hub repo holding that file.

Input: ``(B, 3, H, W)`` in ``[-1, 1]`` (pytorch-fid maps its ``[0, 1]`` input to ``[-1, 1]`` first);
images are bilinearly resized to 299x299. Output of :meth:`InceptionV3Features.forward`:
``(B, 2048)`` pool features.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

PYTORCH_FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
SAFETENSORS_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.safetensors"


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 average pool does not count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 64 + 64 + 96 + ``pool_features`` channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 384 + 96 + ``in_channels``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b..e): 4 x 192 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 320 + 192 + ``in_channels``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (Mixed_7b/c): 320 + 768 + 768 + 192 = 2048 channels.

    ``pool="avg"`` (Mixed_7b) uses the padding-free average pool; ``pool="max"`` (Mixed_7c) a 3x3
    max pool, as in the TF FID graph.
    """

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max'; got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], dim=1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], dim=1)


class InceptionV3Features(nn.Module):
    """Frozen FID Inception-v3 returning ``(B, 2048)`` final-pool features.

    Args:
        weights: ``None`` (random init: shape-only tests), a local ``.safetensors`` / ``.pth`` file
            (the pytorch-fid state dict; ``.pth`` is read with ``weights_only=True``), a directory
            holding one of those, or a Hub repo id holding ``pt_inception-2015-12-05-6726825d.safetensors``
            (or ``.pth``, or ``model.safetensors``).
        resize_to: input size the network sees (299 for FID; smaller only for fast tests).
    """

    feature_dim = 2048

    def __init__(self, weights: str | Path | None = None, resize_to: int = 299):
        super().__init__()
        self.resize_to = int(resize_to)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)  # -> 256
        self.Mixed_5c = InceptionA(256, pool_features=64)  # -> 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # -> 288
        self.Mixed_6a = InceptionB(288)  # -> 768, 17x17
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)  # -> 1280, 8x8
        self.Mixed_7b = InceptionE(1280, pool="avg")  # -> 2048
        self.Mixed_7c = InceptionE(2048, pool="max")  # -> 2048
        # The 1008-way TF classifier: unused for FID, kept so the weights file loads strictly.
        self.fc = nn.Linear(2048, 1008)
        if weights is not None:
            self.load_state_dict(load_inception_state_dict(weights))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        # Frozen feature network: BatchNorm always uses its running statistics.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, 2048)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"InceptionV3Features expects (B, 3, H, W) images in [-1, 1]; got {tuple(images.shape)}")
        x = images.to(self.fc.weight.dtype)
        if x.shape[-2:] != (self.resize_to, self.resize_to):
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # fmt: skip
            x = block(x)
        return x.mean(dim=(2, 3))  # (B, 2048) global average pool

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # pytorch-fid's file predates BatchNorm's num_batches_tracked buffers: accept it without them.
        state_dict = dict(state_dict)
        for key, value in self.state_dict().items():
            if key.endswith("num_batches_tracked"):
                state_dict.setdefault(key, value)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _resolve_weights_file(weights: str | Path) -> Path:
    path = Path(weights)
    candidates = (SAFETENSORS_WEIGHTS_NAME, "model.safetensors", PYTORCH_FID_WEIGHTS_NAME)
    if path.is_file():
        return path
    if path.is_dir():
        for name in candidates:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no Inception weights in {path}; expected one of {list(candidates)}")
    # Not a local path: a Hub repo id.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in candidates:
        try:
            return Path(hf_hub_download(str(weights), name))
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"Hub repo {weights} holds none of {list(candidates)}")


def load_inception_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """Read the pytorch-fid Inception state dict from a file, a directory or a Hub repo id."""
    path = _resolve_weights_file(weights)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def convert_pytorch_fid_weights(pth_path: str | Path, output_path: str | Path) -> Path:
    """Convert pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` to safetensors (checked by loading)."""
    from safetensors.torch import save_file

    state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    InceptionV3Features().load_state_dict(state)  # raises on any key or shape mismatch
    output_path = Path(output_path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(output_path))
    logger.info("wrote %s (%d tensors)", output_path, len(state))
    return output_path
