"""SSIM between reconstructions and references, as an ``evaluate`` metric (math: ``coda_hf.metrics.ssim``)."""

import evaluate

from coda_hf.metrics.evaluate_modules import IMAGE_PAIRS, metric_info, per_image
from coda_hf.metrics.image_quality import ssim

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
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, IMAGE_PAIRS)

    def _compute(self, predictions, references, data_range=255.0):
        return per_image(ssim, "ssim", predictions, references, data_range)
