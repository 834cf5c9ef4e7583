"""SSIM between reconstructions and references, as an ``evaluate`` metric (math: ``coda_hf.metrics.ssim``)."""

import datasets
import evaluate

from coda_hf.metrics.image_quality import image_to_tensor, ssim

_DESCRIPTION = """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5) and
population covariances, averaged over channels, then over images. Matches
skimage.metrics.structural_similarity(reference, prediction, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=-1, data_range=255). Images must be at least 11x11."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: reconstructed images (PIL images or (H, W, C) uint8 arrays).
    references: the original images, same sizes.
    data_range: peak value (default 255, for 8-bit images).
Returns:
    ssim: mean SSIM over the images (1 = identical); ssim_per_image: the per-image values.
Examples:
    >>> import evaluate, numpy as np
    >>> from coda_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("ssim"))
    >>> a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> metric.compute(predictions=[a], references=[a])["ssim"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ssim(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _compute(self, predictions, references, data_range=255.0):
        values = [float(ssim(image_to_tensor(p), image_to_tensor(r), data_range=data_range)[0])
                  for p, r in zip(predictions, references, strict=True)]  # fmt: skip
        return {"ssim": sum(values) / len(values), "ssim_per_image": values}
