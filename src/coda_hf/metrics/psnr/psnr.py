"""PSNR between reconstructions and references, as an ``evaluate`` metric (math: ``coda_hf.metrics.psnr``)."""

import evaluate

from coda_hf.metrics.evaluate_modules import IMAGE_PAIRS, metric_info, per_image
from coda_hf.metrics.image_quality import psnr

_DESCRIPTION = """Peak signal-to-noise ratio, 10 log10(data_range^2 / MSE), per image, averaged over images.
Matches skimage.metrics.peak_signal_noise_ratio(reference, prediction, data_range=255)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: reconstructed images (PIL images or (H, W, C) uint8 arrays).
    references: the original images, same sizes.
    data_range: peak value (default 255, for 8-bit images).
Returns:
    psnr: mean PSNR in dB over the images; psnr_per_image: the per-image values.
Examples:
    >>> import evaluate, numpy as np
    >>> from coda_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("psnr"))
    >>> a = np.zeros((16, 16, 3), np.uint8); b = a.copy(); b[0, 0, 0] = 255
    >>> round(metric.compute(predictions=[b], references=[a])["psnr"], 2)  # 10 log10(16 * 16 * 3)
    28.85
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Psnr(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, IMAGE_PAIRS)

    def _compute(self, predictions, references, data_range=255.0):
        return per_image(psnr, "psnr", predictions, references, data_range)
