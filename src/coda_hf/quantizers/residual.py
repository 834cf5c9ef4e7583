"""Residual quantization: a stack of quantizers, each quantizing what the previous levels left over.

:class:`StackedQuantizer` holds the one residual loop (shared with the multi-scale quantizer of
:mod:`.multiscale`, which only changes the per-level resampling); :class:`ResidualQuantizer` ("residual",
RVQ: Zeghidour et al. 2021, Lee et al. 2022 "RQ-VAE") stacks levels at the latent's own resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import INIT_RESTART_ROUNDS, BaseQuantizer, autocast_off, build_quantizer, register_quantizer
from .layout import to_tokens
from .output import QuantizerOutput
from .stats import UsageTracker, batch_stats

# Passes of the data-dependent initialisation of a stack (see StackedQuantizer.initialize).
DATA_INIT_PASSES = 2


class StackedQuantizer(BaseQuantizer):
    """Base of residual stacks: ``num_levels`` applications of an inner single-level quantizer.

    Level ``l`` quantizes ``down_l(residual_l)``; its output ``up(q_l)`` is added to the reconstruction and
    subtracted from the residual. Subclasses define :meth:`level_shapes` and the resampling
    (:meth:`_down`, :meth:`_up`); here both are the identity.

    Gradients: each level's output keeps the inner quantizer's straight-through gradient and the residual
    is *not* detached, so for a plain straight-through inner quantizer (VQ, FSQ, ...) the gradient of the
    sum w.r.t. the input is exactly the identity, and each inner quantizer's soft path (e.g. the attention
    quantizer's IBQ estimator) receives gradients from the reconstruction.
    """

    def _init_stack(
        self,
        dim: int,
        num_levels: int,
        quantizer: str,
        quantizer_kwargs: dict[str, Any] | None,
        shared_codebook: bool,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        if num_levels < 1:
            raise ValueError(f"{type(self).__name__} needs at least one level; got {num_levels}")
        if quantizer_kwargs is not None and not isinstance(quantizer_kwargs, dict):
            raise ValueError(f"quantizer_kwargs must be a dict of the inner quantizer's arguments; got {quantizer_kwargs!r}")
        kwargs = dict(quantizer_kwargs or {})
        if kwargs.get("dim", dim) != dim:
            raise ValueError(f"quantizer_kwargs['dim']={kwargs['dim']} differs from dim={dim}")
        kwargs["dim"] = dim
        self.dim = int(dim)
        self.num_levels = int(num_levels)
        self.shared_codebook = bool(shared_codebook)
        self.inner_name = quantizer
        n_modules = 1 if self.shared_codebook else self.num_levels
        self.quantizers = nn.ModuleList([build_quantizer(quantizer, **kwargs) for _ in range(n_modules)])
        inner = self.quantizers[0]
        if inner.num_levels != 1:
            raise ValueError(f"quantizer={quantizer!r} has {inner.num_levels} levels; the inner quantizer must have one")
        self.codebook_size = int(inner.codebook_size)
        self.usage = UsageTracker(self.codebook_size)

    def level_quantizer(self, level: int) -> BaseQuantizer:
        """The inner quantizer used at ``level`` (the same module for every level when shared)."""
        return self.quantizers[0 if self.shared_codebook else level]

    # -- resampling hooks (identity for same-resolution residual quantization) ----------------------
    def _down(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, C, H, W)`` residual -> ``(B, C, h_l, w_l)`` input of level ``l``."""
        return x

    def _up(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, C, h_l, w_l)`` level output -> ``(B, C, H, W)`` contribution to the reconstruction."""
        return x

    # -- decode / forward ---------------------------------------------------------------------------
    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """``[(B, h_l, w_l)] * L`` -> ``(B, C, H, W)``: the sum of the upsampled level codes."""
        return self.cumulative_codes(indices)[-1]

    def cumulative_codes(self, indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[(B, h_l, w_l)] * L`` -> ``[(B, C, H, W)] * L``: the reconstruction after each level, coarse to
        fine (``f_hat`` of VAR after levels ``0..l``); the last one is :meth:`indices_to_codes`."""
        if len(indices) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels of indices, got {len(indices)}")
        full = tuple(indices[-1].shape[-2:])  # the last level is always the full (H, W) latent
        # an exported graph (ONNX) takes every level's size as an independent dimension: no check there
        levels = [] if torch.compiler.is_exporting() else list(zip(indices, self.level_shapes(*full)))
        for level, (idx, shape) in enumerate(levels):
            if tuple(idx.shape[-2:]) != shape:
                raise ValueError(
                    f"indices of level {level} have size {tuple(idx.shape[-2:])}; a {full} latent needs {shape}"
                )
        quantized, partial = None, []
        for level, idx in enumerate(indices):
            q = self._up(self.level_quantizer(level).indices_to_codes([idx]), full)
            quantized = q if quantized is None else quantized + q
            partial.append(quantized)
        return partial

    def encode_levels(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Eval encoding of ``(B, C, H, W)`` latents, level by level (no gradients, eval mode).

        Returns ``(inputs, indices)``: what each level quantized, ``[(B, C, h_l, w_l)] * L`` (the residual
        left by the levels before it, resampled to the level's size), and its codes ``[(B, h_l, w_l)] * L``
        (equal to ``forward(z).indices`` in eval mode).
        """
        self._check_input(z)
        indices: list[torch.Tensor] = []
        return self._level_inputs(z, indices=indices), indices

    @torch.no_grad()
    def _level_inputs(
        self, z: torch.Tensor, lossless: bool = False, before_level: Callable[[int, torch.Tensor], None] | None = None,
        indices: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """``[(B, C, h_l, w_l)] * L``: what each level quantizes, with the current codebooks in eval mode.

        ``lossless``: every level passes its input through unquantized (an ideal quantizer), so the inputs
        do not depend on any codebook: for a multi-scale stack, the band-pass pyramid of ``z``.
        ``before_level(level, input)``: called with each level's input before that level quantizes it (the
        per-level data initialisation, in one pass over the stack).
        ``indices``: a list that receives each level's ``(B, h_l, w_l)`` codes (not with ``lossless``).
        """
        was_training = self.training
        self.eval()
        try:
            height, width = z.shape[-2:]
            residual, inputs = z, []
            for level, size in enumerate(self.level_shapes(height, width)):
                inputs.append(self._down(residual, size))
                if before_level is not None:
                    before_level(level, inputs[-1])
                if lossless:
                    codes = inputs[-1]
                else:
                    out = self.level_quantizer(level)(inputs[-1])
                    codes = out.quantized
                    if indices is not None:
                        indices.append(out.indices[0])
                residual = residual - self._up(codes, (height, width))
        finally:
            self.train(was_training)
        return inputs

    @property
    def needs_data_init(self) -> bool:
        return any(q.needs_data_init for q in self.quantizers)

    @torch.no_grad()
    def initialize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-dependent initialisation of inner quantizers that ask for it (``needs_data_init``).

        Every level's inner quantizer is restarted on the features it quantizes; the result depends only
        on ``z`` and ``generator``, never on the random codebook the quantizer was built with.

        * One codebook per level: level by level, each on the residual that the already initialised
          levels before it leave (exact in one pass).
        * A shared codebook, on the tokens of all levels together: the residuals depend on the codebook
          itself, so :data:`DATA_INIT_PASSES` passes, the first on the inputs of a lossless stack (for a
          multi-scale stack, the band-pass pyramid of ``z``), each later one on the residuals the
          previous pass's codebook leaves.

        Then up to :data:`~.base.INIT_RESTART_ROUNDS` rounds of ``restart_rare_codes`` on the level inputs
        of the stack's encoding (a no-op unless the inner quantizer restarts rare codes, e.g. the
        attention quantizer's ``init_min_usage``).
        """
        self._check_input(z)
        pending = [q.needs_data_init for q in self.quantizers]  # (per module)
        if not any(pending):
            return
        if not self.shared_codebook:

            def init_level(level: int, x: torch.Tensor) -> None:  # x: (B, C, h_l, w_l), levels < l initialised
                if pending[level]:
                    self.quantizers[level].data_init(to_tokens(x), generator)

            indices: list[torch.Tensor] = []
            # level l quantizes after its initialisation: this pass IS the stack's encoding under the new codebooks
            encoded = (self._level_inputs(z, before_level=init_level, indices=indices), indices)
        else:
            encoded = None  # the last pass changed the codebook after encoding: a restart round encodes again
            for step in range(DATA_INIT_PASSES):
                inputs = self._level_inputs(z, lossless=step == 0)  # [(B, C, h_l, w_l)] * L
                self.quantizers[0].data_init(torch.cat([to_tokens(x) for x in inputs]), generator)
        # Rare-code restarts (an inner quantizer's init_min_usage), counted on the stack's own encoding.
        rounds = INIT_RESTART_ROUNDS if any(q.restarts_rare_codes for q, p in zip(self.quantizers, pending) if p) else 0
        for _ in range(rounds):
            if encoded is None:
                indices = []
                encoded = (self._level_inputs(z, indices=indices), indices)
            inputs, level_indices = encoded  # [(B, C, h_l, w_l)] * L and their codes: counted, not searched again
            encoded = None
            tokens = [to_tokens(x) for x in inputs]  # [(B h_l w_l, C)] * L
            flat = [i.reshape(-1) for i in level_indices]  # row-major over (B, h_l, w_l), as to_tokens
            if self.shared_codebook:
                restarted = self.quantizers[0].restart_rare_codes(torch.cat(tokens), generator, torch.cat(flat))
            else:
                restarted = sum(
                    q.restart_rare_codes(t, generator, i) for q, t, i, p in zip(self.quantizers, tokens, flat, pending) if p
                )
            if not restarted:
                break

    @autocast_off
    def forward(self, z: torch.Tensor, with_losses: bool | None = None) -> QuantizerOutput:
        """``(B, C, H, W)`` -> :class:`QuantizerOutput` with one ``(B, h_l, w_l)`` index map per level;
        ``with_losses`` goes to every level (see :class:`~.base.BaseQuantizer`)."""
        self._check_input(z)
        if self.training and self.needs_data_init:
            self.initialize(z)
        height, width = z.shape[-2:]
        shapes = self.level_shapes(height, width)
        residual, quantized = z, None
        indices: list[torch.Tensor] = []
        losses: dict[str, torch.Tensor] = {}
        errors, utilizations = [], []
        for level, size in enumerate(shapes):
            out = self.level_quantizer(level)(self._down(residual, size), with_losses=with_losses)
            q = self._up(out.quantized, (height, width))  # (B, C, H, W)
            quantized = q if quantized is None else quantized + q
            residual = residual - q
            indices.append(out.indices[0])  # (B, h_l, w_l)
            for name, value in out.losses.items():  # sum each named loss over levels
                losses[name] = losses[name] + value if name in losses else value
            errors.append(F.mse_loss(quantized.detach().float(), z.detach().float()))
            if "utilization" in out.stats:
                utilizations.append(out.stats["utilization"].float())
        if self.training:
            self.usage.update(indices)
        stats = batch_stats(indices, self.codebook_size, torch.stack(errors))  # quant_error: (L,)
        if self.shared_codebook or not utilizations:
            stats["utilization"] = self.usage.utilization()
        else:  # per-level codebooks: mean of the levels' own running utilizations
            stats["utilization"] = torch.stack(utilizations).mean()
        return QuantizerOutput(quantized=quantized, indices=indices, losses=losses, stats=stats)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_levels={self.num_levels}, shared_codebook={self.shared_codebook}"


@register_quantizer("residual")
class ResidualQuantizer(StackedQuantizer):
    """Same-resolution residual quantization (RVQ) of any registered single-level quantizer.

    Args:
        dim: latent channels ``C`` (passed on to the inner quantizer).
        num_levels: number of residual levels ``L``; ``indices`` holds ``L`` maps of shape ``(B, H, W)``.
        quantizer: registered name of the inner quantizer (``"vq"``, ``"fsq"``, ``"attention"``, ...).
        quantizer_kwargs: JSON-safe keyword arguments of the inner quantizer (``dim`` is filled in).
        shared_codebook: one inner quantizer module for all levels (``True``) or one per level.

    ``losses`` sums each named loss of the inner quantizers over levels; ``stats["quant_error"]`` is the
    ``(L,)`` mean squared error of the running reconstruction after each level.
    """

    def __init__(
        self,
        dim: int,
        num_levels: int = 4,
        quantizer: str = "vq",
        quantizer_kwargs: dict[str, Any] | None = None,
        shared_codebook: bool = False,
    ):
        super().__init__()
        self._init_stack(dim, num_levels, quantizer, quantizer_kwargs, shared_codebook)
