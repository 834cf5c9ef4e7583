"""What every discrete image tokenizer of the package shares (:class:`CodaVQModel`, :class:`VQGANModel`).

A tokenizer provides ``encode_latents(images)`` / ``decode_latents(latents)``, ``downsample_factor``,
``image_channels``, ``latent_channels`` and a ``quantizer`` submodule; this mixin turns those into the
common interface that trainers, the evaluation loop, pipelines and MaskGIT priors use:

* geometry: ``latent_size(H, W)``, ``level_shapes(H, W)``, ``num_tokens(H, W)``, ``codebook_size``;
* ``encode(images)`` -> indices per level + token ids, ``decode(indices or token ids)`` -> images,
  ``forward(sample)`` -> reconstruction with the quantizer's losses and statistics (diffusers' autoencoder
  contract: ``sample`` first, ``return_dict=False`` gives a tuple).

Token layout: ``token_ids`` is ``(B, N)``, the levels coarse to fine, each row-major
(:func:`~coda_hf.quantizers.output.flatten_indices`).

Tile-wise quantization (the model config's ``latent_tile_size`` ``T > 0``; 0, the default, quantizes the whole
latent): the encoder and decoder run on the whole image, the quantizer on each ``T x T`` latent tile as if
it were an image of its own (:mod:`.latent_tiles`), so a tokenizer trained on ``T * f`` pixel crops keeps its
training statistics on larger images and its convolutional decoder leaves no seam. Image sides must then
be multiples of :attr:`~DiscreteTokenizerMixin.size_divisor` ``= T * f``. Level ``l``'s index map is the
MOSAIC of the tiles' maps, ``(B, nh * h_l, nw * w_l)`` with tile ``(i, j)``'s codes at block ``(i, j)``, and
``token_ids`` flattens those mosaics as above (level-major, each mosaic row-major); tile ``(i, j)``'s own
token set is ``from_mosaic`` of each level, a sequence of the layout the model was trained on.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..quantizers.output import QuantizerOutput, flatten_indices, unflatten_indices
from .latent_tiles import from_mosaic, from_tiles, tile_grid, to_mosaic, to_tiles
from .outputs import CodaEncoderOutput, CodaVQOutput

# Pixel values are (B, C, H, W) floats in [-1, 1]; this much beyond (float rounding of 8-bit images) is accepted.
PIXEL_RANGE_TOLERANCE = 1e-3


def check_pixel_values(images: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """The one check of pixel VALUES on every encode path: finite, and in ``[-1, 1]`` (within
    :data:`PIXEL_RANGE_TOLERANCE`). Returns ``images``, clamped to ``[-1, 1]`` when ``clip``.

    Non-finite values always raise ``ValueError``. Values beyond the range raise ``ValueError`` (e.g. images
    in ``[0, 255]`` or ``[0, 1]``: convert with ``x / 127.5 - 1`` or ``2 * x - 1``), or with ``clip=True`` are
    clamped with a warning. Not checked while exporting (``torch.export`` / ONNX): a graph holds no
    data-dependent branch, so an exported encoder takes the values as given.
    """
    if torch.compiler.is_exporting():
        return images.clamp(-1.0, 1.0) if clip else images
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"images contain {bad} non-finite value(s) (NaN or inf); pixel values must lie in [-1, 1]")
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low >= -1 - PIXEL_RANGE_TOLERANCE and high <= 1 + PIXEL_RANGE_TOLERANCE:
        return images
    message = f"pixel values must lie in [-1, 1]; got values in [{low:.4g}, {high:.4g}]"
    if not clip:
        raise ValueError(f"{message} (0..255 images: x / 127.5 - 1; 0..1 images: 2 * x - 1; or pass clip=True)")
    warnings.warn(f"{message}: clipped to [-1, 1] (clip=True)", stacklevel=3)
    return images.clamp(-1.0, 1.0)


def check_latent_tile_size(value) -> None:
    """The ``latent_tile_size`` config value: an int >= 0 (0: no tiling)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"latent_tile_size must be an int >= 0 (0: quantize the whole latent); got {value!r}")


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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """diffusers ``from_pretrained`` under the package's loading rules
        (:func:`~coda_hf.models.loading.load_pretrained`): safetensors only, the checkpoint's ``_class_name``
        must be this class and every weight must come from it, else ``CheckpointError``;
        ``allow_mismatched_checkpoint=True`` loads it anyway (with a warning) for deliberate surgery."""
        from .loading import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, *args, loader=super().from_pretrained, **kwargs)

    # ----------------------------------------------------------------- geometry
    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.codebook_size)

    @property
    def latent_tile_size(self) -> int:
        """``T > 0``: the quantizer sees each ``T x T`` latent tile on its own; 0: the whole latent (config key
        ``latent_tile_size``; see the module docstring)."""
        return int(getattr(self.config, "latent_tile_size", 0) or 0)

    @property
    def size_divisor(self) -> int:
        """Image sides must be multiples of this: the downsample factor, times ``latent_tile_size`` if set."""
        return self.downsample_factor * max(self.latent_tile_size, 1)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent grid of an ``(H, W)`` image; ``ValueError`` unless both are multiples of :attr:`size_divisor`."""
        f, divisor = self.downsample_factor, self.size_divisor
        if height < divisor or width < divisor or height % divisor or width % divisor:
            what = (f"{divisor} (downsample factor {f} x latent tile {self.latent_tile_size})" if self.latent_tile_size
                    else f"the downsample factor {f}")  # fmt: skip
            raise ValueError(
                f"image size ({height}, {width}) must be a positive multiple of {what}; "
                "resize/crop first (CodaImageProcessor does this)"
            )
        return height // f, width // f

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level ``(h_l, w_l)`` token grids for an ``(H, W)`` IMAGE (mosaics when tiled)."""
        return self._latent_level_shapes(*self.latent_size(height, width))

    def _latent_level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level grids of an ``(h, w)`` LATENT."""
        tile = self.latent_tile_size
        if not tile:
            return self.quantizer.level_shapes(height, width)
        nh, nw = tile_grid(height, width, tile)
        return [(nh * h, nw * w) for h, w in self.quantizer.level_shapes(tile, tile)]

    def num_tokens(self, height: int, width: int) -> int:
        """Tokens per ``(H, W)`` image (sum over levels)."""
        return sum(h * w for h, w in self.level_shapes(height, width))

    @property
    def min_image_size(self) -> int:
        """The smallest image side the model encodes: ``downsample_factor`` latent pixels, or two latent
        pixels when a GroupNorm has one channel per group (a 1 x 1 latent would leave one value per group);
        at least :attr:`size_divisor`."""
        per_group = [m.num_channels // m.num_groups for m in self.modules() if isinstance(m, torch.nn.GroupNorm)]
        return max(self.downsample_factor * (2 if per_group and min(per_group) < 2 else 1), self.size_divisor)

    # ----------------------------------------------------------------- input checks
    def _check_images(self, images: torch.Tensor) -> None:
        c = self.image_channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != c:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, {c}, H, W) float tensor in [-1, 1]; got {shape}")
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor in [-1, 1]; got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError(f"images must hold at least one image; got shape {tuple(images.shape)}")
        smallest = self.min_image_size
        if min(images.shape[-2:]) < smallest:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is too small: this model needs at least "
                f"{smallest} x {smallest} pixels (downsample factor {self.downsample_factor})"
            )
        self.latent_size(*images.shape[-2:])
        check_pixel_values(images)

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a (B, {self.latent_channels}, h, w) tensor; got {shape}")

    # ----------------------------------------------------------------- encode / decode
    def quantizer_input(self, latents: torch.Tensor) -> torch.Tensor:
        """What the quantizer sees of ``(B, C, h, w)`` latents: themselves, or ``(B * tiles, C, T, T)`` tiles."""
        return to_tiles(latents, self.latent_tile_size) if self.latent_tile_size else latents

    def quantize(self, latents: torch.Tensor, with_losses: bool = True) -> QuantizerOutput:
        """Run the quantizer on ``(B, C, h, w)`` latents (tile by tile with ``latent_tile_size``: quantized
        latents reassembled, index maps as mosaics).

        ``with_losses=False`` (eval mode only) is passed to the quantizer, which then computes no losses
        (the attention quantizer skips its entropy term, a full softmax over the codebook per token):
        indices and quantized latents are unchanged, ``losses`` is empty.
        """
        z = self.quantizer_input(latents)
        q = self.quantizer(z) if with_losses or self.quantizer.training else self.quantizer(z, with_losses=False)
        if not self.latent_tile_size:
            return q
        grid = tile_grid(*latents.shape[-2:], self.latent_tile_size)
        return QuantizerOutput(
            quantized=from_tiles(q.quantized, grid), indices=[to_mosaic(i, grid) for i in q.indices],
            losses=q.losses, stats=q.stats,
        )  # fmt: skip

    def encode(self, images: torch.Tensor, clip: bool = False) -> CodaEncoderOutput:
        """``(B, 3, H, W)`` images in ``[-1, 1]`` -> indices per level, quantized latents, token ids.

        Tokenization only: the quantizer's eval-time losses are skipped (see :meth:`quantize`). Raises
        ``ValueError`` for non-finite values, values outside ``[-1, 1]`` (``clip=True``: clamped with a
        warning instead; see :func:`check_pixel_values`) and images below :attr:`min_image_size`.
        """
        if clip and isinstance(images, torch.Tensor):
            images = check_pixel_values(images, clip=True)
        latents = self.encode_latents(images)
        q = self.quantize(latents, with_losses=False)
        return CodaEncoderOutput(
            indices=q.indices, quantized=q.quantized, latents=latents, token_ids=flatten_indices(q.indices),
            stats=q.stats,
        )

    def _infer_latent_size(self, num_tokens: int) -> tuple[int, int]:
        step = max(self.latent_tile_size, 1)
        for s in range(step, int(math.isqrt(num_tokens)) * step + step + 1, step):
            if sum(h * w for h, w in self._latent_level_shapes(s, s)) == num_tokens:
                return s, s
        raise ValueError(
            f"cannot infer a square latent size from {num_tokens} tokens per image; pass image_size=(H, W) "
            "(e.g. from the token file) or latent_size=(h, w)"
        )

    def indices_to_latents(
        self,
        indices: list[torch.Tensor] | torch.Tensor,
        latent_size: tuple[int, int] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Indices per level, or ``(B, N)`` token ids, -> ``(B, C, h, w)`` quantized latents.

        For token ids give the grid as ``latent_size`` (the LATENT ``(h, w)``) or ``image_size`` (the IMAGE
        ``(H, W)`` the tokens came from, e.g. ``image_size`` of a ``coda-hf tokenize`` file); square grids
        are inferred when both are omitted. Raises ``ValueError`` naming the level and the valid range for
        out-of-range indices.
        """
        if image_size is not None:
            if latent_size is not None:
                raise ValueError("give latent_size or image_size, not both")
            latent_size = self.latent_size(*image_size)
        if isinstance(indices, torch.Tensor):
            if indices.ndim != 2:
                raise ValueError(
                    f"token ids must be (B, N); got shape {tuple(indices.shape)} (or pass a list per level)"
                )
            if latent_size is None:
                latent_size = self._infer_latent_size(indices.shape[1])
        tile = self.latent_tile_size
        if not tile:
            return self.quantizer.decode_indices(indices, latent_size=latent_size)
        if isinstance(indices, torch.Tensor):
            indices = unflatten_indices(indices, self._latent_level_shapes(*latent_size))
        if not isinstance(indices, (list, tuple)) or not indices or not isinstance(indices[-1], torch.Tensor):
            raise ValueError("indices must be a list of (B, h_l, w_l) index maps, one per level, or (B, N) token ids")
        return self.mosaics_to_latents(indices, lambda maps: self.quantizer.decode_indices(maps, latent_size=(tile, tile)))

    def mosaics_to_latents(self, indices: list[torch.Tensor], to_codes) -> torch.Tensor:
        """Tiled models: level mosaics ``(B, nh * h_l, nw * w_l)`` -> each tile's maps -> ``to_codes(maps)``
        ``(B * nh * nw, C, T, T)`` tile latents -> the whole ``(B, C, nh * T, nw * T)`` latent."""
        # the finest level's mosaic is the latent itself: its size gives the tile grid
        grid = tile_grid(*indices[-1].shape[-2:], self.latent_tile_size)
        return from_tiles(to_codes([from_mosaic(i, grid) for i in indices]), grid)

    def decode(
        self,
        indices: list[torch.Tensor] | torch.Tensor,
        latent_size: tuple[int, int] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Indices (list of ``(B, h_l, w_l)``) or ``(B, N)`` token ids -> ``(B, 3, H, W)`` images in ``[-1, 1]``.

        The decoder output is clamped to ``[-1, 1]`` (``forward`` and ``decode_latents`` are not clamped,
        so training losses see the raw output). ``latent_size`` / ``image_size``: see
        :meth:`indices_to_latents`.
        """
        return self.decode_latents(self.indices_to_latents(indices, latent_size, image_size)).clamp(-1.0, 1.0)

    def _inference_latents(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The latents eval would quantize for ``images`` (``latents``: this forward's, maybe sampled)."""
        return latents.detach()

    def forward(
        self, sample: torch.Tensor | None = None, return_dict: bool = True, *, images: torch.Tensor | None = None
    ) -> CodaVQOutput | tuple:
        """Reconstruct ``sample``; returns the reconstruction with the quantizer's losses and statistics.

        Args:
            sample: ``(B, 3, H, W)`` images in ``[-1, 1]`` (the first argument of every diffusers autoencoder).
            return_dict: ``False`` returns ``CodaVQOutput.to_tuple()``, i.e. ``(sample, losses, stats, indices,
                quantized, latents)``, as diffusers models do.
            images: deprecated alias of ``sample`` (emits a ``FutureWarning``).
        """
        sample = _sample_argument(sample, images)
        latents = self.encode_latents(sample)
        if self.training and self.quantizer.needs_data_init:
            # A data-initialised codebook starts on what inference quantizes (e.g. the posterior mean).
            with torch.no_grad():
                self.quantizer.initialize(self.quantizer_input(self._inference_latents(sample, latents)))
        q = self.quantize(latents)
        out = CodaVQOutput(
            sample=self.decode_latents(q.quantized), losses=q.losses, stats=q.stats, indices=q.indices,
            quantized=q.quantized, latents=latents,
        )  # fmt: skip
        return out if return_dict else out.to_tuple()


def _sample_argument(sample: torch.Tensor | None, images: torch.Tensor | None) -> torch.Tensor:
    """``forward``'s input: ``sample``, or the deprecated ``images`` keyword."""
    if images is not None:
        if sample is not None:
            raise ValueError("pass the images as `sample` only (`images` is its deprecated alias), not both")
        warnings.warn(
            "forward(images=...) is deprecated; pass the images as `sample` (the diffusers autoencoder argument)",
            FutureWarning,
            stacklevel=2,
        )
        return images
    if sample is None:
        raise ValueError("forward() needs `sample`: a (B, C, H, W) float tensor of images in [-1, 1]")
    return sample
