#!/usr/bin/env python
"""Train a class-conditional MaskGIT prior on the tokens of a saved coda_hf tokenizer.

    accelerate launch examples/train_maskgit.py --tokenizer path/to/tokenizer \
        --train_data_dir path/to/images --resolution 256 --output_dir maskgit-out

Every flag is a field of :class:`coda_hf.training.maskgit_trainer.MaskGitTrainingConfig` (``--help`` lists
them with their defaults); ``--config file.yaml`` loads a YAML file first.
"""

from __future__ import annotations

import logging
import sys

from coda_hf.training.maskgit_trainer import MaskGitTrainingConfig, train_maskgit


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = MaskGitTrainingConfig.from_args(argv, prog="train_maskgit.py")
    except (ValueError, FileNotFoundError) as e:
        print(f"train_maskgit.py: error: {e}", file=sys.stderr)
        return 2
    train_maskgit(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
