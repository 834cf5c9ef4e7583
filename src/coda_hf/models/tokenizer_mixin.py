"""What every discrete image tokenizer of the package shares (:class:`CodaVQModel`, :class:`VQGANModel`).

A tokenizer provides ``encode_latents(images)`` / ``decode_latents(latents)``, ``downsample_factor``,
``image_channels``, ``latent_channels`` and a ``quantizer`` submodule; this mixin turns those into the
common interface that trainers, the evaluation loop, pipelines and MaskGIT priors use:

* geometry: ``latent_size(H, W)``, ``level_shapes(H, W)``, ``num_tokens(H, W)``, ``codebook_size``;
* ``encode(images)`` -> indices per level + token ids, ``decode(indices or token ids)`` -> images,
  ``forward(images)`` -> reconstruction with the quantizer's losses and statistics.

Token layout: ``token_ids`` is ``(B, N)``, the levels coarse to fine, each row-major
(:func:`~coda_hf.quantizers.output.flatten_indices`).
"""

from __future__ import annotations

import math

import torch

from ..quantizers.output import QuantizerOutput, flatten_indices
from .outputs import CodaEncoderOutput, CodaVQOutput


class DiscreteTokenizerMixin:
    """Mixed into a diffusers ``ModelMixin`` that registers a ``quantizer`` submodule."""

    @property
    def quantizer(self):
        """The quantizer module. (A property: the config key of the same name holds its arguments, and
        diffusers' ``ModelMixin.__getattr__`` would otherwise answer ``model.quantizer`` with that dict.)"""
        return self._modules["quantizer"]

    @quantizer.setter
    def quantizer(self, module):
        self._modules["quantizer"] = module

    # ----------------------------------------------------------------- geometry
    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid of an ``(H, W)`` image; ``ValueError`` unless both are multiples of the factor."""
        f = self.downsample_factor
        if height < f or width < f or height % f or width % f:
            raise ValueError(
                f"image size ({height}, {width}) must be a positive multiple of the downsample factor {f}; "
                "resize/crop first (CodaImageProcessor does this)"
            )
        return height // f, width // f

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level ``(h_l, w_l)`` token grids for an ``(H, W)`` IMAGE."""
        return self.quantizer.level_shapes(*self.latent_size(height, width))

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens per ``(H, W)`` image (sum over levels)."""
        return sum(h * w for h, w in self.level_shapes(height, width))

    # ----------------------------------------------------------------- input checks
    def _check_images(self, images: torch.Tensor) -> None:
        c = self.image_channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != c:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, {c}, H, W) float tensor in [-1, 1]; got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor in [-1, 1]; got dtype {images.dtype}")
        self.latent_size(*images.shape[-2:])

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a (B, {self.latent_channels}, h, w) tensor; got {shape}")

    # ----------------------------------------------------------------- encode / decode
    def quantize(self, latents: torch.Tensor, with_losses: bool = True) -> QuantizerOutput:
        """Run the quantizer on ``(B, C, h, w)`` latents.

        ``with_losses=False`` (eval mode only) is passed to the quantizer, which then computes no losses
        (the attention quantizer skips its entropy term, a full softmax over the codebook per token):
        indices and quantized latents are unchanged, ``losses`` is empty.
        """
        if with_losses or self.quantizer.training:
            return self.quantizer(latents)
        return self.quantizer(latents, with_losses=False)

    def encode(self, images: torch.Tensor) -> CodaEncoderOutput:
        """``(B, 3, H, W)`` images in ``[-1, 1]`` -> indices per level, quantized latents, token ids.

        Tokenization only: the quantizer's eval-time losses are skipped (see :meth:`quantize`).
        """
        latents = self.encode_latents(images)
        q = self.quantize(latents, with_losses=False)
        return CodaEncoderOutput(
            indices=q.indices, quantized=q.quantized, latents=latents, token_ids=flatten_indices(q.indices),
            stats=q.stats,
        )

    def _infer_latent_size(self, num_tokens: int) -> tuple[int, int]:
        for s in range(1, int(math.isqrt(num_tokens)) + 2):
            if self.quantizer.num_tokens(s, s) == num_tokens:
                return s, s
        raise ValueError(
            f"cannot infer a square latent size from {num_tokens} tokens per image; pass latent_size=(h, w)"
        )

    def indices_to_latents(
        self, indices: list[torch.Tensor] | torch.Tensor, latent_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Indices per level, or ``(B, N)`` token ids, -> ``(B, C, h, w)`` quantized latents.

        ``latent_size``: the LATENT grid ``(h, w)`` for token ids (inferred for square grids when omitted).
        Raises ``ValueError`` naming the level and the valid range for out-of-range indices.
        """
        if isinstance(indices, torch.Tensor):
            if indices.ndim != 2:
                raise ValueError(
                    f"token ids must be (B, N); got shape {tuple(indices.shape)} (or pass a list per level)"
                )
            if latent_size is None:
                latent_size = self._infer_latent_size(indices.shape[1])
        return self.quantizer.decode_indices(indices, latent_size=latent_size)

    def decode(
        self, indices: list[torch.Tensor] | torch.Tensor, latent_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Indices (list of ``(B, h_l, w_l)``) or ``(B, N)`` token ids -> ``(B, 3, H, W)`` images in ``[-1, 1]``.

        The decoder output is clamped to ``[-1, 1]`` (``forward`` and ``decode_latents`` are not clamped,
        so training losses see the raw output). ``latent_size``: see :meth:`indices_to_latents`.
        """
        return self.decode_latents(self.indices_to_latents(indices, latent_size)).clamp(-1.0, 1.0)

    def _inference_latents(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The latents eval would quantize for ``images`` (``latents``: this forward's, maybe sampled)."""
        return latents.detach()

    def forward(self, images: torch.Tensor) -> CodaVQOutput:
        """Reconstruct ``images``; returns the sample with the quantizer's losses and statistics."""
        latents = self.encode_latents(images)
        if self.training and self.quantizer.needs_data_init:
            # A data-initialised codebook starts on what inference quantizes (e.g. the posterior mean).
            with torch.no_grad():
                self.quantizer.initialize(self._inference_latents(images, latents))
        q = self.quantizer(latents)
        return CodaVQOutput(
            sample=self.decode_latents(q.quantized), losses=q.losses, stats=q.stats, indices=q.indices,
            quantized=q.quantized, latents=latents,
        )  # fmt: skip
