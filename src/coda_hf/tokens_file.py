"""The token file of ``coda-hf tokenize`` (read back by ``coda-hf decode``): one safetensors file.

Layout: one ``(N,)`` int64 tensor per image under the key ``tokens_<i>`` (``i``: the image's position on the
tokenize command line), levels coarse to fine, each row-major (the models' ``token_ids`` layout), and JSON
metadata:

* ``"images"``: a list of ``{"key", "path", "image_size": [H, W], "level_shapes": [[h_l, w_l], ...]}``;
  ``image_size`` is the PROCESSED size the tokens describe (what ``decode(..., image_size=)`` takes);
* ``"model"``: the tokenizer (an absolute local directory, or the Hub id as given);
* ``"codebook_size"``.

Python: ``for item in read_tokens(path).images: model.decode(item.token_ids[None], image_size=item.image_size)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .output_files import atomic_output


@dataclass
class TokenizedImage:
    """One image of a token file: ``token_ids`` ``(N,)`` int64 and the sizes needed to decode it."""

    key: str
    path: str
    token_ids: torch.Tensor
    image_size: tuple[int, int]
    level_shapes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class TokensFile:
    """The content of a token file."""

    images: list[TokenizedImage]
    model: str | None = None
    codebook_size: int | None = None


def model_reference(model: str | os.PathLike) -> str:
    """What a token file records as its model: the absolute path of a local directory, else the Hub id."""
    return os.path.abspath(model) if os.path.isdir(model) else os.fspath(model)


def save_tokens(path: str | os.PathLike, tokens: TokensFile) -> Path:
    """Write ``tokens`` to ``path`` atomically (see :mod:`coda_hf.output_files`)."""
    from safetensors.torch import save_file

    tensors = {item.key: item.token_ids.to(torch.int64).contiguous() for item in tokens.images}
    records = [
        {"key": item.key, "path": item.path, "image_size": list(item.image_size),
         "level_shapes": [list(s) for s in item.level_shapes]}
        for item in tokens.images
    ]  # fmt: skip
    metadata = {"images": json.dumps(records), "model": str(tokens.model or ""),
                "codebook_size": str(tokens.codebook_size or "")}  # fmt: skip
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_tokens(path: str | os.PathLike) -> TokensFile:
    """Read a token file; ``ValueError`` naming the file when it is not one (``FileNotFoundError`` if absent)."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"token file {file} does not exist")
    try:
        with safe_open(str(file), "pt") as f:
            metadata = f.metadata() or {}
            records = json.loads(metadata["images"])
            images = [
                TokenizedImage(
                    key=r["key"], path=str(r.get("path", r["key"])), token_ids=f.get_tensor(r["key"]),
                    image_size=(int(r["image_size"][0]), int(r["image_size"][1])),
                    level_shapes=[(int(h), int(w)) for h, w in r.get("level_shapes", [])],
                )
                for r in records
            ]  # fmt: skip
    except (SafetensorError, OSError, KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{file} is not a coda-hf token file ({type(e).__name__}: {e})") from e
    size = metadata.get("codebook_size")
    return TokensFile(images=images, model=metadata.get("model") or None, codebook_size=int(size) if size else None)
