"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real AND fake images
before a discriminator, as StyleGAN-T does for its projected discriminator.

Policies: ``"color"`` (random brightness, saturation, contrast), ``"translation"`` (random integer
shift of up to ``ratio`` of the size, zero padded), ``"cutout"`` (one zeroed square of half the size).
Images are ``(B, C, H, W)`` in ``[-1, 1]``; every op is per-sample random and differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENT_POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in AUGMENT_POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad}; choose from {AUGMENT_POLICIES}")
    return ops


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    # Shift by U(-0.5, 0.5) on the [0, 1] scale = U(-1, 1) on [-1, 1].
    return (
        x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator, dtype=x.dtype) - 0.5) * 2
    )


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    factor = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator, dtype=x.dtype) * 2
    return (x - mean) * factor + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    factor = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator, dtype=x.dtype) + 0.5
    return (x - mean) * factor + mean


def rand_translation(
    x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image by an integer offset in ``[-ratio*H, ratio*H]`` (and W), zero padding."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device, generator=generator)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device, generator=generator)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    # Output pixel (y, x) reads input (y - ty, x - tx); +1 indexes into the 1-pixel zero pad.
    src_y = torch.clamp(gy.unsqueeze(0) - ty + 1, 0, h + 1)  # (B, H, W)
    src_x = torch.clamp(gx.unsqueeze(0) - tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H+2, W+2)
    flat = padded.flatten(2)  # (B, C, (H+2)(W+2))
    index = (src_y * (w + 2) + src_x).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def rand_cutout(
    x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device, generator=generator)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device, generator=generator)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside_y = (gy.unsqueeze(0) >= oy - ch // 2) & (gy.unsqueeze(0) < oy - ch // 2 + ch)
    inside_x = (gx.unsqueeze(0) >= ox - cw // 2) & (gx.unsqueeze(0) < ox - cw // 2 + cw)
    mask = ~(inside_y & inside_x)  # (B, H, W)
    return x * mask.unsqueeze(1).to(x.dtype)


def diff_augment(
    x: torch.Tensor,
    policy: str = "color,translation",
    translation_ratio: float = 0.125,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the comma-separated ``policy`` ops in order (see module docstring)."""
    for op in parse_policy(policy):
        if op == "color":
            x = rand_contrast(rand_saturation(rand_brightness(x, generator), generator), generator)
        elif op == "translation":
            x = rand_translation(x, translation_ratio, generator)
        else:
            x = rand_cutout(x, generator=generator)
    return x.contiguous()
