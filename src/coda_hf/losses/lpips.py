"""LPIPS (Zhang et al. 2018) with a VGG16 trunk written here, loadable from real weights.

Layer layout matches torchvision's ``vgg16().features`` index for index (``features.0`` ...
``features.30``) so a torchvision VGG16 state dict loads unchanged; the linear heads are named
``lin0.model.1`` ... ``lin4.model.1`` like the ``lpips`` package (``Dropout`` at 0, 1x1 conv at 1),
so its ``vgg.pth`` head weights load too (after conversion to safetensors). The full
``lpips.LPIPS`` / taming ``net.sliceK.N`` naming is remapped on load.

Weights come from a local safetensors file or a Hub repo (``hf_hub_download``); nothing is bundled,
so without weights this module is randomly initialised (shape tests only).
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

# torchvision VGG16 "D" configuration: channels per conv, "M" = 2x2 max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices into ``features`` of the ReLU outputs LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# The LPIPS ScalingLayer constants: (x - shift) / scale on [-1, 1] inputs.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def make_vgg16_features() -> nn.Sequential:
    """The 31-module ``features`` stack of torchvision's VGG16 (indices 0..30)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return nn.Sequential(*layers)


class ScalingLayer(nn.Module):
    """LPIPS input normalisation: ``(x - shift) / scale`` for ``[-1, 1]`` RGB."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A non-negative-weighted 1x1 conv from ``channels`` to one distance map (``model.1`` = conv)."""

    def __init__(self, channels: int, use_dropout: bool = True):
        super().__init__()
        self.model = nn.Sequential(
            nn.Dropout() if use_dropout else nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise a ``(B, C, H, W)`` feature map along channels (LPIPS ``normalize_tensor``).

    ``x / (||x|| + eps)`` as in LPIPS; the squared norm is clamped at ``eps**2`` before the square
    root so that an all-zero feature vector gets a zero (not NaN) gradient.
    """
    return x / (x.pow(2).sum(dim=1, keepdim=True).clamp_min(eps * eps).sqrt() + eps)


def _remap_key(key: str) -> str | None:
    """Map torchvision / lpips / taming key names onto this module's; ``None`` = not ours."""
    if key.startswith("module."):
        key = key[len("module.") :]
    m = re.fullmatch(r"(?:net\.)?slice\d\.(\d+)\.(weight|bias)", key)
    if m:  # lpips.LPIPS / taming: net.slice2.5.weight -> vgg.features.5.weight (same global index)
        return f"vgg.features.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"(?:vgg\.|net\.)?features\.(\d+)\.(weight|bias)", key)
    if m:  # torchvision vgg16: features.5.weight
        return f"vgg.features.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"lin(\d)\.model\.1\.weight", key)
    if m:
        return key
    return None


class LPIPS(nn.Module):
    """LPIPS distance with the VGG16 trunk; input ``(B, 3, H, W)`` in ``[-1, 1]``, output ``(B,)``.

    ``d(x, y) = sum_l mean_{h,w} w_l . (n(f_l(x)) - n(f_l(y)))^2`` with ``n`` the channel
    normalisation and ``w_l`` the 1x1 linear heads. Frozen (no trainable parameters).

    Args:
        weights: optional safetensors file path (or a plain state-dict ``.pth`` such as the lpips
            package's ``vgg.pth``, loaded with ``weights_only=True``), or a Hub repo id (then
            ``filename`` inside it), holding trunk and/or head weights (torchvision / lpips / taming
            naming all accepted).
        filename: file inside the Hub repo when ``weights`` is a repo id.
        strict: require every trunk and head weight to be present in ``weights``.
    """

    def __init__(
        self, weights: str | None = None, filename: str = "lpips_vgg.safetensors", strict: bool = True
    ):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.vgg = nn.Module()
        self.vgg.features = make_vgg16_features()
        for i, ch in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{i}", NetLinLayer(ch))
        if weights is not None:
            self.load_weights(weights, filename=filename, strict=strict)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        # Frozen metric network: dropout stays off.
        return super().train(False)

    @property
    def lins(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{i}") for i in range(len(LPIPS_CHANNELS))]

    def load_weights(
        self, weights: str, filename: str = "lpips_vgg.safetensors", strict: bool = True
    ) -> None:
        """Load a safetensors / state-dict file (local path, or ``filename`` in Hub repo ``weights``).

        Heads-only files (like lpips' ``vgg.pth``) need ``strict=False`` plus separately loaded
        VGG16 trunk weights (a torchvision ``vgg16`` state dict converted to safetensors).
        """
        from safetensors.torch import load_file

        if os.path.isfile(weights):
            path = weights
        else:
            if os.path.sep in weights and not re.fullmatch(r"[\w.-]+/[\w.-]+", weights):
                raise FileNotFoundError(f"LPIPS weights: no such file {weights!r}")
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(repo_id=weights, filename=filename)
        if path.endswith(".safetensors"):
            raw = load_file(path)
        elif path.endswith((".pth", ".pt", ".bin")):
            # e.g. the lpips package's vgg.pth: a plain state dict, read without unpickling code.
            raw = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"LPIPS weights must be a .safetensors (or state-dict .pth) file; got {path!r}")
        state = {}
        for key, value in raw.items():
            new = _remap_key(key)
            if new is not None:
                state[new] = value
        if not state:
            raise ValueError(
                f"LPIPS weights {path!r} hold no VGG16 'features.*' or 'lin*.model.1.weight' keys"
            )
        missing, _ = self.load_state_dict(state, strict=False)
        if strict and missing:
            raise ValueError(f"LPIPS weights {path!r} miss {len(missing)} keys, e.g. {missing[:4]}")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped ReLU maps (relu1_2 .. relu5_3) of the scaled input."""
        feats, h = [], self.scaling_layer(x)
        taps = set(LPIPS_TAPS)
        for i, layer in enumerate(self.vgg.features[: LPIPS_TAPS[-1] + 1]):
            h = layer(h)
            if i in taps:
                feats.append(h)
        return feats

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if inputs.shape != targets.shape or inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (B, 3, H, W) images of equal shape; got {tuple(inputs.shape)}, {tuple(targets.shape)}"
            )
        fx, fy = self.features(inputs), self.features(targets)
        dist = 0.0
        for lin, a, b in zip(self.lins, fx, fy):
            diff = (normalize_channels(a) - normalize_channels(b)).pow(2)  # (B, C_l, H_l, W_l)
            dist = dist + lin(diff).mean(dim=(1, 2, 3))  # spatial average -> (B,)
        return dist
