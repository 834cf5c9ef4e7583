"""CODA (Liu et al. 2025, arXiv 2503.17760): a pretrained continuous VAE becomes a discrete tokenizer.

``images -> frozen AutoencoderKL encoder (+ LoRA) -> z = (latent - shift) * scale -> multi-scale residual
attention quantizer -> z_q / scale + shift -> AutoencoderKL decoder (+ LoRA) -> images``.

Only the LoRA weights and the quantizer train; the base VAE is frozen. The whole model is one diffusers
``ModelMixin`` whose ``config.json`` also carries ``model_type="coda_vq"``, so the same directory loads
through transformers (:mod:`coda_hf.transformers_integration`).

Image size policy: the model itself only accepts ``(B, 3, H, W)`` float images with ``H`` and ``W``
divisible by :attr:`CodaVQModel.downsample_factor` and raises ``ValueError`` otherwise. Resizing and
cropping to a multiple is the job of :class:`coda_hf.image_processing.CodaImageProcessor` (used by the
pipeline and the CLI).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..quantizers.base import quantizer_from_config
from ..quantizers.multiscale import MAR_SCALES
from ..settings import deep_merge
from .lora import add_conv_lora, merge_conv_lora
from .presets import CONV_TARGETS, DEFAULT_CODEBOOK_SIZE, DEFAULT_LORA_RANK, coda_quantizer, get_preset
from .tokenizer_mixin import DiscreteTokenizerMixin, check_latent_tile_size

MODEL_TYPE = "coda_vq"  # transformers AutoConfig key, written into config.json


def clean_vae_config(config: Any) -> dict[str, Any]:
    """A JSON-safe copy of an AutoencoderKL config without the private ``_`` keys."""
    out = {}
    for k, v in dict(config).items():
        if k.startswith("_"):
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _lora_sides(lora: dict[str, Any]) -> dict[str, Any]:
    """A LoRA config as ``{"encoder": {...}, "decoder": {...}}`` (a flat one applies to both sides)."""
    return lora if ("encoder" in lora or "decoder" in lora) else {"encoder": lora, "decoder": lora}


def _pretrained_vae(vae: Any, subfolder: str | None, loading_kwargs: dict[str, Any]) -> AutoencoderKL:
    """``vae`` itself, or the ``AutoencoderKL`` a local directory or Hub id holds (:func:`~.loading.load_autoencoder_kl`)."""
    if isinstance(vae, AutoencoderKL):
        if subfolder is not None or loading_kwargs:
            raise ValueError("subfolder / loading kwargs only apply when `vae` is a path or Hub id")
        return vae
    if isinstance(vae, (str, os.PathLike)):
        from .loading import load_autoencoder_kl

        return load_autoencoder_kl(vae, subfolder=subfolder, **loading_kwargs)
    raise ValueError(f"vae must be an AutoencoderKL, a local directory or a Hub id; got {type(vae).__name__}")


class CodaVQModel(DiscreteTokenizerMixin, ModelMixin, ConfigMixin):
    """CODA discrete tokenizer on top of a (frozen) diffusers ``AutoencoderKL``.

    Args:
        vae_config: the nested ``AutoencoderKL`` config (``None``: AutoencoderKL defaults). Weights come from
            :meth:`from_vae` or :meth:`from_pretrained`.
        shift_factor / scaling_factor: latent normalisation ``z = (latent - shift) * scale`` before the
            quantizer, inverted before the decoder (FLUX: 0.1159 / 0.3611).
        encoder_lora_rank / encoder_lora_alpha / encoder_lora_target_modules: LoRA on the encoder's Conv2d
            layers whose names end with a target (rank 0: no LoRA; alpha ``None``: equal to the rank).
        decoder_lora_rank / decoder_lora_alpha / decoder_lora_target_modules: the same for the decoder.
        quantizer: ``{"name": <registered quantizer>, **kwargs}``, checked and typed by the quantizer's own
            signature (:func:`~coda_hf.quantizers.base.quantizer_config`: an unknown argument is an error naming
            the closest valid one); ``dim`` defaults to the VAE's latent channels. Default: CODA's multi-scale
            residual attention quantizer, 10 levels (MAR scales), one shared codebook of 65536 codes. The saved
            config holds the quantizer's full arguments.
        sample_posterior: in training, quantize a sample of the VAE posterior (as the authors do); eval always
            uses the posterior mean.
        latent_tile_size: ``T > 0`` quantizes each ``T x T`` latent tile of an image on its own (the VAE still
            encodes and decodes the whole image): a tokenizer trained on ``T * f`` pixel crops tokenizes larger
            images seamlessly, with a multi-scale token set per tile (layout: :mod:`.tokenizer_mixin`);
            0 (default) quantizes the whole latent.
        model_type: fixed ``"coda_vq"``; stored so transformers' ``AutoConfig`` reads the same config.json.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        vae_config: dict[str, Any] | None = None,
        shift_factor: float = 0.0,
        scaling_factor: float = 1.0,
        encoder_lora_rank: int = 0,
        encoder_lora_alpha: float | None = None,
        encoder_lora_target_modules: list[str] | None = None,
        decoder_lora_rank: int = 0,
        decoder_lora_alpha: float | None = None,
        decoder_lora_target_modules: list[str] | None = None,
        quantizer: dict[str, Any] | None = None,
        sample_posterior: bool = True,
        latent_tile_size: int = 0,
        model_type: str = MODEL_TYPE,
    ):
        super().__init__()
        if model_type != MODEL_TYPE:
            raise ValueError(f"CodaVQModel config has model_type {model_type!r}; expected {MODEL_TYPE!r}")
        check_latent_tile_size(latent_tile_size)
        if scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero")
        self.vae = AutoencoderKL.from_config(dict(vae_config or {}))
        self.vae.requires_grad_(False)  # the base VAE is frozen; LoRA and the quantizer train
        spec = quantizer if quantizer is not None else coda_quantizer(MAR_SCALES, DEFAULT_CODEBOOK_SIZE)
        self.quantizer = quantizer_from_config(spec, int(self.vae.config.latent_channels), "the VAE latent channels")
        lora = {
            "encoder": (encoder_lora_rank, encoder_lora_alpha, encoder_lora_target_modules),
            "decoder": (decoder_lora_rank, decoder_lora_alpha, decoder_lora_target_modules),
        }
        for part, (rank, alpha, targets) in lora.items():
            if int(rank) < 0:
                raise ValueError(f"{part}_lora_rank must be >= 0 (0 = no LoRA); got {rank}")
            if rank:
                # Rebuilt from the config BEFORE any weights load, so unfused checkpoints
                # (``...conv1.base_layer.weight`` + ``lora_A/B``) load every key.
                self._add_lora(part, int(rank), alpha, targets)
        self.register_to_config(vae_config=clean_vae_config(self.vae.config), quantizer=self.quantizer.to_dict())

    def _add_lora(self, part: str, rank: int, alpha: float | None, targets: list[str] | None) -> None:
        targets = list(targets) if targets else list(CONV_TARGETS)
        alpha = float(rank if alpha is None else alpha)
        add_conv_lora(getattr(self.vae, part), rank, alpha, targets)
        self.register_to_config(
            **{f"{part}_lora_rank": int(rank), f"{part}_lora_alpha": alpha, f"{part}_lora_target_modules": targets}
        )

    # ----------------------------------------------------------------- geometry
    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each side: ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels)

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the VQGAN adaptive GAN weight)."""
        conv = self.vae.decoder.conv_out
        return getattr(conv, "base_layer", conv).weight

    # ----------------------------------------------------------------- latents
    def encode_latents(self, images: torch.Tensor, sample: bool | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, C, H/f, W/f)`` continuous NORMALISED latents.

        ``sample``: a posterior sample (``True``) or the posterior mean (``False``); ``None``: a sample in
        training when ``sample_posterior``, the mean otherwise.
        """
        self._check_images(images)
        if sample is None:
            sample = self.training and self.config.sample_posterior
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        latent = posterior.sample() if sample else posterior.mode()
        return (latent - self.config.shift_factor) * self.config.scaling_factor

    def _inference_latents(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Posterior-mean latents: a training forward may quantize a posterior sample (``sample_posterior``)."""
        if not (self.training and self.config.sample_posterior):
            return latents.detach()
        return self.encode_latents(images, sample=False)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` normalised latents (quantized or continuous) -> ``(B, 3, h f, w f)`` images."""
        self._check_latents(latents)
        latent = latents / self.config.scaling_factor + self.config.shift_factor
        return self.vae.decode(latent.to(self.vae.dtype)).sample

    # ----------------------------------------------------------------- saving
    def default_image_processor(self):
        """A :class:`~coda_hf.image_processing.CodaImageProcessor` matching this model: shorter side to
        ``min(vae sample_size, 256)`` (at least :attr:`size_divisor`), crop to a multiple of :attr:`size_divisor`."""
        from ..image_processing import CodaImageProcessor

        side = max(min(int(self.vae.config.sample_size or 256), 256), self.size_divisor)
        return CodaImageProcessor(size={"shortest_edge": side}, size_divisor=self.size_divisor)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        save_function: Callable | None = None,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str = "10GB",
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """diffusers ``ModelMixin.save_pretrained`` plus a ``preprocessor_config.json`` for transformers (the
        default :meth:`default_image_processor`, unless the directory already has one).

        The arguments are diffusers' own and are passed on unchanged (``variant`` names the weights file
        ``diffusion_pytorch_model.<variant>.safetensors``, ``max_shard_size`` shards it); they are spelled out
        because ``DiffusionPipeline.save_pretrained`` forwards only the arguments this signature names.
        ``kwargs`` go to the Hub upload (``repo_id``, ``private``, ``token``, ``commit_message``, ``create_pr``).
        """
        if is_main_process and not os.path.isfile(os.path.join(save_directory, "preprocessor_config.json")):
            # written first, so a push_to_hub upload carries it
            self.default_image_processor().save_pretrained(save_directory)
        super().save_pretrained(
            save_directory, is_main_process=is_main_process, save_function=save_function,
            safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size,
            push_to_hub=push_to_hub, **kwargs,
        )  # fmt: skip

    # ----------------------------------------------------------------- LoRA
    def merge_lora(self) -> CodaVQModel:
        """Fuse the LoRA weights into the base convs (in place); the config then has LoRA rank 0.

        ``save_pretrained`` afterwards writes a plain fused inference checkpoint. Returns ``self``.
        """
        for part in ("encoder", "decoder"):
            merge_conv_lora(getattr(self.vae, part))
            self.register_to_config(**{f"{part}_lora_rank": 0})
        self.vae.requires_grad_(False)
        return self

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_vae(
        cls,
        vae: AutoencoderKL | str | os.PathLike,
        subfolder: str | None = None,
        quantizer: dict[str, Any] | None = None,
        lora: dict[str, Any] | None = None,
        preset: str | None = None,
        shift_factor: float | None = None,
        scaling_factor: float | None = None,
        sample_posterior: bool = True,
        **vae_kwargs: Any,
    ) -> CodaVQModel:
        """Turn a pretrained ``AutoencoderKL`` (object, local directory or Hub id) into a CODA tokenizer.

        Args:
            vae: an ``AutoencoderKL`` or anything ``AutoencoderKL.from_pretrained`` accepts.
            subfolder: e.g. ``"vae"`` for a diffusers pipeline repository.
            quantizer: quantizer config (default: the preset's, else CODA's 10-level MAR schedule). With a
                preset it MERGES into the preset's (:func:`coda_hf.settings.deep_merge`): ``{"quantizer_kwargs":
                {"codebook_size": 16384}}`` keeps the preset's scales; a different ``name`` replaces it.
            lora: ``{"rank", "alpha", "target_modules"}`` for encoder and decoder alike, or
                ``{"encoder": {...}, "decoder": {...}}``; rank 0 disables one side. Default: the preset's,
                else rank 32 on ``conv1``/``conv2`` of both. With a preset it merges into the preset's.
            preset: a name of :data:`coda_hf.models.presets.PRESETS` (``"sd-vae"``, ``"sdxl-vae"``,
                ``"flux-vae"``, ``"mar-vae"``); checked against the VAE's latent channels and factor.
            shift_factor / scaling_factor: override the preset's / the VAE config's values.
            sample_posterior: see :class:`CodaVQModel`.
            vae_kwargs: passed to ``AutoencoderKL.from_pretrained`` (``revision``, ``torch_dtype``...).
        """
        vae = _pretrained_vae(vae, subfolder, vae_kwargs)
        recipe = get_preset(preset) if preset is not None else {}
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if recipe:
            if recipe["latent_channels"] != vae.config.latent_channels or recipe["downsample_factor"] != factor:
                raise ValueError(
                    f"preset {preset!r} expects a {recipe['latent_channels']}-channel, {recipe['downsample_factor']}x "
                    f"VAE; this VAE has {vae.config.latent_channels} channels and {factor}x downsampling"
                )
        if shift_factor is None:
            shift_factor = recipe.get("shift_factor", getattr(vae.config, "shift_factor", None) or 0.0)
        if scaling_factor is None:
            scaling_factor = recipe.get("scaling_factor", getattr(vae.config, "scaling_factor", None) or 1.0)
        if quantizer is None:
            quantizer = recipe.get("quantizer") or coda_quantizer(MAR_SCALES, DEFAULT_CODEBOOK_SIZE)
        elif recipe:
            quantizer = deep_merge(recipe["quantizer"], quantizer)
        if lora is None:
            lora = recipe.get("lora") or {"rank": DEFAULT_LORA_RANK, "target_modules": list(CONV_TARGETS)}
        elif recipe:
            lora = deep_merge(_lora_sides(recipe["lora"]), _lora_sides(lora))
        sides = _lora_sides(lora)
        unknown = set(sides) - {"encoder", "decoder"}
        if unknown:
            raise ValueError(f"lora config: unknown keys {sorted(unknown)}; use rank/alpha/target_modules or encoder/decoder")

        model = cls(
            vae_config=clean_vae_config(vae.config), shift_factor=float(shift_factor),
            scaling_factor=float(scaling_factor), quantizer=quantizer, sample_posterior=sample_posterior,
        )  # fmt: skip
        # Copy the pretrained weights into the plain VAE first, then wrap the convs in LoRA.
        model.vae.load_state_dict(vae.state_dict(), strict=True)
        if vae.dtype != torch.float32:
            model.vae.to(dtype=vae.dtype)
        for part in ("encoder", "decoder"):
            side = dict(sides.get(part) or {})
            bad = set(side) - {"rank", "alpha", "target_modules"}
            if bad:
                raise ValueError(f"lora config for the {part}: unknown keys {sorted(bad)}")
            rank = int(side.get("rank", 0))
            if rank < 0:
                raise ValueError(f"lora rank of the {part} must be >= 0; got {rank}")
            if rank:
                model._add_lora(part, rank, side.get("alpha"), side.get("target_modules"))
        return model
