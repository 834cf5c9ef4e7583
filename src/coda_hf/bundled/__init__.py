"""Small pretrained models and demo data shipped inside the package (offline, no Hub).

Each bundled model is a ``save_pretrained`` directory ``coda_hf/bundled/models/<name>/`` with a
``bundle.json`` (``{"description": ..., "card": ...}``: a one-line description and its model card under
``model_cards/``). A model stored inside another one's directory (the CODA tokenizer is the ``tokenizer/``
component of the MaskGIT pipeline ``photos-prior``: one copy of its weights) has only its ``bundle.json``,
whose ``"directory"`` names that folder relative to its own (``"../photos-prior/tokenizer"``). :func:`bundled_model` returns such a directory, for the model class's own loader::

    import coda_hf
    from coda_hf.models import DenseVAE

    vae = DenseVAE.from_pretrained(coda_hf.bundled_model("fashion-vae-2d"))

Only bundled names are accepted: ``bundled_model`` never looks at the Hub, and ``from_pretrained`` of a
Hub id is untouched (a bundled name is not a Hub id and a Hub id is never shadowed). ``coda-hf models``
lists what this installation ships.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BUNDLE_ROOT = Path(__file__).resolve().parent
MODELS_DIR = BUNDLE_ROOT / "models"
PHOTOS_DIR = BUNDLE_ROOT / "photos"
DATA_DIR = BUNDLE_ROOT / "data"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# The defaults of `coda-hf tokenize / reconstruct`, pipeline(task="image-tokenization") and coda-hf demo.
DEFAULT_TOKENIZER = "photos-coda"
DEFAULT_PRIOR = "photos-prior"
# A small, class-balanced sample of the Fashion-MNIST TEST split (images, labels and their test-set indices).
FASHION_SAMPLE = DATA_DIR / "fashion-mnist-test-sample.npz"


class UnknownBundledModelError(KeyError, ValueError):
    """The name is not one of the bundled models; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def _model_dirs() -> dict[str, Path]:
    if not MODELS_DIR.is_dir():
        return {}
    found = {}
    for d in sorted(p for p in MODELS_DIR.iterdir() if p.is_dir()):
        files = (d / _bundle_info(d).get("directory", ".")).resolve()  # a model stored in another one's folder
        if files.is_relative_to(MODELS_DIR) and ((files / "config.json").is_file() or (files / "model_index.json").is_file()):
            found[d.name] = files
    return found


def _bundle_info(path: Path) -> dict:
    info = path / "bundle.json"
    return json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}


def bundled_models() -> dict[str, str]:
    """Name -> one-line description of every model this installation ships (only those actually present)."""
    return {name: _bundle_info(MODELS_DIR / name).get("description", "(no description)") for name in _model_dirs()}


def bundled_model(name: str) -> str:
    """Local directory of the bundled model ``name``, for ``<ModelClass>.from_pretrained``.

    Raises :class:`UnknownBundledModelError` (a ``KeyError``) naming the valid names for any other
    string, Hub ids included: this helper only knows the package's own models.
    """
    found = _model_dirs()
    if not isinstance(name, str) or name not in found:
        valid = ", ".join(found) or "none (this installation ships no models)"
        raise UnknownBundledModelError(f"{name!r} is not a bundled model; bundled models: {valid}")
    return str(found[name])


def bundled_model_info(name: str) -> dict:
    """The ``bundle.json`` of a bundled model (description, model card name, training settings...)."""
    bundled_model(name)  # a valid name
    return _bundle_info(MODELS_DIR / name)


def bundled_photos() -> list[Path]:
    """The demo photos shipped in ``coda_hf/bundled/photos/`` (sorted; empty when none are bundled)."""
    if not PHOTOS_DIR.is_dir():
        return []
    return sorted(p for p in PHOTOS_DIR.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def fashion_mnist_sample() -> dict[str, np.ndarray]:
    """The bundled Fashion-MNIST test-split sample: ``images`` ``(N, 28, 28)`` uint8, ``labels`` ``(N,)``,
    ``test_index`` ``(N,)`` (position in the 10,000-image test split). ``FileNotFoundError`` when absent."""
    if not FASHION_SAMPLE.is_file():
        raise FileNotFoundError(f"{FASHION_SAMPLE} is not part of this installation")
    with np.load(FASHION_SAMPLE) as data:
        return {key: data[key] for key in ("images", "labels", "test_index")}


__all__ = [
    "DEFAULT_PRIOR",
    "DEFAULT_TOKENIZER",
    "UnknownBundledModelError",
    "bundled_model",
    "bundled_model_info",
    "bundled_models",
    "bundled_photos",
    "fashion_mnist_sample",
]
