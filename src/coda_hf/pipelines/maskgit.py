"""Class-conditional image generation with a MaskGIT prior over a tokenizer's discrete tokens."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput

from ..maskgit.modeling_maskgit import MaskGitTransformer
from ..maskgit.scheduler import MaskGitScheduler
from ..quantizers.output import unflatten_indices

OUTPUT_TYPES = ("pil", "np", "pt", "latent")  # diffusers' output types


@dataclass
class CodaMaskGitPipelineOutput(BaseOutput):
    """Output of :class:`CodaMaskGitPipeline`.

    Attributes:
        images: by ``output_type``: ``"pil"`` a list of RGB ``PIL.Image``; ``"np"`` a ``(B, H, W, 3)`` float32
            array in ``[0, 1]``; ``"pt"`` a ``(B, 3, H, W)`` float tensor in ``[0, 1]``; ``"latent"`` the
            undecoded ``(B, N)`` token ids (a token prior's latents: what ``tokenizer.decode`` consumes).
        tokens: ``(B, N)`` generated codes, level-major (``tokenizer``'s ``token_ids`` layout), for every type.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
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
        # decoded images in [-1, 1] -> "pt" / "np" in [0, 1], "pil" (diffusers' postprocessing)
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

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
        """``(B,)`` class ids: ``class_labels`` flattened (an int, a list, nested lists such as ``[[1], [1]]``, or
        a tensor), or ``batch_size`` null-class ids when it is ``None``."""
        num_classes = self.transformer.config.num_classes
        if class_labels is None:
            return torch.full((batch_size,), self.transformer.null_class_id, dtype=torch.long)
        labels = _flatten(class_labels)
        if not labels or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in labels):
            raise ValueError(
                f"class_labels must be an int, or a non-empty (nested) list or tensor of ints; got {class_labels!r}"
            )
        if min(labels) < 0 or max(labels) >= num_classes:
            raise ValueError(f"class_labels must lie in [0, {num_classes}); got {labels}")
        return torch.tensor(labels, dtype=torch.long)

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
        class_labels: int | list[int] | list[list[int]] | torch.Tensor | None = None,
        num_inference_steps: int = 8,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        batch_size: int = 1,
        return_dict: bool = True,
    ) -> CodaMaskGitPipelineOutput | tuple:
        """Generate one image per class label.

        Args:
            class_labels: class ids in ``[0, num_classes)``: an int, a list, nested lists (flattened) or a tensor;
                ``None`` generates ``batch_size`` unconditional images (null class).
            num_inference_steps: MaskGIT unmasking steps (8 in CODA's headline result).
            guidance_scale: classifier-free guidance on the logits, ``uncond + scale * (cond - uncond)``;
                ``1.0`` runs the conditional model only.
            generator: one ``torch.Generator`` for the whole batch, or a list with one per image (diffusers'
                convention: image ``i`` is then the image ``generator[i]`` gives alone); the same seeds give
                the same tokens.
            output_type: ``"pil"``, ``"np"`` (``(B, H, W, 3)`` in ``[0, 1]``), ``"pt"`` (``(B, 3, H, W)`` in
                ``[0, 1]``) or ``"latent"`` (the ``(B, N)`` token ids, not decoded). ``"tokens"`` is a deprecated
                alias of ``"latent"``.
            batch_size: number of images when ``class_labels`` is ``None``.
            return_dict: ``False`` returns the tuple ``(images, tokens)``.
        """
        if output_type == "tokens":
            warnings.warn('output_type="tokens" is deprecated; use "latent"', FutureWarning, stacklevel=2)
            output_type = "latent"
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0; got {guidance_scale}")
        self.check_components()
        labels = self._class_labels(class_labels, batch_size)
        _check_generator(generator, len(labels))
        with self._eval_mode():
            sample = self._generate(labels, num_inference_steps, guidance_scale, generator)
            images = sample if output_type == "latent" else self._decode(sample, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, sample)
        return CodaMaskGitPipelineOutput(images=images, tokens=sample)

    def _generate(self, labels: torch.Tensor, num_inference_steps: int, guidance_scale: float, generator):
        """MaskGIT iterative unmasking -> ``(B, N)`` token ids."""
        transformer, device = self.transformer, self._execution_device
        labels = labels.to(device)
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
        return sample

    def _decode(self, sample: torch.Tensor, output_type: str):
        """``(B, N)`` token ids -> images of ``output_type`` (``"pil"``, ``"np"`` or ``"pt"``)."""
        level_shapes = [tuple(s) for s in self.transformer.config.level_shapes]
        indices = unflatten_indices(sample, level_shapes)  # [(B, h_l, w_l)] * L
        images = self.tokenizer.decode(indices, latent_size=_latent_size(self.transformer.config.level_shapes))
        images = getattr(images, "sample", images).float().clamp(-1, 1)  # (B, 3, H, W) in [-1, 1]
        return self.image_processor.postprocess(images, output_type=output_type)


def _flatten(value) -> list:
    """Class labels of any nesting (lists, tuples, tensors, arrays) as one flat list."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _check_generator(generator, batch: int) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(
            f"generator must be a torch.Generator or a list of them (one per image); got {type(generator).__name__}"
        )
    if len(generator) != batch:
        raise ValueError(f"got a list of {len(generator)} generators for {batch} images; pass one per image")


__all__ = ["CodaMaskGitPipeline", "CodaMaskGitPipelineOutput", "tensor_to_pil"]
