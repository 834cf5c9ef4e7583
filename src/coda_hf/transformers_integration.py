"""The same saved CodaVQModel directory, loaded through transformers.

Importing this module registers, once:

* :class:`CodaVQConfig` (``model_type="coda_vq"``) with ``AutoConfig``: it reads the diffusers
  ``config.json`` that :class:`~coda_hf.models.CodaVQModel` writes (that file carries ``model_type``);
* :class:`CodaVQForTokenization` with ``AutoModel``: a thin ``PreTrainedModel`` wrapper whose
  ``from_pretrained`` loads the diffusers weights file (``diffusion_pytorch_model.safetensors``) through
  ``CodaVQModel.from_pretrained`` -- one weights file on disk, no duplicate ``model.safetensors``;
* :class:`~coda_hf.image_processing.CodaImageProcessor` with ``AutoImageProcessor``;
* the ``image-tokenization`` task (:class:`~coda_hf.pipelines.tokenization.CodaTokenizerPipeline`) in
  ``transformers.pipelines.PIPELINE_REGISTRY``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import ModelOutput

from .image_processing import CodaImageProcessor
from .models.coda_vq import MODEL_TYPE, CodaVQModel
from .pipelines.tokenization import TASK, CodaTokenizerPipeline

logger = logging.getLogger(__name__)

# CodaVQModel constructor arguments that CodaVQConfig mirrors (model_type is the class attribute).
CODA_CONFIG_KEYS = (
    "vae_config", "shift_factor", "scaling_factor", "encoder_lora_rank", "encoder_lora_alpha",
    "encoder_lora_target_modules", "decoder_lora_rank", "decoder_lora_alpha", "decoder_lora_target_modules",
    "quantizer", "sample_posterior",
)  # fmt: skip
# from_pretrained keyword arguments that mean the same thing to diffusers.
_FORWARDED_LOAD_KWARGS = ("subfolder", "revision", "cache_dir", "local_files_only", "token", "force_download")


class CodaVQConfig(PretrainedConfig):
    """transformers view of a :class:`~coda_hf.models.CodaVQModel` config (same keys, same file)."""

    model_type = MODEL_TYPE

    vae_config: dict | None = None
    shift_factor: float = 0.0
    scaling_factor: float = 1.0
    encoder_lora_rank: int = 0
    encoder_lora_alpha: float | None = None
    encoder_lora_target_modules: list | None = None
    decoder_lora_rank: int = 0
    decoder_lora_alpha: float | None = None
    decoder_lora_target_modules: list | None = None
    quantizer: dict | None = None
    sample_posterior: bool = True

    def to_coda_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``CodaVQModel(...)``."""
        return {k: getattr(self, k) for k in CODA_CONFIG_KEYS}


@dataclass
class CodaTokenizationOutput(ModelOutput):
    """``CodaVQForTokenization.forward`` result.

    Attributes:
        token_ids: ``(B, N)`` level-major token ids.
        indices: one ``(B, h_l, w_l)`` tensor per level.
        quantized: ``(B, C, h, w)`` quantized normalised latents.
    """

    token_ids: torch.Tensor | None = None
    indices: tuple[torch.Tensor, ...] | None = None
    quantized: torch.Tensor | None = None


class CodaVQForTokenization(PreTrainedModel):
    """``PreTrainedModel`` wrapper of a :class:`CodaVQModel` for ``AutoModel`` and transformers pipelines.

    ``forward(pixel_values)`` tokenizes; ``.coda`` is the diffusers model (``decode`` etc.).
    ``save_pretrained`` writes the diffusers format, which both libraries load.
    """

    config_class = CodaVQConfig
    base_model_prefix = "coda"
    main_input_name = "pixel_values"

    def __init__(self, config: CodaVQConfig, coda_model: CodaVQModel | None = None):
        super().__init__(config)
        self.coda = coda_model if coda_model is not None else CodaVQModel(**config.to_coda_kwargs())

    def _init_weights(self, module):  # weights come from the VAE / the checkpoint, never re-initialised here
        pass

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Load a saved CodaVQModel directory (or Hub repo) through diffusers, wrapped for transformers."""
        if model_args:
            raise ValueError(f"{cls.__name__}.from_pretrained takes no positional model arguments")
        load = {k: kwargs[k] for k in _FORWARDED_LOAD_KWARGS if kwargs.get(k) is not None}
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, torch.dtype):
            load["torch_dtype"] = dtype
        if config is None:
            config = CodaVQConfig.from_pretrained(pretrained_model_name_or_path, **load)
        coda = CodaVQModel.from_pretrained(pretrained_model_name_or_path, **load)
        return cls(config, coda_model=coda).eval()

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """Save in the diffusers format (``config.json`` with ``model_type`` + safetensors weights)."""
        self.coda.save_pretrained(save_directory, safe_serialization=True)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> CodaTokenizationOutput:
        """``(B, 3, H, W)`` pixel values in ``[-1, 1]`` -> token ids and indices per level."""
        enc = self.coda.encode(pixel_values)
        return CodaTokenizationOutput(token_ids=enc.token_ids, indices=tuple(enc.indices), quantized=enc.quantized)


def register() -> None:
    """Register the config, model, image processor and pipeline task with transformers (idempotent)."""
    AutoConfig.register(MODEL_TYPE, CodaVQConfig, exist_ok=True)
    AutoModel.register(CodaVQConfig, CodaVQForTokenization, exist_ok=True)
    AutoImageProcessor.register(CodaVQConfig, image_processor_classes={"pil": CodaImageProcessor}, exist_ok=True)
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=CodaTokenizerPipeline, pt_model=CodaVQForTokenization, type="image"
        )


register()
