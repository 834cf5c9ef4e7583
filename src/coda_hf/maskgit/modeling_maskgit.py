"""MaskGIT prior: a bidirectional transformer over a tokenizer's whole multi-level token sequence.

CODA (Liu et al. 2025, arXiv 2503.17760), MaskGIT prior: BERT-style masked-token cross-entropy, learnable positional
embeddings *per quantization level*, cosine mask schedule (:mod:`coda_hf.maskgit.scheduler`),
iterative confidence-based unmasking (:class:`coda_hf.pipelines.maskgit.CodaMaskGitPipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_maskgit import MaskGitConfig

logger = logging.get_logger(__name__)


@dataclass
class MaskGitTransformerOutput(ModelOutput):
    """Output of :class:`MaskGitTransformer` (transformers' field order: ``loss`` first when present).

    Attributes:
        loss: masked-token cross-entropy, averaged over positions whose ``labels`` are not ``-100``
            (only when ``labels`` are given).
        logits: ``(B, N, K)`` logits over the ``K`` codes at every image position (never the mask id).
        hidden_states: with ``output_hidden_states``: ``num_hidden_layers + 1`` tensors ``(B, 1 + N, D)``, the
            embeddings and the output of every block (before the final LayerNorm); position 0 is the class token.
        attentions: with ``output_attentions``: one ``(B, heads, 1 + N, 1 + N)`` softmax attention map per block.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scaling + mask) v`` written out (transformers' ``"eager"`` attention interface).

    ``query`` / ``key`` / ``value``: ``(B, heads, S, d)``. Returns the output ``(B, S, heads, d)`` and the
    attention weights ``(B, heads, S, S)``; the softmax runs in float32. ``kwargs`` are the interface's
    extra arguments (e.g. ``is_causal``), which a bidirectional unmasked attention has no use for.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class MaskGitAttention(nn.Module):
    """Bidirectional multi-head self-attention through transformers' attention interface: the kernel is
    ``config._attn_implementation`` (``"sdpa"`` by default, or ``"eager"``), read at every call so
    ``model.set_attn_implementation(...)`` takes effect at once."""

    def __init__(self, config: MaskGitConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
                f"({config.num_attention_heads})"
            )
        self.config = config
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.is_causal = False  # read by the sdpa interface
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_dropout = config.attention_dropout_prob

    def forward(self, x: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, S, D)`` -> ``(B, S, D)`` and the ``(B, heads, S, S)`` weights (eager only, else ``None``).

        ``output_attentions`` runs the eager kernel whatever the configured one (weights need it).
        """
        b, s, d = x.shape
        # (B, S, 3D) -> 3 x (B, heads, S, D / heads)
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, weights = attention(
            self, q, k, v, None, dropout=self.attention_dropout if self.training else 0.0, scaling=self.scaling
        )  # out: (B, S, heads, D / heads)
        return self.proj(out.reshape(b, s, d)), weights


class MaskGitBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, config: MaskGitConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MaskGitAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.attn(self.norm1(x), output_attentions=output_attentions)
        x = x + self.dropout(attn)
        return x + self.dropout(self.mlp(self.norm2(x))), weights


class MaskGitPreTrainedModel(PreTrainedModel):
    config_class = MaskGitConfig
    base_model_prefix = "maskgit"
    main_input_name = "input_ids"
    _no_split_modules = ["MaskGitBlock"]
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers ``from_pretrained`` under the package's loading rules (safetensors only, the saved
        ``model_type`` and every weight must match; see :func:`coda_hf.models.loading.load_pretrained`)."""
        from ..models.loading import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, *model_args, loader=super().from_pretrained, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MaskGitTransformer):
            init.trunc_normal_(module.position_embedding, mean=0.0, std=std)


class MaskGitTransformer(MaskGitPreTrainedModel):
    """Class-conditional bidirectional transformer predicting codes at every image position.

    Positional embeddings per quantization level (CODA): every image position ``n`` of level ``l``
    gets ``level_embedding[l] + position_embedding[n]``, where ``position_embedding`` has one row per
    token of the whole sequence, grouped by level (rows ``[o_l, o_l + h_l * w_l)`` are level ``l``'s
    own within-level ``(h_l, w_l)`` grid, row-major) -- i.e. a separate learnable within-level table per
    level plus a learnable level embedding. The class token (prepended) has no positional embedding.

    transformers' model contract: ``attn_implementation`` ``"sdpa"`` (default) or ``"eager"`` (at
    ``from_pretrained``, in the config, or ``set_attn_implementation``); ``forward`` takes
    ``output_hidden_states`` / ``output_attentions`` / ``return_dict`` (defaults from the config);
    ``get_input_embeddings`` is the image-token embedding.
    """

    def __init__(self, config: MaskGitConfig):
        super().__init__(config)
        d = config.hidden_size
        # Token layout: image-token ids [0, K) are codes and K = codebook_size is the mask (mask_token_id);
        # class ids live in a separate embedding, [0, C) classes and C = num_classes the null class
        # (null_class_id, classifier-free guidance). Sequence: [class token, N image tokens] -> (B, 1 + N, D);
        # logits over the K codes only, at the N image positions.
        self.token_embedding = nn.Embedding(config.codebook_size + 1, d)
        self.class_embedding = nn.Embedding(config.num_classes + 1, d)
        self.level_embedding = nn.Embedding(len(config.level_shapes), d)
        self.position_embedding = nn.Parameter(torch.zeros(config.num_tokens, d))  # (N, D), grouped by level
        self.embedding_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList([MaskGitBlock(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.head = nn.Linear(d, config.codebook_size)
        self.post_init()

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def null_class_id(self) -> int:
        return self.config.null_class_id

    def level_ids(self, device: torch.device | None = None) -> torch.Tensor:
        """``(N,)`` quantization level of each image position."""
        sizes = torch.tensor([h * w for h, w in self.config.level_shapes], device=device)
        return torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)

    def _check_inputs(self, input_ids: torch.Tensor, class_labels: torch.Tensor) -> None:
        n, k = self.config.num_tokens, self.config.codebook_size
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[1] != n:
            shape = (
                tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            )
            raise ValueError(
                f"input_ids must be (B, {n}) token ids (levels {self.config.level_shapes}); got {shape}"
            )
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integers; got {input_ids.dtype}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > k):
            raise ValueError(
                f"input_ids must lie in [0, {k}] (codes [0, {k}), mask {k}); "
                f"got values in [{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        if not isinstance(class_labels, torch.Tensor) or class_labels.shape != (input_ids.shape[0],):
            shape = (
                tuple(class_labels.shape)
                if isinstance(class_labels, torch.Tensor)
                else type(class_labels).__name__
            )
            raise ValueError(f"class_labels must be ({input_ids.shape[0]},) class ids; got {shape}")
        c = self.config.num_classes
        if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) > c):
            raise ValueError(
                f"class_labels must lie in [0, {c}] (classes [0, {c}), null {c}); "
                f"got values in [{int(class_labels.min())}, {int(class_labels.max())}]"
            )

    def get_input_embeddings(self) -> nn.Embedding:
        """The image-token embedding: ``codebook_size + 1`` rows, the codes then the mask token."""
        return self.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor,
        class_labels: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskGitTransformerOutput | tuple:
        """Predict the code at every image position.

        Args:
            input_ids: ``(B, N)`` ids in ``[0, K]`` (``K`` = mask), level-major as ``token_ids`` of a tokenizer.
            class_labels: ``(B,)`` class ids in ``[0, C]`` (``C`` = null class).
            labels: optional ``(B, N)`` target codes with ``-100`` at positions that do not count
                (MaskGIT: the unmasked ones); gives ``loss``.
            output_attentions: return every block's attention map (default ``config.output_attentions``).
                Attention weights need the eager kernel: under ``"sdpa"`` this call runs eager, with a warning.
            output_hidden_states: return the embeddings and every block's output (default
                ``config.output_hidden_states``).
            return_dict: ``False`` returns ``MaskGitTransformerOutput.to_tuple()`` (the fields that are set, in
                order ``loss, logits, hidden_states, attentions``); default ``config.return_dict``.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if output_attentions and cfg._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True needs the eager attention; attn_implementation={cfg._attn_implementation!r} "
                "falls back to eager for these calls (load with attn_implementation='eager' to avoid this warning)"
            )
        self._check_inputs(input_ids, class_labels)
        pos = self.position_embedding + self.level_embedding(self.level_ids(input_ids.device))  # (N, D)
        x = self.token_embedding(input_ids) + pos  # (B, N, D)
        x = torch.cat([self.class_embedding(class_labels)[:, None], x], dim=1)  # (B, 1 + N, D)
        x = self.embedding_dropout(self.embedding_norm(x))
        hidden_states, attentions = [x], []
        for block in self.blocks:
            x, weights = block(x, output_attentions=output_attentions)
            hidden_states.append(x)
            attentions.append(weights)
        logits = self.head(self.final_norm(x[:, 1:]))  # (B, N, K)
        out = MaskGitTransformerOutput(
            loss=None if labels is None else self._loss(logits, labels, input_ids),
            logits=logits,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()

    @staticmethod
    def _loss(logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"labels must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(labels.shape)}"
            )
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


__all__ = ["MaskGitPreTrainedModel", "MaskGitTransformer", "MaskGitTransformerOutput", "eager_attention_forward"]
