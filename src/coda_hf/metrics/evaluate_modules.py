"""What the shipped ``evaluate`` modules (``metrics/<name>/<name>.py``) share: their ``MetricInfo`` and the
per-image loop of the image-pair metrics (PSNR, SSIM)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import evaluate

from .image_quality import image_to_tensor

IMAGE_PAIRS = datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()})


def metric_info(description: str, inputs_description: str, features: datasets.Features) -> evaluate.MetricInfo:
    """The ``_info`` of a shipped module (no citation: the math's references are in its docstrings)."""
    return evaluate.MetricInfo(description=description, citation="", inputs_description=inputs_description,
                               features=features)  # fmt: skip


def per_image(metric: Callable, name: str, predictions: Sequence, references: Sequence, data_range: float) -> dict:
    """``metric`` on each (prediction, reference) pair: ``{name: mean, name_per_image: values}``."""
    values = [float(metric(image_to_tensor(p), image_to_tensor(r), data_range=data_range)[0])
              for p, r in zip(predictions, references, strict=True)]  # fmt: skip
    return {name: sum(values) / len(values), f"{name}_per_image": values}
