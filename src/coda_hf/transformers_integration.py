"""The same saved CodaVQModel directory, loaded through transformers.

Importing this module registers, once:

* :class:`CodaVQConfig` (``model_type="coda_vq"``) with ``AutoConfig``: it reads the diffusers
  ``config.json`` that :class:`~coda_hf.models.CodaVQModel` writes (that file carries ``model_type``);
* :class:`CodaVQForTokenization` with ``AutoModel``: a thin ``PreTrainedModel`` wrapper whose
  ``from_pretrained`` is transformers' own, pointed at the diffusers weights file
  (``diffusion_pytorch_model.safetensors``) -- one weights file on disk, no duplicate ``model.safetensors``;
* :class:`~coda_hf.image_processing.CodaImageProcessor` with ``AutoImageProcessor``;
* the ``image-tokenization`` task (:class:`~coda_hf.pipelines.tokenization.CodaTokenizerPipeline`) in
  ``transformers.pipelines.PIPELINE_REGISTRY``, with the bundled CODA tokenizer (``coda_hf.bundled_model(
  "photos-coda")``, a local folder: offline) as its default model when this installation ships it, so
  ``pipeline(task="image-tokenization")`` without a model works (transformers logs the folder it defaulted to).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import logging
import os
import types
import typing
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch
from diffusers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFETENSORS_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    _add_variant,
)
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import ModelOutput, cached_file

from .image_processing import CodaImageProcessor
from .models.coda_vq import MODEL_TYPE, CodaVQModel
from .pipelines.tokenization import TASK, CodaTokenizerPipeline

logger = logging.getLogger(__name__)

# from_pretrained keyword arguments that locate files (transformers' and huggingface_hub's names).
_DOWNLOAD_KWARGS = ("subfolder", "revision", "cache_dir", "local_files_only", "token", "force_download", "proxies")


def config_fields(function: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A class namespace whose annotated attributes are ``function``'s keyword arguments (type hints and
    defaults; a list or dict default copied per instance): the fields of a transformers config that mirrors
    a constructor, derived from its signature instead of kept by hand."""
    hints = typing.get_type_hints(function)
    namespace: dict[str, Any] = {"__annotations__": {}}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{function.__qualname__}: argument {name!r} has no default; a config field needs one")
        namespace["__annotations__"][name] = hints.get(name, Any)
        default = parameter.default
        mutable = isinstance(default, (list, dict))
        namespace[name] = dataclasses.field(default_factory=functools.partial(copy.deepcopy, default)) if mutable else default
    return namespace


# CodaVQConfig's fields: every CodaVQModel constructor argument (model_type is the class attribute below).
_CODA_FIELDS = config_fields(CodaVQModel.__init__, skip=("model_type",))
CODA_CONFIG_KEYS = tuple(_CODA_FIELDS["__annotations__"])
_CodaVQFields = types.new_class("_CodaVQFields", (PretrainedConfig,), exec_body=lambda ns: ns.update(_CODA_FIELDS))


class CodaVQConfig(_CodaVQFields):
    """transformers view of a :class:`~coda_hf.models.CodaVQModel` config (same keys, same file): its fields are
    the model's constructor arguments with their types and defaults (:func:`config_fields`)."""

    model_type = MODEL_TYPE

    # The file transformers' from_pretrained reads (not a config field: transformers drops it on save). A CodaVQ
    # directory is written by diffusers; CodaVQForTokenization.from_pretrained names the variant / shard index.
    transformers_weights = SAFETENSORS_WEIGHTS_NAME

    def to_coda_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``CodaVQModel(...)``."""
        return {k: getattr(self, k) for k in CODA_CONFIG_KEYS}


@dataclass
class CodaTokenizationOutput(ModelOutput):
    """``CodaVQForTokenization.forward`` result.

    Attributes:
        token_ids: ``(B, N)`` level-major token ids.
        indices: one ``(B, h_l, w_l)`` tensor per level.
        quantized: ``(B, C, h, w)`` quantized normalised latents.
    """

    token_ids: torch.Tensor | None = None
    indices: tuple[torch.Tensor, ...] | None = None
    quantized: torch.Tensor | None = None


class CodaVQForTokenization(PreTrainedModel):
    """``PreTrainedModel`` wrapper of a :class:`CodaVQModel` for ``AutoModel`` and transformers pipelines.

    ``forward(pixel_values)`` tokenizes; ``.coda`` is the diffusers model (``decode`` etc.). Loading and saving
    go through transformers' own ``from_pretrained`` / ``save_pretrained`` machinery (``output_loading_info``,
    ``dtype``, ``device_map``, ``state_dict``, the meta-device guard, ``variant``, ``max_shard_size``,
    ``push_to_hub``) on the diffusers directory layout, which both libraries read: one weights file
    (``diffusion_pytorch_model[.variant].safetensors``, or its shards) whose keys are the ``coda.`` submodule's
    (transformers adds the ``base_model_prefix``).
    """

    config_class = CodaVQConfig
    base_model_prefix = "coda"
    main_input_name = "pixel_values"

    def __init__(self, config: CodaVQConfig, coda_model: CodaVQModel | None = None):
        super().__init__(config)
        self.coda = coda_model if coda_model is not None else CodaVQModel(**config.to_coda_kwargs())
        if not next(self.coda.parameters()).is_meta:
            # Built (or given) with real weights: initialised already. Under from_pretrained the model is built
            # on the meta device and whatever the checkpoint does not hold goes through _init_weights.
            for module in self.coda.modules():
                module._is_hf_initialized = True
        self.post_init()
        self._drop_init_state()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """A tokenizer's initialisation is its constructor (the quantizer builds its codebooks and derived buffers;
        the VAE weights come from a checkpoint): tensors a load leaves uninitialised (missing keys, non-persistent
        buffers) get the values of a freshly built ``CodaVQModel`` of the same config."""
        if module is self or module is self.coda:
            return  # no tensors of their own
        if "_module_names" not in self.__dict__:
            self.__dict__["_module_names"] = {m: n for n, m in self.coda.named_modules()}
        name = self.__dict__["_module_names"][module]
        if "_init_reference" not in self.__dict__:
            with torch.device("cpu"):
                self.__dict__["_init_reference"] = CodaVQModel.from_config(self.coda.config)
        reference = self.__dict__["_init_reference"].get_submodule(name)
        for source in (module.named_parameters(recurse=False), module.named_buffers(recurse=False)):
            for key, tensor in source:
                if tensor is not None:
                    init.copy_(tensor, getattr(reference, key))  # skips tensors the checkpoint filled

    def _drop_init_state(self) -> None:
        """Forget what :meth:`_init_weights` kept while initialising (a reference model, module names)."""
        self.__dict__.pop("_init_reference", None)
        self.__dict__.pop("_module_names", None)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' ``PreTrainedModel.from_pretrained`` on a saved CodaVQModel directory (or Hub repo).

        Every transformers argument keeps its meaning; the weights file is the diffusers one (``variant``
        picks ``diffusion_pytorch_model.<variant>.safetensors`` as diffusers names it). ``None`` with
        ``config=`` and ``state_dict=`` builds the model from a state dict (keys with or without ``coda.``).
        The package's loading rules apply (safetensors only, the saved ``model_type`` and every weight must
        match: :func:`coda_hf.models.loading.load_pretrained`).
        """
        from .models.loading import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, *model_args, loader=cls._load, **kwargs)

    @classmethod
    def _load(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """The unguarded loader behind :meth:`from_pretrained`."""
        if pretrained_model_name_or_path is None:
            model = super().from_pretrained(None, *model_args, config=config, **kwargs)
        else:
            weights = _diffusers_weights_file(pretrained_model_name_or_path, kwargs)
            if weights.endswith((".safetensors", ".safetensors.index.json")):
                # transformers reads the file itself when the config names it (``transformers_weights``)
                if isinstance(config, PretrainedConfig):
                    config = copy.deepcopy(config)
                    config.transformers_weights = weights
                else:
                    kwargs["transformers_weights"] = weights
                model = super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
            else:  # a variant's shard index, which transformers only finds under its own names
                state_dict = _read_diffusers_weights(pretrained_model_name_or_path, weights, kwargs)
                model = super().from_pretrained(
                    None, *model_args, config=pretrained_model_name_or_path if config is None else config,
                    state_dict=state_dict, **kwargs,
                )  # fmt: skip
                (model[0] if isinstance(model, tuple) else model).config.name_or_path = str(pretrained_model_name_or_path)
        (model[0] if isinstance(model, tuple) else model)._drop_init_state()
        return model

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        push_to_hub: bool = False,
        max_shard_size: int | str = "50GB",
        variant: str | None = None,
        token: str | bool | None = None,
        save_peft_format: bool = True,
        save_original_format: bool = True,
        distributed_checkpoint: bool = False,
        **kwargs,
    ) -> None:
        """transformers' ``save_pretrained`` arguments, written in the diffusers format that both libraries load
        (``CodaVQModel.save_pretrained``: ``config.json`` with ``model_type`` + safetensors weights + the image
        processor).

        ``state_dict`` saves those tensors instead of the module's (keys with or without ``coda.``, as
        ``accelerate`` gathers them); ``push_to_hub`` / ``token`` / ``kwargs`` (``repo_id``, ``private``,
        ``commit_message``, ``create_pr``) upload as transformers does. ``save_original_format`` holds trivially
        (the diffusers layout is the original one) and ``save_peft_format`` has nothing to act on (LoRA lives
        in the diffusers model's own layers, saved with it). ``distributed_checkpoint=True`` raises
        ``NotImplementedError``: torch DCP shards are not a format diffusers reads.
        """
        if distributed_checkpoint:
            raise NotImplementedError(
                "CodaVQForTokenization saves the diffusers format, which both libraries load; torch DCP shards "
                "(distributed_checkpoint=True) are not part of it -- gather a state_dict and pass state_dict= instead"
            )
        coda = self.coda if state_dict is None else _coda_with_state_dict(self.coda, state_dict, self.base_model_prefix)
        if token is not None:
            kwargs["token"] = token
        coda.save_pretrained(
            save_directory, is_main_process=is_main_process, variant=variant, max_shard_size=max_shard_size,
            push_to_hub=push_to_hub, **kwargs,
        )  # fmt: skip

    def get_input_embeddings(self):
        raise NotImplementedError(
            "CodaVQForTokenization has no input token embeddings: it reads pixels, and its tokens are what it "
            "outputs (the codebooks live in .coda.quantizer)"
        )

    def set_input_embeddings(self, value):
        self.get_input_embeddings()

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None) -> CodaTokenizationOutput | tuple:
        """``(B, 3, H, W)`` pixel values in ``[-1, 1]`` -> token ids and indices per level.

        ``return_dict=False`` returns ``(token_ids, indices, quantized)``; default ``config.return_dict``.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        enc = self.coda.encode(pixel_values)
        out = CodaTokenizationOutput(token_ids=enc.token_ids, indices=tuple(enc.indices), quantized=enc.quantized)
        return out if return_dict else out.to_tuple()


def _diffusers_weights_file(path: str | os.PathLike, kwargs: dict[str, Any]) -> str:
    """The name of the diffusers weights file of ``path`` (diffusers' own preference order and variant naming)."""
    variant, use_safetensors = kwargs.get("variant"), kwargs.get("use_safetensors")
    names = []
    if use_safetensors is not False:
        names += [_add_variant(n, variant) for n in (SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)]
    if use_safetensors is not True:
        names += [_add_variant(n, variant) for n in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)]
    for name in names:
        if _locate(path, name, kwargs) is not None:
            return name
    where = os.path.join(str(path), kwargs["subfolder"]) if kwargs.get("subfolder") else str(path)
    raise OSError(f"{where}: no diffusers weights file ({' or '.join(names)}); save it with save_pretrained")


def _locate(path: str | os.PathLike, name: str, kwargs: dict[str, Any]) -> str | None:
    """Local path of ``name`` in the directory or Hub repo ``path`` (downloaded if needed), ``None`` if absent."""
    download = {k: kwargs[k] for k in _DOWNLOAD_KWARGS if kwargs.get(k) is not None}
    return cached_file(
        str(path), name, _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False, **download,
    )  # fmt: skip


def _read_diffusers_weights(path: str | os.PathLike, name: str, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a diffusers safetensors weights file or shard index."""
    files = [_locate(path, name, kwargs)]
    if name.endswith(".json"):  # a shard index: {"weight_map": {key: shard file}}
        files = [_locate(path, shard, kwargs) for shard in sorted(set(_read_json(files[0])["weight_map"].values()))]
    state_dict = {}
    for file in files:
        if file is None:
            raise OSError(f"{path}: a shard listed in {name} is missing")
        if not file.endswith(".safetensors"):  # the loading guard forces use_safetensors=True
            raise OSError(f"{file}: coda_hf reads safetensors weights only")
        state_dict.update(safetensors.torch.load_file(file))
    return state_dict


def _read_json(file: str) -> dict[str, Any]:
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def _coda_with_state_dict(coda: CodaVQModel, state_dict: dict[str, torch.Tensor], prefix: str) -> CodaVQModel:
    """A ``CodaVQModel`` of ``coda``'s config holding ``state_dict`` (keys with or without ``prefix.``), built on
    the meta device and given the tensors themselves (no copy); ``RuntimeError`` on missing or unexpected keys."""
    with torch.device("meta"):
        clone = CodaVQModel.from_config(coda.config)
    clone.load_state_dict({k.removeprefix(f"{prefix}."): v for k, v in state_dict.items()}, strict=True, assign=True)
    return clone


def register() -> None:
    """Register the config, model, image processor and pipeline task with transformers (idempotent)."""
    AutoConfig.register(MODEL_TYPE, CodaVQConfig, exist_ok=True)
    AutoModel.register(CodaVQConfig, CodaVQForTokenization, exist_ok=True)
    AutoImageProcessor.register(CodaVQConfig, image_processor_classes={"pil": CodaImageProcessor}, exist_ok=True)
    if TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=CodaTokenizerPipeline, pt_model=CodaVQForTokenization, type="image",
            default=default_pipeline_model(),
        )


def default_pipeline_model() -> dict | None:
    """The task's default model for transformers (``{"model": (folder, revision)}``): the bundled CODA tokenizer,
    or ``None`` (no default) when this installation ships none. Only used when ``pipeline()`` gets no model."""
    from .bundled import DEFAULT_TOKENIZER, UnknownBundledModelError, bundled_model

    try:
        return {"model": (bundled_model(DEFAULT_TOKENIZER), None)}
    except UnknownBundledModelError:
        return None


register()
