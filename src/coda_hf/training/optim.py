"""Optimisers, learning-rate schedules and EMA weights for tokenizer training.

CODA recipe (coda-facts.md): AdamW with betas (0.5, 0.9), weight decay 0.005 for the generator
and 0.0005 for the discriminator, a cosine schedule (with optional linear warm-up), EMA 0.9999.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters that receive gradients (a frozen base VAE contributes none)."""
    return [p for p in module.parameters() if p.requires_grad]


def parameter_groups(
    model: torch.nn.Module, lr: float, quantizer_lr: float | None = None
) -> list[dict]:
    """Trainable parameters of ``model`` as optimiser groups.

    ``quantizer_lr`` (``None``: ``lr``) applies to the parameters of ``model.quantizer`` (codebook and
    quantizer projections), ``lr`` to everything else (LoRA adapters, a from-scratch encoder/decoder).
    A data-initialised attention codebook is a sharp nearest-neighbour layout that full-rate Adam steps
    take apart within a few updates (BENCHMARKS.md, "What we learnt"); a lower rate lets it adapt.
    Groups without trainable parameters are left out.
    """
    quantizer = getattr(model, "quantizer", None)
    if quantizer_lr is None or quantizer_lr == lr:
        groups = [{"params": trainable_parameters(model), "lr": lr}]
    else:
        if not isinstance(quantizer, torch.nn.Module):
            raise ValueError(f"quantizer_learning_rate needs a model with a quantizer; {type(model).__name__} has none")
        in_quantizer = {id(p) for p in quantizer.parameters()}
        groups = [
            {"params": [p for p in trainable_parameters(model) if id(p) not in in_quantizer], "lr": lr},
            {"params": trainable_parameters(quantizer), "lr": quantizer_lr},
        ]
    return [g for g in groups if g["params"]]


def build_adamw(
    params: Iterable[torch.nn.Parameter] | list[dict],
    lr: float,
    betas: tuple[float, float] = (0.5, 0.9),
    weight_decay: float = 0.005,
    eps: float = 1e-8,
    name: str = "generator",
    hint: str | None = None,
) -> torch.optim.AdamW:
    """``hint``: appended to the error when there is nothing to optimise (what the caller's set-up froze)."""
    params = list(params)  # tensors, or parameter groups (dicts with "params" and their own "lr")
    if not params or all(isinstance(g, dict) and not g["params"] for g in params):
        raise ValueError(f"the {name} has no trainable parameters: nothing to optimise" + (f". {hint}" if hint else ""))
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)


def build_lr_scheduler(
    name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``diffusers.optimization.get_scheduler`` schedule (``"cosine"``: linear warm-up then cosine to 0).

    Counted in optimiser steps: the training loop steps it once per update (never prepared by
    accelerate, so it is not stepped once per process).
    """
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def build_ema(params: Iterable[torch.nn.Parameter], decay: float = 0.9999, start_step: int = 0) -> EMAModel:
    """EMA of ``params`` (diffusers ``EMAModel``): no update before ``start_step`` optimiser steps, then
    decay ``min(decay, (1 + t) / (10 + t))`` with ``t`` the steps since ``start_step``."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1); got {decay}")
    return EMAModel(list(params), decay=decay, update_after_step=start_step)
