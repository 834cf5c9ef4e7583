"""Tokenizer models: :class:`CodaVQModel` (CODA on a pretrained VAE) and :class:`VQGANModel` (from scratch)."""

from .coda_vq import CodaVQModel
from .outputs import CodaEncoderOutput, CodaVQOutput
from .presets import PRESETS
from .vqgan import VQGANEncoderOutput, VQGANModel, VQGANOutput

__all__ = [
    "PRESETS",
    "CodaEncoderOutput",
    "CodaVQModel",
    "CodaVQOutput",
    "VQGANEncoderOutput",
    "VQGANModel",
    "VQGANOutput",
]
