"""Configuration of the MaskGIT prior (:class:`MaskGitTransformer`)."""

from __future__ import annotations

from transformers import PretrainedConfig


class MaskGitConfig(PretrainedConfig):
    r"""Architecture of a class-conditional MaskGIT prior over a tokenizer's multi-level token sequence.

    The token layout (code ids, mask id, class ids, null class) is stated once, at the embeddings of
    :class:`~coda_hf.maskgit.MaskGitTransformer`; :attr:`mask_token_id` and :attr:`null_class_id` expose it.

    Args:
        level_shapes: per-quantization-level ``(h, w)`` index-map sizes, in the tokenizer's level order
            (``tokenizer.level_shapes(H, W)``); ``N = sum(h * w)`` (680 for the MAR scales 1..16).
        codebook_size: number of codes ``K`` of the tokenizer (shared by all levels).
        num_classes: number of real classes (the null class is added on top).
        hidden_size: transformer width.
        num_hidden_layers: number of pre-norm transformer blocks.
        num_attention_heads: attention heads per block (must divide ``hidden_size``; checked by the model,
            as transformers configs leave architecture checks to the model).
        intermediate_size: MLP hidden width (``4 * hidden_size`` when ``None``).
        hidden_dropout_prob: dropout on embeddings, attention output and MLP output.
        attention_dropout_prob: dropout on attention weights.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the truncated-normal weight init.
    """

    model_type = "coda_maskgit"

    def __init__(
        self,
        level_shapes: list[list[int]] | None = None,
        codebook_size: int = 1024,
        num_classes: int = 1000,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        hidden_dropout_prob: float = 0.1,
        attention_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        level_shapes = [[16, 16]] if level_shapes is None else level_shapes
        try:
            level_shapes = [[int(h), int(w)] for h, w in level_shapes]
        except (TypeError, ValueError) as e:
            raise ValueError(f"level_shapes must be a list of (h, w) pairs; got {level_shapes!r}") from e
        if not level_shapes or any(h < 1 or w < 1 for h, w in level_shapes):
            raise ValueError(f"level_shapes must be a non-empty list of positive (h, w); got {level_shapes}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2; got {codebook_size}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.level_shapes = level_shapes
        self.codebook_size = int(codebook_size)
        self.num_classes = int(num_classes)
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = (
            int(intermediate_size) if intermediate_size is not None else 4 * int(hidden_size)
        )
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_dropout_prob = float(attention_dropout_prob)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)

    @property
    def num_tokens(self) -> int:
        """``N``: image tokens per sample over all levels."""
        return sum(h * w for h, w in self.level_shapes)

    @property
    def mask_token_id(self) -> int:
        """Input id of the mask token (``= codebook_size``)."""
        return self.codebook_size

    @property
    def null_class_id(self) -> int:
        """Class id of the null (unconditional) class (``= num_classes``)."""
        return self.num_classes


__all__ = ["MaskGitConfig"]
