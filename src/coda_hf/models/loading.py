"""Loading saved models: the package's rules for every ``from_pretrained``, and ``load_tokenizer``.

:func:`load_pretrained` is the one loading guard. ``CodaVQModel`` / ``VQGANModel`` (through
:class:`~coda_hf.models.tokenizer_mixin.DiscreteTokenizerMixin`), the MaskGIT transformer and the projected
discriminator route their ``from_pretrained`` through it, and the package loads a diffusers
``AutoencoderKL`` with it. It enforces:

* **the right checkpoint**: the class a directory records (diffusers ``_class_name``, transformers
  ``model_type``) must be the class asked for, and every weight of the model must come from the checkpoint
  (no missing or unused keys). Otherwise :class:`CheckpointError` names the path and both classes. For
  deliberate surgery pass ``allow_mismatched_checkpoint=True``: a warning instead, and weights missing from
  the checkpoint are freshly initialised (never left on the ``meta`` device).
* **no pickle**: weights are read from safetensors only (``use_safetensors=True``; ``False`` is refused).
  A directory that only has ``*.bin`` / ``*.pt`` / ``*.pth`` / ``*.ckpt`` weights is refused without
  reading them. (The ``.pth`` files the package reads elsewhere go through ``torch.load(weights_only=True)``.)
* **fail fast**: a local path that does not exist and cannot be a Hub repo id (``./x``, ``/abs/x``,
  ``runs/x`` when ``runs/`` exists, ``a/b/c``) raises ``FileNotFoundError`` at once, with no Hub request;
  with ``HF_HUB_OFFLINE`` a Hub id that is not in the local cache fails at once too.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

ALLOW_MISMATCH = "allow_mismatched_checkpoint"  # the opt-in keyword of every guarded from_pretrained
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# from_pretrained keywords that also locate the config file.
_LOCATION_KWARGS = ("subfolder", "revision", "cache_dir", "local_files_only", "token", "force_download", "proxies")

# config.json "_class_name" -> "module:Class" for every model a saved directory can hold.
MODEL_CLASSES = {
    "CodaVQModel": "coda_hf.models.coda_vq:CodaVQModel",
    "VQGANModel": "coda_hf.models.vqgan:VQGANModel",
    "AutoencoderKL": "diffusers:AutoencoderKL",  # continuous: the upper-bound row of an evaluation
}
DISCRETE_CLASSES = ("CodaVQModel", "VQGANModel")


class CheckpointError(ValueError):
    """A checkpoint is not the model asked for, or is not in a safe format; the message names the path."""


# ------------------------------------------------------------------------------------ where the model is
def _is_hub_id(name: str) -> bool:
    """Could ``name`` be a Hub repo id rather than a local path?"""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "~")) or os.sep in name.replace("/", "") or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    namespace, _, _ = name.partition("/")
    return not (name.count("/") == 1 and os.path.isdir(namespace))  # "runs/model" with a local runs/ folder


def check_model_location(path: str | os.PathLike, subfolder: str | None = None, filename: str = "config.json",
                         cache_dir: str | None = None) -> Path | None:
    """The local model directory (``path[/subfolder]``), or ``None`` for a Hub repo id.

    Raises ``FileNotFoundError`` at once for a missing local directory, a missing ``subfolder``, a path that
    cannot be a Hub id, or (with ``HF_HUB_OFFLINE``) a Hub id whose ``filename`` is not in the Hub cache.
    """
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import try_to_load_from_cache

    name = os.fspath(path)
    if os.path.isdir(name):
        folder = Path(name, subfolder) if subfolder else Path(name)
        if not folder.is_dir():
            raise FileNotFoundError(f"{name}: subfolder {subfolder!r} does not exist")
        return folder
    if os.path.exists(name):
        raise NotADirectoryError(f"{name} is a file; expected a model directory (save_pretrained output)")
    if not isinstance(path, str) or not _is_hub_id(name):
        raise FileNotFoundError(f"model directory {name} does not exist (and it is not a Hub repo id)")
    if hub_constants.HF_HUB_OFFLINE:
        wanted = f"{subfolder}/{filename}" if subfolder else filename
        if not isinstance(try_to_load_from_cache(name, wanted, cache_dir=cache_dir), str):
            raise FileNotFoundError(
                f"model directory {name} does not exist, and HF_HUB_OFFLINE is set: the Hub repo {name!r} "
                "is not in the local cache"
            )
    return None


def _refuse_pickle_only(folder: Path) -> None:
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{folder}: no safetensors weights; coda_hf loads safetensors only and does not read the pickle "
            f"file(s) {pickles} (convert them with a tool you trust, e.g. safetensors.torch.save_file)"
        )


# ------------------------------------------------------------------------------------ which class it holds
def read_local_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a dict; ``FileNotFoundError`` / :class:`CheckpointError` naming the file."""
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a save_pretrained directory)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} must hold a JSON object; got {type(config).__name__}")
    return config


def _saved_class(cls: type, path: str, folder: Path | None, kwargs: dict[str, Any]) -> tuple[str | None, str, str]:
    """``(recorded, expected, key)``: the diffusers ``_class_name`` or the transformers ``model_type``."""
    location = {k: kwargs[k] for k in _LOCATION_KWARGS if kwargs.get(k) is not None}
    config_class = getattr(cls, "config_class", None)
    if config_class is not None and hasattr(config_class, "get_config_dict"):  # transformers PreTrainedModel
        config = read_local_config(folder) if folder is not None else config_class.get_config_dict(path, **location)[0]
        return config.get("model_type"), str(config_class.model_type), "model_type"
    config = read_local_config(folder) if folder is not None else cls.load_config(path, **location)  # diffusers
    return config.get("_class_name"), cls.__name__, "_class_name"


def _related_names(cls: type) -> set[str]:
    """Names a checkpoint of ``cls`` may record: ``cls``, its bases and its subclasses."""
    names, todo = {c.__name__ for c in cls.__mro__}, [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return names


def _mismatch(message: str, allow: bool) -> None:
    if not allow:
        raise CheckpointError(f"{message}; pass {ALLOW_MISMATCH}=True to load it anyway (deliberate surgery)")
    logger.warning("%s; loading anyway (%s=True)", message, ALLOW_MISMATCH)


def _check_keys(cls: type, path: str, info: dict[str, Any], allow: bool) -> None:
    missing, unused = list(info.get("missing_keys") or []), list(info.get("unexpected_keys") or [])
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) of {cls.__name__} are not in it and would be newly "
                         f"initialised (e.g. {', '.join(sorted(missing)[:3])})")
        if unused:
            parts.append(f"{len(unused)} of its weight(s) are unused (e.g. {', '.join(sorted(unused)[:3])})")
        _mismatch(f"checkpoint {path} does not fit {cls.__name__}: " + "; ".join(parts), allow)


# ------------------------------------------------------------------------------------ the guard
def load_pretrained(cls: type, path: str | os.PathLike, *model_args: Any, loader: Callable | None = None,
                    **kwargs: Any) -> Any:
    """``cls.from_pretrained(path, ...)`` under the package's rules (see the module docstring).

    ``loader``: the unguarded ``from_pretrained`` (default ``cls.from_pretrained``; a class that routes its
    own ``from_pretrained`` here passes ``super().from_pretrained``). ``allow_mismatched_checkpoint=True``
    turns a class or weight mismatch into a warning. ``output_loading_info=True`` returns ``(model, info)``.
    """
    loader = loader or cls.from_pretrained
    allow = bool(kwargs.pop(ALLOW_MISMATCH, False))
    if kwargs.get("use_safetensors") is False:
        raise CheckpointError(f"{path}: use_safetensors=False is not supported; coda_hf loads safetensors only")
    kwargs["use_safetensors"] = True
    want_info = bool(kwargs.pop("output_loading_info", False))
    if path is None:  # transformers: config= and state_dict= given in memory, no file to check
        name = f"the state_dict given to {cls.__name__}.from_pretrained"
    else:
        folder = check_model_location(path, kwargs.get("subfolder"), cache_dir=kwargs.get("cache_dir"))
        if folder is not None:
            _refuse_pickle_only(folder)
        name = os.fspath(path)
        saved, expected, key = _saved_class(cls, name, folder, kwargs)
        if saved is not None and saved not in _related_names(cls) and saved != expected:
            _mismatch(f"{name}: its config.json records {key} {saved!r}, but {cls.__name__}.from_pretrained "
                      f"expects {expected!r} (load it with its own class)", allow)
        if allow and key == "_class_name":  # diffusers: missing weights get initialised, not left on `meta`
            kwargs.setdefault("low_cpu_mem_usage", False)
    model, info = loader(path, *model_args, output_loading_info=True, **kwargs)
    _check_keys(cls, name, info, allow)
    return (model, info) if want_info else model


def load_autoencoder_kl(path: str | os.PathLike, **kwargs: Any):
    """A diffusers ``AutoencoderKL`` through :func:`load_pretrained` (``subfolder``, ``torch_dtype``, ...)."""
    from diffusers import AutoencoderKL

    return load_pretrained(AutoencoderKL, path, **kwargs)


# ------------------------------------------------------------------------------------ any saved tokenizer
def import_class(spec: str) -> type:
    """``'module.path:ClassName'`` -> the class (``ValueError`` naming ``spec`` when malformed)."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"tokenizer_class must look like 'module.path:ClassName'; got {spec!r}")
    return getattr(importlib.import_module(module_name), class_name)


def load_tokenizer(
    path: str | Path, tokenizer_class: str | None = None, allow_continuous: bool = False
) -> torch.nn.Module:
    """Load a saved tokenizer directory with ``from_pretrained`` (through :func:`load_pretrained`).

    The class is ``tokenizer_class`` (``'module:Class'``, for your own tokenizer) or the ``_class_name``
    recorded in ``config.json``: ``CodaVQModel``, ``VQGANModel`` and, with ``allow_continuous``, a diffusers
    ``AutoencoderKL``. Raises ``FileNotFoundError`` for a missing directory or ``config.json`` and
    ``ValueError`` for another class, naming the path.
    """
    if tokenizer_class:
        return load_pretrained(import_class(tokenizer_class), str(path))  # a guarded class is guarded twice: harmless
    folder = check_model_location(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: not a local directory (load_tokenizer reads a saved directory)")
    config_file = folder / "config.json"
    class_name = read_local_config(folder).get("_class_name")
    allowed = [*DISCRETE_CLASSES, "AutoencoderKL"] if allow_continuous else list(DISCRETE_CLASSES)
    if class_name not in allowed:
        raise ValueError(
            f"{config_file}: class {class_name!r} is not one of {allowed}; "
            "for your own tokenizer class pass tokenizer_class='module:Class'"
        )
    if class_name == "AutoencoderKL":
        return load_autoencoder_kl(str(path))
    return import_class(MODEL_CLASSES[class_name]).from_pretrained(str(path))  # guarded (DiscreteTokenizerMixin)
