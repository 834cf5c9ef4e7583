"""Tokenizers for MaskGIT tests.

* ``tiny_coda_tokenizer()``: the real :class:`CodaVQModel` (tiny random VAE, multi-scale attention quantizer).
* ``tiny_vqgan_tokenizer()``: the package's real :class:`VQGANModel` (32 px, downsample 8) with a test-only
  multi-scale residual VQ (scales 1, 2, 4 over the 4x4 latent, shared codebook -> 21 tokens).
* ``TinyMultiScaleTokenizer``: a minimal stand-alone implementation of the same tokenizer interface
  (``encode`` -> ``.indices`` / ``.token_ids``, ``decode``, ``level_shapes(H, W)``, ``downsample_factor``,
  ``codebook_size``), e.g. for ``--tokenizer_class``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from coda_hf.maskgit import MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from coda_hf.models import CodaVQModel, VQGANModel
from coda_hf.models.presets import coda_quantizer
from coda_hf.quantizers.output import flatten_indices, unflatten_indices


def tiny_vqgan_tokenizer(codebook_size: int = 16, scales=(1, 2, 4)) -> VQGANModel:
    """Real VQGANModel, 32 px images -> 4x4 latent -> levels (1,1), (2,2), (4,4) = 21 tokens by default
    (``scales=(4,)``: single-level, 16 tokens)."""
    return VQGANModel(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        embed_dim=4,
        mid_block_add_attention=False,
        quantizer={"name": "multiscale", "scales": list(scales), "quantizer": "vq",
                   "quantizer_kwargs": {"codebook_size": codebook_size}},
    ).eval()


@dataclass
class TinyEncoderOutput(BaseOutput):
    indices: list[torch.Tensor]
    token_ids: torch.Tensor


class TinyMultiScaleTokenizer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        codebook_size: int = 16,
        dim: int = 4,
        scales: tuple[int, ...] = (1, 2, 4),
        downsample_factor: int = 8,
    ):
        super().__init__()
        self.encoder = nn.Conv2d(3, dim, downsample_factor, stride=downsample_factor)
        self.codebook = nn.Embedding(codebook_size, dim)
        self.decoder = nn.Conv2d(dim, 3 * downsample_factor**2, 1)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        f, top = self.config.downsample_factor, max(self.config.scales)
        if (height // f, width // f) != (top, top):
            raise ValueError(f"this tokenizer only handles {top * f}px images; got {height}x{width}")
        return [(s, s) for s in self.config.scales]

    def encode(self, images: torch.Tensor) -> TinyEncoderOutput:
        z = self.encoder(images)
        indices = []
        for s in self.config.scales:
            r = F.adaptive_avg_pool2d(z, s).permute(0, 2, 3, 1)  # (B, s, s, D)
            idx = (
                torch.cdist(r.reshape(-1, r.shape[-1]), self.codebook.weight)
                .argmin(-1)
                .view(z.shape[0], s, s)
            )
            indices.append(idx)
            z = z - F.interpolate(self.codebook(idx).permute(0, 3, 1, 2), size=z.shape[-2:], mode="nearest")
        return TinyEncoderOutput(indices=indices, token_ids=flatten_indices(indices))

    def decode(self, indices, latent_size=None) -> torch.Tensor:
        if isinstance(indices, torch.Tensor):
            indices = unflatten_indices(
                indices, self.level_shapes(*(s * self.downsample_factor for s in latent_size))
            )
        top = max(self.config.scales)
        z = sum(
            F.interpolate(self.codebook(i).permute(0, 3, 1, 2), size=(top, top), mode="nearest")
            for i in indices
        )
        return torch.tanh(F.pixel_shuffle(self.decoder(z), self.downsample_factor))


def tiny_prior(
    level_shapes=((1, 1), (2, 2), (4, 4)), codebook_size=16, num_classes=4, **kw
) -> MaskGitTransformer:
    cfg = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_dropout_prob=0.0,
        attention_dropout_prob=0.0,
    )
    cfg.update(kw)
    config = MaskGitConfig(
        level_shapes=[list(s) for s in level_shapes],
        codebook_size=codebook_size,
        num_classes=num_classes,
        **cfg,
    )
    return MaskGitTransformer(config).eval()


def tiny_coda_tokenizer(codebook_size: int = 16) -> CodaVQModel:
    """The real CodaVQModel on a tiny random AutoencoderKL (downsample 8, 4 latent channels, LoRA rank 2) with
    CODA's multi-scale attention quantizer at scales 1, 2, 4: 32 px images -> 21 tokens."""
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    return CodaVQModel.from_vae(
        vae, quantizer=coda_quantizer([1, 2, 4], codebook_size), lora={"rank": 2}
    ).eval()


def tiny_pipeline(tokenizer=None, **prior_kw):
    from coda_hf.pipelines.maskgit import CodaMaskGitPipeline

    pipe = CodaMaskGitPipeline(
        tokenizer=tiny_coda_tokenizer() if tokenizer is None else tokenizer,
        transformer=tiny_prior(**prior_kw),
        scheduler=MaskGitScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
