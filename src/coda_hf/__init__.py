"""coda_hf: discrete image tokenizers (CODA, VQGAN and the whole VQ family) on the Hugging Face stack.

``import coda_hf`` registers the transformers integration (``AutoConfig`` / ``AutoModel`` for
``coda_vq`` and ``coda_maskgit``, ``AutoImageProcessor``, the ``"image-tokenization"`` pipeline task).

Where things live:

* ``coda_hf.quantizers``: VQ, Gumbel, FSQ, LFQ, residual, multi-scale residual, attention (CODA);
* ``coda_hf.models``: :class:`CodaVQModel` (CODA on a pretrained VAE, LoRA in ``models/lora.py``),
  :class:`VQGANModel` (from scratch);
* ``coda_hf.maskgit``: the MaskGIT prior, its config and mask schedule (``maskgit/scheduler.py``);
* ``coda_hf.pipelines``: :class:`CodaTokenizerPipeline` (transformers), :class:`CodaMaskGitPipeline`
  (diffusers);
* ``coda_hf.losses`` / ``coda_hf.discriminators`` / ``coda_hf.training``: the training objective and loop;
* ``coda_hf.metrics``: PSNR, SSIM, Fréchet distances, codebook statistics, the evaluation loop;
* ``coda_hf.hub``: model cards and ``push_to_hub``; ``coda_hf.data``: offline real-image datasets;
* ``coda_hf.bundled``: the small pretrained models shipped in the package (``bundled_model(name)``);
* ``coda_hf.app``: the interactive Gradio app of the VAE / VQ-VAE family (``coda-hf app``).
"""

__version__ = "0.1.0"

from . import transformers_integration  # noqa: F401  (registers the Auto classes and the pipeline task)
from .bundled import bundled_model, bundled_models
from .hub import HubPushError, build_model_card, push_to_hub
from .maskgit import MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from .models import CodaVQModel, DenseVAE, VQGANModel
from .pipelines.maskgit import CodaMaskGitPipeline, CodaMaskGitPipelineOutput
from .pipelines.tokenization import CodaTokenizerPipeline
from .quantizers import (
    AttentionQuantizer,
    FSQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    MultiScaleResidualQuantizer,
    QuantizerOutput,
    ResidualQuantizer,
    VectorQuantizer,
    build_quantizer,
)
from .transformers_integration import CodaVQConfig, CodaVQForTokenization

__all__ = [
    "AttentionQuantizer",
    "CodaMaskGitPipeline",
    "CodaMaskGitPipelineOutput",
    "CodaTokenizerPipeline",
    "CodaVQConfig",
    "CodaVQForTokenization",
    "CodaVQModel",
    "DenseVAE",
    "FSQuantizer",
    "GumbelQuantizer",
    "HubPushError",
    "LookupFreeQuantizer",
    "MaskGitConfig",
    "MaskGitScheduler",
    "MaskGitTransformer",
    "MultiScaleResidualQuantizer",
    "QuantizerOutput",
    "ResidualQuantizer",
    "VQGANModel",
    "VectorQuantizer",
    "__version__",
    "build_model_card",
    "bundled_model",
    "bundled_models",
    "push_to_hub",
    "build_quantizer",
]
