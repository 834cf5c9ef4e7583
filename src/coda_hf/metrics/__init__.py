"""Reconstruction metrics: Fréchet distances (rFID, FD-EffNet), PSNR, SSIM, codebook statistics.

The math lives here once; the ``evaluate`` modules shipped next to it
(``coda_hf/metrics/<name>/<name>.py``, load them with ``evaluate.load(metric_path(name))``) and
the ``coda-hf evaluate`` command only call it.
"""

from __future__ import annotations

from pathlib import Path

from .codebook import CodebookStatistics
from .evaluation import TokenizerEvaluator, evaluate_tokenizer, metrics_markdown_row
from .features import FD_EFFNET_NOTE, default_feature_extractors, effnet_features, inception_features
from .frechet import FrechetStatistics, frechet_distance, sqrtm_psd, trace_sqrtm_product
from .image_quality import image_to_tensor, psnr, ssim, to_uint8_range
from .inception import InceptionV3Features, convert_pytorch_fid_weights

EVALUATE_MODULES = ("psnr", "ssim", "frechet_distance", "codebook_usage")


def metric_path(name: str) -> str:
    """Directory of the shipped ``evaluate`` module ``name``: ``evaluate.load(metric_path("psnr"))``."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"unknown metric module {name!r}; shipped: {list(EVALUATE_MODULES)}")
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():  # pragma: no cover - a broken install
        raise FileNotFoundError(f"{path / (name + '.py')} is missing from the installed package")
    return str(path)


__all__ = [
    "EVALUATE_MODULES",
    "FD_EFFNET_NOTE",
    "CodebookStatistics",
    "FrechetStatistics",
    "InceptionV3Features",
    "TokenizerEvaluator",
    "convert_pytorch_fid_weights",
    "default_feature_extractors",
    "effnet_features",
    "evaluate_tokenizer",
    "frechet_distance",
    "image_to_tensor",
    "inception_features",
    "metric_path",
    "metrics_markdown_row",
    "psnr",
    "sqrtm_psd",
    "ssim",
    "to_uint8_range",
    "trace_sqrtm_product",
]
