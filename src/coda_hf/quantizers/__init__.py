"""The quantizer family, behind one interface (:class:`BaseQuantizer`, :class:`QuantizerOutput`).

A config string picks one: ``build_quantizer("attention", dim=16, codebook_size=4096)``.
"""

# Importing each module registers its quantizer under its config string.
from . import attention, fsq, gumbel, lfq, multiscale, quantile, residual, vector  # noqa: F401
from .attention import AttentionQuantizer
from .base import QUANTIZER_REGISTRY, BaseQuantizer, build_quantizer, register_quantizer
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .lfq import LookupFreeQuantizer
from .multiscale import MultiScaleResidualQuantizer
from .output import QuantizerOutput, flatten_indices, unflatten_indices
from .quantile import QuantileQuantizer
from .residual import ResidualQuantizer
from .stats import CodebookCounter, UsageTracker, perplexity_from_counts, perplexity_from_indices
from .vector import VectorQuantizer

__all__ = [
    "QUANTIZER_REGISTRY",
    "AttentionQuantizer",
    "BaseQuantizer",
    "CodebookCounter",
    "FSQuantizer",
    "GumbelQuantizer",
    "LookupFreeQuantizer",
    "MultiScaleResidualQuantizer",
    "QuantileQuantizer",
    "QuantizerOutput",
    "ResidualQuantizer",
    "UsageTracker",
    "VectorQuantizer",
    "build_quantizer",
    "flatten_indices",
    "perplexity_from_counts",
    "perplexity_from_indices",
    "register_quantizer",
    "unflatten_indices",
]
