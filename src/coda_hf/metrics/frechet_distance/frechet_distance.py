"""Fréchet distance between two feature sets, as an ``evaluate`` metric (math: ``coda_hf.metrics.frechet``)."""

import datasets
import evaluate

from coda_hf.metrics.evaluate_modules import metric_info
from coda_hf.metrics.frechet import FrechetStatistics

_DESCRIPTION = """Fréchet distance |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussians fitted to
two sets of feature vectors (FID when the features are FID-Inception pool features). Features in,
distance out: extract them with coda_hf.metrics.inception_features / effnet_features. Both sets
are added row by row, so they must have the same number of vectors."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, D) features of the generated / reconstructed images (lists or arrays).
    references: (N, D) features of the reference images.
Returns:
    frechet_distance: the distance (float); num_samples: N.
Examples:
    >>> import evaluate, numpy as np
    >>> from coda_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("frechet_distance"))
    >>> x = np.random.default_rng(0).normal(size=(256, 4))
    >>> metric.compute(predictions=x, references=x)["frechet_distance"] < 1e-8
    True
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FrechetDistance(evaluate.Metric):
    def _info(self):
        vectors = datasets.Sequence(datasets.Value("float64"))
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, datasets.Features({"predictions": vectors, "references": vectors}))

    def _compute(self, predictions, references):
        fake = FrechetStatistics.from_features(predictions)
        real = FrechetStatistics.from_features(references)
        return {"frechet_distance": fake.distance(real), "num_samples": fake.num_samples}
