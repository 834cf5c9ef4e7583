"""The quantizer family, behind one interface (:class:`BaseQuantizer`, :class:`QuantizerOutput`).

A config string picks one: ``build_quantizer("attention", dim=16, codebook_size=4096)``.
"""

# Importing each module registers its quantizer under its config string.
from . import attention, fsq, gumbel, lfq, multiscale, residual, vector  # noqa: F401
from .base import QUANTIZER_REGISTRY, BaseQuantizer, build_quantizer, register_quantizer
from .output import QuantizerOutput, flatten_indices, unflatten_indices
from .stats import CodebookCounter, UsageTracker, perplexity_from_counts

__all__ = [
    "QUANTIZER_REGISTRY",
    "BaseQuantizer",
    "CodebookCounter",
    "QuantizerOutput",
    "UsageTracker",
    "build_quantizer",
    "flatten_indices",
    "perplexity_from_counts",
    "register_quantizer",
    "unflatten_indices",
]
