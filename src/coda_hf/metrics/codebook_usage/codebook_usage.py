"""Codebook usage of token sequences, as an ``evaluate`` metric (math: ``coda_hf.metrics.CodebookStatistics``)."""

import datasets
import evaluate
import torch

from coda_hf.metrics.codebook import CodebookStatistics
from coda_hf.metrics.evaluate_modules import metric_info

_DESCRIPTION = """Codebook statistics of a set of tokenized images: utilization (fraction of the codebook used
at least once over the whole set), perplexity (exp of the entropy of code frequencies; K for a
uniform use of K codes), number of codes used and tokens per image."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one token-id sequence per image ((N, T) ints, e.g. ``model.encode(x).token_ids``).
    codebook_size: K, the number of codes.
Returns:
    utilization, perplexity, codes_used, codebook_size, tokens_per_image.
Examples:
    >>> import evaluate
    >>> from coda_hf.metrics import metric_path
    >>> metric = evaluate.load(metric_path("codebook_usage"))
    >>> metric.compute(predictions=[[0, 1], [2, 3]], codebook_size=8)["utilization"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodebookUsage(evaluate.Metric):
    def _info(self):
        tokens = datasets.Sequence(datasets.Value("int64"))
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, datasets.Features({"predictions": tokens}))

    def _compute(self, predictions, codebook_size=None):
        if codebook_size is None:
            raise ValueError("codebook_usage needs codebook_size=K")
        stats = CodebookStatistics(int(codebook_size))
        for tokens in predictions:
            stats.update([torch.as_tensor(tokens, dtype=torch.long).reshape(1, 1, -1)])
        return stats.compute()
