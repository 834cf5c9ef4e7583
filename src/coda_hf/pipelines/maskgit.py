"""Class-conditional image generation with a MaskGIT prior over a tokenizer's discrete tokens."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from ..maskgit.modeling_maskgit import MaskGitTransformer
from ..maskgit.scheduler import MaskGitScheduler
from ..quantizers.output import unflatten_indices

OUTPUT_TYPES = ("pil", "pt", "tokens")


@dataclass
class CodaMaskGitPipelineOutput(BaseOutput):
    """Output of :class:`CodaMaskGitPipeline`.

    Attributes:
        images: ``list[PIL.Image]`` (``output_type="pil"``), a ``(B, 3, H, W)`` float tensor in ``[-1, 1]``
            (``"pt"``), or ``None`` (``"tokens"``).
        tokens: ``(B, N)`` generated codes, level-major (``tokenizer``'s ``token_ids`` layout).
    """

    images: list[PIL.Image.Image] | torch.Tensor | None
    tokens: torch.Tensor


def _latent_size(level_shapes: list[list[int]]) -> tuple[int, int]:
    """The latent grid: the largest level (the last one for multi-scale, the only one for single-level)."""
    return max(h for h, _ in level_shapes), max(w for _, w in level_shapes)


def _downsample_factor(tokenizer) -> int:
    factor = getattr(tokenizer, "downsample_factor", None)
    if factor is None:
        factor = getattr(getattr(tokenizer, "config", None), "downsample_factor", None)
    if factor is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no downsample_factor (attribute or config)"
        )
    return int(factor)


def tensor_to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> list of RGB PIL images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [PIL.Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)]


class CodaMaskGitPipeline(DiffusionPipeline):
    r"""Generate images: MaskGIT iterative unmasking of a tokenizer's token sequence, then decode.

    Components:
        tokenizer: any coda_hf tokenizer (``CodaVQModel`` multi-level, ``VQGANModel`` single-level...) with
            ``level_shapes(H, W)`` (image size), ``downsample_factor`` and ``decode(indices, latent_size=...)``.
        transformer: :class:`~coda_hf.maskgit.MaskGitTransformer` whose ``config.level_shapes`` are the
            tokenizer's level shapes at the generated image size.
        scheduler: :class:`~coda_hf.maskgit.MaskGitScheduler` (mask schedule and unmasking rule).
    """

    model_cpu_offload_seq = "transformer->tokenizer"

    def __init__(self, tokenizer, transformer: MaskGitTransformer, scheduler: MaskGitScheduler):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of generated images: the prior's latent grid times the tokenizer's downsample factor."""
        h, w = _latent_size(self.transformer.config.level_shapes)
        f = _downsample_factor(self.tokenizer)
        return h * f, w * f

    def check_components(self) -> None:
        """Raise ``ValueError`` when the prior was not built for this tokenizer's token layout."""
        height, width = self.image_size
        expected = [list(s) for s in self.tokenizer.level_shapes(height, width)]
        if expected != self.transformer.config.level_shapes:
            raise ValueError(
                f"transformer.config.level_shapes {self.transformer.config.level_shapes} do not match "
                f"tokenizer.level_shapes({height}, {width}) = {expected}"
            )
        codebook_size = getattr(self.tokenizer, "codebook_size", None)
        if codebook_size is None:
            codebook_size = getattr(getattr(self.tokenizer, "config", None), "codebook_size", None)
        if codebook_size is not None and int(codebook_size) != self.transformer.config.codebook_size:
            raise ValueError(
                f"transformer.config.codebook_size {self.transformer.config.codebook_size} does not match "
                f"the tokenizer's codebook_size {codebook_size}"
            )

    def _class_labels(self, class_labels, batch_size: int) -> torch.Tensor:
        num_classes = self.transformer.config.num_classes
        if class_labels is None:
            return torch.full((batch_size,), self.transformer.null_class_id, dtype=torch.long)
        labels = torch.as_tensor([class_labels] if isinstance(class_labels, int) else class_labels)
        if labels.ndim != 1 or labels.numel() == 0 or labels.dtype.is_floating_point:
            raise ValueError(
                f"class_labels must be an int or a non-empty 1-D list of ints; got {class_labels!r}"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"class_labels must lie in [0, {num_classes}); got {labels.tolist()}")
        return labels.long()

    @contextmanager
    def _eval_mode(self):
        """Generate with dropout off even when a component is in training mode; restore the modes after."""
        modules = [m for m in (self.transformer, self.tokenizer) if isinstance(m, torch.nn.Module)]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            yield
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        batch_size: int = 1,
        return_dict: bool = True,
    ) -> CodaMaskGitPipelineOutput | tuple:
        """Generate one image per class label.

        Args:
            class_labels: class ids in ``[0, num_classes)``; ``None`` generates ``batch_size`` unconditional
                images (null class).
            num_inference_steps: MaskGIT unmasking steps (8 in CODA's headline result).
            guidance_scale: classifier-free guidance on the logits, ``uncond + scale * (cond - uncond)``;
                ``1.0`` runs the conditional model only.
            generator: ``torch.Generator`` for all randomness; the same seed gives the same tokens.
            output_type: ``"pil"``, ``"pt"`` (``(B, 3, H, W)`` in ``[-1, 1]``) or ``"tokens"`` (no decoding).
            batch_size: number of images when ``class_labels`` is ``None``.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0; got {guidance_scale}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator must be one torch.Generator (it drives the whole batch); got {type(generator).__name__}"
            )
        self.check_components()
        with self._eval_mode():
            images, sample = self._generate(
                class_labels, num_inference_steps, guidance_scale, generator, output_type, batch_size
            )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, sample)
        return CodaMaskGitPipelineOutput(images=images, tokens=sample)

    def _generate(
        self, class_labels, num_inference_steps, guidance_scale, generator, output_type, batch_size
    ):
        transformer, device = self.transformer, self._execution_device
        labels = self._class_labels(class_labels, batch_size).to(device)
        b, n = labels.shape[0], transformer.config.num_tokens
        use_cfg = guidance_scale != 1.0
        if use_cfg:
            labels = torch.cat([labels, torch.full_like(labels, transformer.null_class_id)])  # [cond; uncond]

        # (B, N) ids, all masked at the start
        sample = torch.full((b, n), transformer.mask_token_id, dtype=torch.long, device=device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for i in self.progress_bar(range(num_inference_steps)):
            model_input = torch.cat([sample, sample]) if use_cfg else sample
            logits = transformer(input_ids=model_input, class_labels=labels).logits  # (B or 2B, N, K)
            if use_cfg:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            sample = self.scheduler.step(logits, i, sample, generator=generator).prev_sample

        images = None
        if output_type != "tokens":
            level_shapes = [tuple(s) for s in transformer.config.level_shapes]
            indices = unflatten_indices(sample, level_shapes)  # [(B, h_l, w_l)] * L
            images = self.tokenizer.decode(indices, latent_size=_latent_size(transformer.config.level_shapes))
            images = getattr(images, "sample", images)
            images = images.float().clamp(-1, 1)
            if output_type == "pil":
                images = tensor_to_pil(images)
        return images, sample


__all__ = ["CodaMaskGitPipeline", "CodaMaskGitPipelineOutput", "tensor_to_pil"]
