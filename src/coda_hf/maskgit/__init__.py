"""MaskGIT prior over discrete image tokens: config, transformer, mask schedule.

Importing this package registers :class:`MaskGitConfig` / :class:`MaskGitTransformer` with
``AutoConfig`` / ``AutoModel`` under ``model_type="coda_maskgit"``.
"""

from transformers import AutoConfig, AutoModel

from .configuration_maskgit import MaskGitConfig
from .modeling_maskgit import MaskGitPreTrainedModel, MaskGitTransformer, MaskGitTransformerOutput
from .scheduler import MASK_SCHEDULES, MaskGitMaskingOutput, MaskGitScheduler, MaskGitSchedulerOutput

AutoConfig.register(MaskGitConfig.model_type, MaskGitConfig, exist_ok=True)
AutoModel.register(MaskGitConfig, MaskGitTransformer, exist_ok=True)

__all__ = [
    "MASK_SCHEDULES",
    "MaskGitConfig",
    "MaskGitMaskingOutput",
    "MaskGitPreTrainedModel",
    "MaskGitScheduler",
    "MaskGitSchedulerOutput",
    "MaskGitTransformer",
    "MaskGitTransformerOutput",
]
