"""``coda-hf decode``: a token file of ``coda-hf tokenize`` back to images, at the sizes stored in it.

One PNG per tokenized image under ``--output-dir``, named after the image's recorded path like
``coda-hf reconstruct`` names its outputs. The model is the one the file records unless ``--model`` is
given; its codebook size must match the file's. Existing outputs are refused unless ``--overwrite``; each
PNG is written atomically.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("decode", help="turn a tokens.safetensors file of `coda-hf tokenize` back into images")
    p.add_argument("tokens", help="token file written by `coda-hf tokenize`")
    p.add_argument("--output-dir", required=True, help="folder for the decoded PNGs")
    p.add_argument("--model", default=None, help="saved tokenizer directory (default: the one the file records)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..models.loading import load_tokenizer
    from ..output_files import atomic_output, check_output_dir, distinct_output_names
    from ..pipelines.maskgit import tensor_to_pil
    from ..tokens_file import read_tokens

    tokens = read_tokens(args.tokens)
    model_dir = args.model or tokens.model
    if not model_dir:
        raise ValueError(f"{args.tokens} does not record its model; pass --model")
    names = distinct_output_names([item.path for item in tokens.images], ".png")
    out_dir = check_output_dir(args.output_dir, names, overwrite=args.overwrite)
    model = load_tokenizer(model_dir).eval()
    if tokens.codebook_size is not None and tokens.codebook_size != model.codebook_size:
        raise ValueError(
            f"{args.tokens}: tokens of a {tokens.codebook_size}-code codebook; model {model_dir} has "
            f"{model.codebook_size} codes"
        )
    with torch.no_grad():
        for item, name in zip(tokens.images, names):
            expected = model.num_tokens(*item.image_size)
            if item.token_ids.shape != (expected,):
                raise ValueError(
                    f"{args.tokens}: {item.key} ({item.path}) holds {tuple(item.token_ids.shape)} token ids; a "
                    f"{item.image_size} image has {expected} with model {model_dir}"
                )
            image = model.decode(item.token_ids[None], image_size=item.image_size)  # (1, 3, H, W)
            with atomic_output(out_dir / name) as tmp:
                tensor_to_pil(image)[0].save(tmp, format="PNG")
    logger.info("decoded %d image(s) into %s", len(names), out_dir)
    return 0
