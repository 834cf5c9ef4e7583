"""transformers pipeline of the ``image-tokenization`` task: images -> discrete tokens per image.

``transformers.pipeline(task="image-tokenization", model=<saved CodaVQModel dir>)`` (after
``import coda_hf.transformers_integration``) accepts any source of :mod:`coda_hf.image_io` (a path, an
``http(s)`` URL, bytes, a PIL image, a numpy array, a torch tensor laid out as an image) or a list of them,
which go through the image processor; a ``(B, C, H, W)`` tensor is a batch (a list of B results).
``timeout=`` (seconds) bounds URL fetches. Already-processed model inputs skip the processor:
``{"pixel_values": (3, H, W) or (1, 3, H, W) float tensor in [-1, 1]}`` reaches the model unchanged (no
8-bit rounding, no resize). It returns per image ``{"token_ids": (N,) long tensor, "indices": [(h_l, w_l) per level],
"level_shapes": [(h_l, w_l)], "image_size": (H, W)}`` where ``(H, W)`` is the processed size (see
:class:`coda_hf.image_processing.CodaImageProcessor` for the resize/crop policy).
"""

from __future__ import annotations

import torch
from transformers import Pipeline

from ..image_io import load_image

TASK = "image-tokenization"


def pixel_tensor(image: torch.Tensor) -> torch.Tensor:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` float tensor in ``[-1, 1]`` -> ``(1, 3, H, W)``; ``ValueError`` otherwise."""
    if not torch.is_tensor(image):
        raise ValueError(f"pixel_values must be a torch tensor; got {type(image).__name__}")
    pixels = image[None] if image.ndim == 3 else image
    if pixels.ndim != 4 or pixels.shape[:2] != (1, 3) or not pixels.is_floating_point():
        raise ValueError(
            f"pixel_values must be a (3, H, W) or (1, 3, H, W) float tensor in [-1, 1]; got "
            f"{tuple(image.shape)} {image.dtype}"
        )
    if pixels.numel() and (pixels.min() < -1 or pixels.max() > 1):
        raise ValueError(f"pixel_values must lie in [-1, 1]; got [{pixels.min():.3g}, {pixels.max():.3g}]")
    return pixels


class CodaTokenizerPipeline(Pipeline):
    """Tokenize images with a CODA (or any ``coda_vq``) tokenizer."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, inputs, **kwargs):
        if torch.is_tensor(inputs) and inputs.ndim == 4:
            inputs = list(inputs)  # (B, C, H, W): B images
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, timeout=None, **kwargs):
        # The only call option is ``timeout``: refuse unknown ones (a typo must not be dropped silently).
        if kwargs:
            raise TypeError(f"the {TASK} pipeline takes only the call option 'timeout'; got {sorted(kwargs)}")
        return ({"timeout": timeout} if timeout is not None else {}), {}, {}

    def preprocess(self, image, timeout: float | None = 30.0):
        if isinstance(image, dict) and set(image) == {"pixel_values"}:  # already processed
            return {"pixel_values": pixel_tensor(image["pixel_values"]).to(self.dtype or torch.float32)}
        pil = load_image(image, timeout=timeout)  # ImageLoadError names a bad input
        inputs = self.image_processor(pil, return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"].to(self.dtype or torch.float32)}

    def _forward(self, model_inputs):
        out = self.model(pixel_values=model_inputs["pixel_values"])
        height, width = model_inputs["pixel_values"].shape[-2:]
        return {"token_ids": out["token_ids"], "indices": list(out["indices"]), "image_size": (height, width)}

    def postprocess(self, model_outputs):
        indices = [idx[0].cpu() for idx in model_outputs["indices"]]  # (h_l, w_l) per level
        return {
            "token_ids": model_outputs["token_ids"][0].cpu(),  # (N,) level-major
            "indices": indices,
            "level_shapes": [tuple(idx.shape) for idx in indices],
            "image_size": tuple(int(s) for s in model_outputs["image_size"]),
        }
