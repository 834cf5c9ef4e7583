"""Load any saved model of the package by the class its ``config.json`` records (``_class_name``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

# config.json "_class_name" -> "module:Class" for every model a saved directory can hold.
MODEL_CLASSES = {
    "CodaVQModel": "coda_hf.models.coda_vq:CodaVQModel",
    "VQGANModel": "coda_hf.models.vqgan:VQGANModel",
    "AutoencoderKL": "diffusers:AutoencoderKL",  # continuous: the upper-bound row of an evaluation
}
DISCRETE_CLASSES = ("CodaVQModel", "VQGANModel")


def import_class(spec: str) -> type:
    """``'module.path:ClassName'`` -> the class (``ValueError`` naming ``spec`` when malformed)."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"tokenizer_class must look like 'module.path:ClassName'; got {spec!r}")
    return getattr(importlib.import_module(module_name), class_name)


def load_tokenizer(
    path: str | Path, tokenizer_class: str | None = None, allow_continuous: bool = False
) -> torch.nn.Module:
    """Load a saved tokenizer directory with ``from_pretrained``.

    The class is ``tokenizer_class`` (``'module:Class'``, for your own tokenizer) or the ``_class_name``
    recorded in ``config.json``: ``CodaVQModel``, ``VQGANModel`` and, with ``allow_continuous``, a diffusers
    ``AutoencoderKL``. Raises ``FileNotFoundError`` without a ``config.json`` and ``ValueError`` for
    another class, naming the path.
    """
    if tokenizer_class:
        return import_class(tokenizer_class).from_pretrained(str(path))
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a save_pretrained directory)")
    class_name = json.loads(config_file.read_text()).get("_class_name")
    allowed = [*DISCRETE_CLASSES, "AutoencoderKL"] if allow_continuous else list(DISCRETE_CLASSES)
    if class_name not in allowed:
        raise ValueError(
            f"{config_file}: class {class_name!r} is not one of {allowed}; "
            "for your own tokenizer class pass tokenizer_class='module:Class'"
        )
    return import_class(MODEL_CLASSES[class_name]).from_pretrained(str(path))
