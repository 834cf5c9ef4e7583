"""``coda-hf convert-original``: the authors' released CODA checkpoints -> a saved ``CodaVQModel`` directory.

Reads ``vae(_ema).pth`` and ``quantizer(_ema).pth`` (``torch.load(weights_only=True)`` only) and writes
config, safetensors weights, preprocessor config and a model card; nothing is written on any error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    from ..models.original.architectures import ORIGINAL_SPECS

    p = subparsers.add_parser(
        "convert-original", help="convert the authors' released CODA checkpoints (vae.pth + quantizer.pth)"
    )
    p.add_argument(
        "--vae", required=True, help="the authors' vae.pth / vae_ema.pth (EMA: what their evaluation uses)"
    )
    p.add_argument("--quantizer", required=True, help="the authors' quantizer.pth / quantizer_ema.pth")
    p.add_argument(
        "--preset",
        required=True,
        choices=sorted(ORIGINAL_SPECS),
        help="flux-vae: CODA-FLUX; mar-vae: CODA-MAR",
    )
    p.add_argument("--output", required=True, help="new directory for the converted model (must not exist)")
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="fuse the LoRA weights into the VAE convs (inference checkpoint)",
    )
    p.add_argument(
        "--architecture", default=None,
        help="JSON file overriding the preset's architecture (vae_config, codebook_size, attn_dim, lora_rank, scales) "
        "for a checkpoint the authors' code trained at another size; the released files need none",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args) -> int:
    """Errors (a bad or mismatched checkpoint, an existing output) reach the CLI's one-line handler."""
    from ..models.original import convert_original

    architecture = json.loads(Path(args.architecture).read_text()) if args.architecture else None
    out = convert_original(
        args.vae, args.quantizer, args.preset, args.output, merge_lora=args.merge_lora, architecture=architecture
    )
    logger.info("wrote %s", out)
    return 0
