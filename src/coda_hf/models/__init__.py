"""Tokenizer models: :class:`CodaVQModel` (CODA on a pretrained VAE) and :class:`VQGANModel` (from scratch);
:class:`DenseVAE`, the small continuous (beta-)VAE of the atlas views."""

from .coda_vq import CodaVQModel
from .dense_vae import DenseVAE, DenseVAEDecoderOutput, DenseVAEOutput
from .outputs import CodaEncoderOutput, CodaVQOutput
from .presets import PRESETS
from .vqgan import VQGANEncoderOutput, VQGANModel, VQGANOutput

__all__ = [
    "PRESETS",
    "CodaEncoderOutput",
    "CodaVQModel",
    "CodaVQOutput",
    "DenseVAE",
    "DenseVAEDecoderOutput",
    "DenseVAEOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANOutput",
]
