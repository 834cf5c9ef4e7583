"""``CodaImageProcessor``: images -> ``(B, 3, H, W)`` pixel values in ``[-1, 1]`` for a CODA tokenizer.

Size policy (the model raises on sizes that are not multiples of its downsampling factor; this processor,
the ``image-tokenization`` pipeline and the CLI make them fit):

1. convert to RGB (:mod:`coda_hf.image_io` rules for alpha, palette, 16-bit, grayscale);
2. resize so the SHORTER side equals ``size["shortest_edge"]`` (aspect ratio kept; ``do_resize``);
3. center-crop to ``crop_size`` when ``do_center_crop`` (default: off);
4. center-crop each side down to the nearest multiple of ``size_divisor`` (the model's downsampling factor);
5. rescale to ``[0, 1]`` and normalise with mean = std = 0.5 -> ``[-1, 1]``;
6. with ``do_pad``, pad every image at the bottom and right to one size, so a mixed-size batch comes back
   as one ``(B, 3, H, W)`` tensor: ``pad_size`` ``{"height", "width"}`` (both multiples of ``size_divisor``),
   or the batch's largest height and width (multiples already, by step 4). The pad value is ``0`` in the
   output space: mid-grey (RGB 127.5) under the default ``[-1, 1]`` normalisation. Every padded image is
   still a multiple of the tokenizer's factor, so it tokenizes as is; the real image is the top-left
   ``(h, w)`` of it, i.e. the top-left ``(h / f, w / f)`` of the finest token grid.
"""

from __future__ import annotations

import numpy as np
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack

from .image_io import load_image


class CodaImageProcessorKwargs(ImagesKwargs, total=False):
    """
    size_divisor (`int`, *optional*, defaults to 8):
        Height and width are center-cropped down to the nearest multiple (the tokenizer's downsampling factor).
    """

    size_divisor: int


class CodaImageProcessor(PilBackend):
    """PIL image processor of CODA tokenizers (see the module docstring for the size policy)."""

    valid_kwargs = CodaImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"shortest_edge": 256}
    resample = PILImageResampling.BICUBIC
    do_center_crop = False
    crop_size = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    do_convert_rgb = True
    do_pad = False
    pad_size = None
    size_divisor = 8

    def __init__(self, **kwargs: Unpack[CodaImageProcessorKwargs]):
        super().__init__(**kwargs)
        if int(self.size_divisor) < 1:
            raise ValueError(f"size_divisor must be a positive int; got {self.size_divisor}")

    def preprocess(self, images, **kwargs: Unpack[CodaImageProcessorKwargs]) -> BatchFeature:
        # PIL inputs go through coda_hf.image_io first (white alpha compositing, 16-bit handling).
        if isinstance(images, (list, tuple)):
            images = [self._prepare(im) for im in images]
        else:
            images = self._prepare(images)
        return super().preprocess(images, **kwargs)

    @staticmethod
    def _prepare(image):
        if isinstance(image, np.ndarray) and image.dtype == np.uint8:
            return image
        try:
            from PIL import Image

            if isinstance(image, (Image.Image, np.ndarray)):
                return load_image(image)
        except ImportError:  # pragma: no cover - PIL is a dependency
            pass
        return image

    def crop_to_multiple(self, image: np.ndarray, size_divisor: int) -> np.ndarray:
        """Center-crop a ``(C, H, W)`` array so both sides are multiples of ``size_divisor``."""
        height, width = image.shape[-2:]
        new_h, new_w = height // size_divisor * size_divisor, width // size_divisor * size_divisor
        if new_h == 0 or new_w == 0:
            raise ValueError(
                f"image of size ({height}, {width}) is smaller than the size divisor {size_divisor}; "
                "enable do_resize or use a larger image"
            )
        if (new_h, new_w) == (height, width):
            return image
        return self.center_crop(image, SizeDict(height=new_h, width=new_w))

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_pad: bool | None,
        pad_size: SizeDict | None,
        return_tensors,
        size_divisor: int = 8,
        **kwargs,
    ) -> BatchFeature:
        processed = []
        for image in images:
            if do_resize:
                image = self.resize(image=image, size=size, resample=resample)
            if do_center_crop and crop_size is not None:
                image = self.center_crop(image, crop_size)
            image = self.crop_to_multiple(image, int(size_divisor))
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image.astype(np.float32))
        if do_pad:
            processed = self.pad_to_common_size(processed, pad_size, int(size_divisor))
        return BatchFeature(data={"pixel_values": processed}, tensor_type=return_tensors)

    def pad_to_common_size(
        self, images: list[np.ndarray], pad_size: SizeDict | None, size_divisor: int
    ) -> list[np.ndarray]:
        """Pad ``(C, H, W)`` arrays at the bottom and right with 0 to ``pad_size`` (or the largest ``H``, ``W``);
        ``ValueError`` unless ``pad_size`` is a multiple of ``size_divisor`` (the tokenizer could not read it)."""
        if pad_size is not None and (pad_size.height % size_divisor or pad_size.width % size_divisor):
            raise ValueError(
                f"pad_size ({pad_size.height}, {pad_size.width}) must be a multiple of size_divisor {size_divisor} "
                "(the tokenizer's downsampling factor)"
            )
        return self.pad(images, pad_size=pad_size, fill_value=0.0)
