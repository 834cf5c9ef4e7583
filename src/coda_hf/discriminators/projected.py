"""Projected discriminator on frozen pretrained features (StyleGAN-T / Projected GAN style).

A frozen feature network maps images to several feature levels; a small trainable head per level
(spectral-norm convs + local batch norm + LeakyReLU, a residual block, a 1x1 logit conv) scores
every position. Logits of all levels are concatenated: output ``(B, sum_l N_l)``.

CODA's authors use frozen DINO ViT-S features (coda-facts.md). Offline we default to the
ImageNet-pretrained EfficientNet-Lite0 shipped in a wheel; pass any DINO/ViT model from
``transformers`` through :class:`TransformersViTFeatures` (``feature_network=``) to follow the paper.
"""

from __future__ import annotations

import contextvars
import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..features import EfficientNetLite0Features
from .augment import diff_augment, parse_policy

PROJECTED_BACKBONES = ("efficientnet", "custom")
# diffusers drops init kwargs listed in ``ignore_for_config`` on load; from_pretrained hands the
# user's feature network to __init__ through this context variable instead.
_LOADING_FEATURE_NETWORK: contextvars.ContextVar = contextvars.ContextVar("feature_network", default=None)


class BatchNormLocal(nn.Module):
    """StyleGAN-T's "virtual" batch norm: statistics over groups of ``virtual_bs`` samples.

    Works on ``(B, C, *spatial)``; falls back to one group when ``B`` is not divisible.
    """

    def __init__(self, channels: int, virtual_bs: int = 8, eps: float = 1e-5):
        super().__init__()
        self.virtual_bs, self.eps = virtual_bs, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        groups = math.ceil(b / self.virtual_bs)
        if b % groups:
            groups = 1
        xg = x.reshape(groups, b // groups, *x.shape[1:]).float()  # (G, B/G, C, *S)
        dims = [1] + list(range(3, xg.ndim))  # over samples in the group and positions
        mean = xg.mean(dim=dims, keepdim=True)
        var = xg.var(dim=dims, keepdim=True, unbiased=False)
        xg = (xg - mean) / torch.sqrt(var + self.eps)
        shape = [1, 1, -1] + [1] * (x.ndim - 2)
        xg = xg * self.weight.view(shape) + self.bias.view(shape)
        return xg.reshape_as(x).to(x.dtype)


def _sn_conv(dims: int, in_ch: int, out_ch: int, kernel_size: int) -> nn.Module:
    conv_cls = nn.Conv1d if dims == 1 else nn.Conv2d
    pad_mode = "circular" if dims == 1 else "zeros"  # StyleGAN-T: circular over the token axis
    return spectral_norm(
        conv_cls(in_ch, out_ch, kernel_size, padding=kernel_size // 2, padding_mode=pad_mode)
    )


class _Block(nn.Sequential):
    def __init__(self, dims: int, channels: int, kernel_size: int, virtual_bs: int):
        super().__init__(
            _sn_conv(dims, channels, channels, kernel_size),
            BatchNormLocal(channels, virtual_bs),
            nn.LeakyReLU(0.2, True),
        )


class DiscriminatorHead(nn.Module):
    """One level's trainable head: ``(B, C, L)`` tokens (``dims=1``) or ``(B, C, H, W)`` maps (``dims=2``)
    -> ``(B, L)`` / ``(B, H*W)`` logits.

    1x1 block, then a residual ``kernel_size`` block ``(x + f(x)) / sqrt(2)``, then a 1x1 logit conv.
    """

    def __init__(self, channels: int, dims: int = 1, kernel_size: int = 9, virtual_bs: int = 8):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (tokens) or 2 (maps); got {dims}")
        self.dims = dims
        self.proj = _Block(dims, channels, 1, virtual_bs)
        self.res = _Block(dims, channels, kernel_size, virtual_bs)
        self.cls = _sn_conv(dims, channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        h = (h + self.res(h)) / math.sqrt(2)
        return self.cls(h).flatten(1)  # (B, L)


class TransformersViTFeatures(nn.Module):
    """Hook for a user-supplied ViT/DINO model from ``transformers`` (e.g. ``Dinov2Model``).

    Frozen. ``forward`` maps ``(B, 3, H, W)`` images in ``[-1, 1]`` to a list of ``(B, C, N)`` patch
    token maps, one per entry of ``layers`` (0-based transformer block index; prefix tokens dropped).

    Args:
        model: a ``transformers`` vision model accepting ``pixel_values`` and ``output_hidden_states``.
        layers: block outputs to tap (StyleGAN-T uses 4 evenly spaced blocks).
        image_size: inputs are bilinearly resized to this square size.
        image_mean / image_std: the model's normalisation of ``[0, 1]`` RGB.
        num_prefix_tokens: tokens before the patch tokens (CLS, registers) to drop.
    """

    feature_kind = "tokens"

    def __init__(
        self,
        model: nn.Module,
        layers: tuple[int, ...] = (2, 5, 8, 11),
        image_size: int = 224,
        image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        num_prefix_tokens: int = 1,
    ):
        super().__init__()
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if hidden is None:
            raise ValueError(
                "TransformersViTFeatures needs a transformers model whose config has hidden_size"
            )
        n_blocks = getattr(model.config, "num_hidden_layers", None)
        if n_blocks is not None and any(i < 0 or i >= n_blocks for i in layers):
            raise ValueError(f"layers {tuple(layers)} out of range for a model with {n_blocks} blocks")
        self.model = model.eval().requires_grad_(False)
        self.layers, self.image_size, self.num_prefix_tokens = tuple(layers), image_size, num_prefix_tokens
        self.feature_channels = (int(hidden),) * len(self.layers)
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(
            images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        x = ((x + 1) / 2 - self.mean) / self.std
        hidden_states = self.model(pixel_values=x, output_hidden_states=True).hidden_states
        # hidden_states[0] is the embedding output; block i's output is hidden_states[i + 1].
        return [hidden_states[i + 1][:, self.num_prefix_tokens :].transpose(1, 2) for i in self.layers]


class EfficientNetFeatureLevels(nn.Module):
    """Chosen stage maps of frozen :class:`EfficientNetLite0Features`: list of ``(B, C_l, H_l, W_l)``."""

    feature_kind = "maps"

    def __init__(
        self, levels: tuple[int, ...] = (1, 2, 3, 4), pretrained: bool = True, resize_to: int | None = None
    ):
        super().__init__()
        n = len(EfficientNetLite0Features.stage_channels)
        if not levels or any(i < 0 or i >= n for i in levels):
            raise ValueError(f"feature_levels must be non-empty indices in [0, {n - 1}]; got {tuple(levels)}")
        self.levels = tuple(levels)
        self.net = EfficientNetLite0Features(pretrained=pretrained, resize_to=resize_to)
        self.feature_channels = tuple(EfficientNetLite0Features.stage_channels[i] for i in self.levels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net(images)
        return [feats[i] for i in self.levels]


class ProjectedDiscriminator(ModelMixin, ConfigMixin):
    """Frozen features + trainable per-level heads; output ``(B, sum_l N_l)`` logits.

    Args:
        backbone: ``"efficientnet"`` (offline default); ignored when ``feature_network`` is given
            (recorded as ``"custom"``).
        feature_levels: EfficientNet stage indices to use (channels 16, 24, 40, 112, 320, 1280).
        pretrained: load the EfficientNet ImageNet weights (``False``: random, for shape tests).
        resize_to: resize inputs before the EfficientNet (``None``: keep the size).
        head_kernel_size: kernel of the residual conv in each head (9 for tokens as StyleGAN-T; use an
            odd size; for 2D maps 3 is sensible).
        virtual_bs: group size of the heads' local batch norm.
        augment_policy: DiffAugment ops, e.g. ``"color,translation"``; ``""`` disables. Applied in
            training mode only, to every input (real and fake alike).
        translation_ratio: maximal DiffAugment shift as a fraction of the size.
        feature_network: optional frozen module (e.g. :class:`TransformersViTFeatures` around DINO)
            with ``feature_channels`` and ``feature_kind`` (``"tokens"`` or ``"maps"``); not part of the
            saved config, so pass it again to ``from_pretrained``.
    """

    ignore_for_config = ["feature_network"]

    @register_to_config
    def __init__(
        self,
        backbone: str = "efficientnet",
        feature_levels: tuple[int, ...] = (1, 2, 3, 4),
        pretrained: bool = True,
        resize_to: int | None = None,
        head_kernel_size: int = 3,
        virtual_bs: int = 8,
        augment_policy: str = "color,translation",
        translation_ratio: float = 0.125,
        feature_network: nn.Module | None = None,
    ):
        super().__init__()
        if feature_network is None:
            feature_network = _LOADING_FEATURE_NETWORK.get()
        if feature_network is None and backbone == "custom":
            raise ValueError(
                "this ProjectedDiscriminator uses a custom feature network: pass it again, e.g. "
                "ProjectedDiscriminator.from_pretrained(path, feature_network=TransformersViTFeatures(dino))"
            )
        parse_policy(augment_policy)  # fail early on a bad policy
        if head_kernel_size < 1 or head_kernel_size % 2 == 0:
            raise ValueError(f"head_kernel_size must be odd and positive; got {head_kernel_size}")
        if feature_network is not None:
            for attr in ("feature_channels", "feature_kind"):
                if not hasattr(feature_network, attr):
                    raise ValueError(f"feature_network must define `{attr}` (see TransformersViTFeatures)")
            self.register_to_config(backbone="custom")
            self.features = feature_network.requires_grad_(False)
        elif backbone == "efficientnet":
            self.features = EfficientNetFeatureLevels(
                tuple(feature_levels), pretrained=pretrained, resize_to=resize_to
            )
        else:
            raise ValueError(
                f"backbone must be one of {PROJECTED_BACKBONES} (custom via feature_network); got {backbone!r}"
            )
        kind = self.features.feature_kind
        if kind not in ("tokens", "maps"):
            raise ValueError(f"feature_network.feature_kind must be 'tokens' or 'maps'; got {kind!r}")
        dims = 1 if kind == "tokens" else 2
        self.heads = nn.ModuleList(
            DiscriminatorHead(c, dims=dims, kernel_size=head_kernel_size, virtual_bs=virtual_bs)
            for c in self.features.feature_channels
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *args, feature_network: nn.Module | None = None, **kwargs
    ):
        """``ModelMixin.from_pretrained``; give ``feature_network`` again for a custom (e.g. DINO) backbone."""
        token = _LOADING_FEATURE_NETWORK.set(feature_network)
        try:
            from ..models.loading import load_pretrained

            return load_pretrained(cls, pretrained_model_name_or_path, *args, loader=super().from_pretrained, **kwargs)
        finally:
            _LOADING_FEATURE_NETWORK.reset(token)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen backbone: BatchNorm / dropout stay in eval
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"ProjectedDiscriminator expects (B, 3, H, W) images in [-1, 1]; got {tuple(images.shape)}"
            )
        if self.training and self.config.augment_policy:
            images = diff_augment(images, self.config.augment_policy, self.config.translation_ratio)
        feats = self.features(images)
        # Each head: (B, C_l, N_l) or (B, C_l, H_l, W_l) -> (B, N_l); concatenated over levels.
        return torch.cat([head(f) for head, f in zip(self.heads, feats)], dim=1)
