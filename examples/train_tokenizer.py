#!/usr/bin/env python
"""Train an image tokenizer: ``--model coda`` (adapt a pretrained VAE), ``vqgan`` (from scratch) or ``vae``.

    accelerate launch examples/train_tokenizer.py --config examples/configs/coda.yaml \
        --pretrained_vae black-forest-labs/FLUX.1-dev --vae_subfolder vae --train_data_dir ./images

Every option of ``coda_hf.training.TrainingConfig`` is a ``--key value`` flag (``--help`` lists them with
their defaults); ``--config file.yaml`` loads a YAML file first, mappings take nested keys
(``--quantizer.quantizer_kwargs.codebook_size 16384``). See the "Training tokenizers" section of README.md.
"""

import logging
import sys

from coda_hf.training import NonFiniteLossError, TrainingConfig, train

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = TrainingConfig.from_args(sys.argv[1:], prog="train_tokenizer.py")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"train_tokenizer.py: error: {e}")
    try:
        result = train(config)
    except NonFiniteLossError as e:
        logging.getLogger("train_tokenizer").error("%s", e)
        sys.exit(3)
    if result.is_main_process:
        print(f"trained {result.global_step} steps; model saved to {result.output_dir}")
