"""PatchGAN discriminator (pix2pix / VQGAN ``NLayerDiscriminator``)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

PATCHGAN_NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int, num_groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(num_groups, channels), channels)
    return nn.Identity()


class PatchGANDiscriminator(ModelMixin, ConfigMixin):
    """``n_layers`` strided 4x4 convs -> one logit per overlapping patch.

    Input ``(B, in_channels, H, W)`` images in ``[-1, 1]``; output ``(B, 1, H', W')`` logits with
    ``H' = H / 2**n_layers - 2`` (a 70x70 receptive field at ``n_layers=3``).

    Args:
        in_channels: image channels.
        ndf: channels of the first conv; doubles per layer up to ``8 * ndf``.
        n_layers: number of stride-2 convs.
        norm: ``"batch"`` (VQGAN/pix2pix), ``"group"`` (batch-size independent) or ``"none"``.
        num_groups: groups for ``norm="group"`` (capped at the channel count).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        num_groups: int = 32,
    ):
        super().__init__()
        if norm not in PATCHGAN_NORMS:
            raise ValueError(f"norm must be one of {PATCHGAN_NORMS}; got {norm!r}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}")
        use_bias = norm != "batch"  # BatchNorm has its own affine shift
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=use_bias),
                _norm(norm, ndf * mult, num_groups),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias),
            _norm(norm, ndf * mult, num_groups),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, 1, 1),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"PatchGANDiscriminator expects (B, {self.config.in_channels}, H, W) images; got {tuple(images.shape)}"
            )
        return self.main(images)  # (B, 1, H', W')


def _init_weights(m: nn.Module) -> None:
    # pix2pix / taming initialisation.
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
