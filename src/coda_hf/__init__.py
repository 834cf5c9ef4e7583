"""coda_hf: discrete image tokenizers (CODA, VQGAN and the whole VQ family) on the Hugging Face stack.

``import coda_hf`` is cheap: the names below load on first use, and the transformers integration
(``AutoConfig`` / ``AutoModel`` for ``coda_vq``, ``AutoImageProcessor``, the ``"image-tokenization"``
pipeline task) registers itself when transformers is imported (:mod:`coda_hf.lazy_registration`), so
``import coda_hf`` followed by ``AutoModel.from_pretrained(...)`` works while ``import coda_hf.quantizers``
costs torch alone.

Where things live:

* ``coda_hf.quantizers``: VQ, Gumbel, FSQ, LFQ, residual, multi-scale residual, attention (CODA);
* ``coda_hf.models``: :class:`CodaVQModel` (CODA on a pretrained VAE, LoRA in ``models/lora.py``),
  :class:`VQGANModel` (from scratch);
* ``coda_hf.maskgit``: the MaskGIT prior, its config and mask schedule (``maskgit/scheduler.py``);
* ``coda_hf.pipelines``: :class:`CodaTokenizerPipeline` (transformers), :class:`CodaMaskGitPipeline`
  (diffusers);
* ``coda_hf.losses`` / ``coda_hf.discriminators`` / ``coda_hf.training``: the training objective and loop;
* ``coda_hf.metrics``: PSNR, SSIM, Fréchet distances, codebook statistics, the evaluation loop;
* ``coda_hf.hub``: model cards and ``push_to_hub``; ``coda_hf.data``: parquet image shards and transforms;
* ``coda_hf.bundled``: the small pretrained models shipped in the package (``bundled_model(name)``);
* ``coda_hf.app``: the interactive Gradio app of the VAE / VQ-VAE family (``coda-hf app``).
"""

from __future__ import annotations

import importlib

from .lazy_registration import register_when_transformers_loads

__version__ = "0.1.0"

# Public name -> the submodule that defines it (imported on first access, PEP 562).
_EXPORTS = {
    "HubPushError": ".hub", "build_model_card": ".hub", "push_to_hub": ".hub",
    "MaskGitConfig": ".maskgit", "MaskGitScheduler": ".maskgit", "MaskGitTransformer": ".maskgit",
    "CodaVQModel": ".models", "DenseVAE": ".models", "VQGANModel": ".models",
    "bundled_model": ".bundled", "bundled_models": ".bundled",
    "CodaMaskGitPipeline": ".pipelines.maskgit", "CodaMaskGitPipelineOutput": ".pipelines.maskgit",
    "CodaTokenizerPipeline": ".pipelines.tokenization",
    "AttentionQuantizer": ".quantizers", "FSQuantizer": ".quantizers", "GumbelQuantizer": ".quantizers",
    "LookupFreeQuantizer": ".quantizers", "MultiScaleResidualQuantizer": ".quantizers",
    "QuantileQuantizer": ".quantizers", "QuantizerOutput": ".quantizers", "ResidualQuantizer": ".quantizers",
    "VectorQuantizer": ".quantizers",
    "build_quantizer": ".quantizers",
    "CodaVQConfig": ".transformers_integration", "CodaVQForTokenization": ".transformers_integration",
}  # fmt: skip

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


register_when_transformers_loads()
