"""Pixel reconstruction losses (L1, L2) on ``(B, 3, H, W)`` images in ``[-1, 1]``."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "none")


def _check_pair(inputs: torch.Tensor, targets: torch.Tensor, name: str) -> None:
    if inputs.shape != targets.shape:
        raise ValueError(
            f"{name}: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    if inputs.ndim < 2:
        raise ValueError(f"{name}: expects batched tensors (B, ...); got shape {tuple(inputs.shape)}")


def _reduce(per_element: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_element.mean()
    if reduction == "none":
        # (B,) mean over every non-batch dimension.
        return per_element.flatten(1).mean(dim=1)
    raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")


def l1_loss(inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean absolute error. ``reduction="none"`` gives one value per image, ``(B,)``."""
    _check_pair(inputs, targets, "l1_loss")
    return _reduce((inputs.float() - targets.float()).abs(), reduction)


def l2_loss(inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error. ``reduction="none"`` gives one value per image, ``(B,)``."""
    _check_pair(inputs, targets, "l2_loss")
    return _reduce((inputs.float() - targets.float()).pow(2), reduction)
