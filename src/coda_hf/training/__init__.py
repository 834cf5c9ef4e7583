"""Tokenizer training with accelerate: CODA adaptation, VQGAN from scratch, continuous (beta-)VAEs.

``train(TrainingConfig.from_args(argv))`` is what ``examples/train_tokenizer.py`` runs.
"""

from .config import TrainingConfig
from .loop import TrainResult, train
from .run_lock import OutputDirInUseError
from .trainer import NonFiniteLossError

__all__ = ["NonFiniteLossError", "OutputDirInUseError", "TrainResult", "TrainingConfig", "main", "train"]


def main(argv: list[str] | None = None) -> TrainResult:
    """Parse ``[--config file.yaml] [--key value ...]`` (``--help``: every option) and train."""
    import sys

    return train(TrainingConfig.from_args(sys.argv[1:] if argv is None else argv))
