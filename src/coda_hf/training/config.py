"""``TrainingConfig``: every tokenizer-training setting, loaded from YAML plus ``--key value`` overrides.

Precedence: dataclass defaults < ``--config file.yaml`` < command-line ``--key value``. Nested dict
options take dotted keys on the command line (``--quantizer.codebook_size 16``) or a whole YAML /
JSON mapping (``--quantizer '{name: vq, codebook_size: 16}'``). Booleans accept a bare flag
(``--streaming``) or an explicit value (``--streaming false``). Training settings live here and
never enter a model config (house style rule 1).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODEL_TYPES = ("coda", "vqgan", "vae")
MIXED_PRECISION = ("no", "fp16", "bf16")
# Fields never written next to the model (secrets).
PRIVATE_FIELDS = ("hub_token",)


@dataclass
class TrainingConfig:
    """Settings of ``examples/train_tokenizer.py`` / :func:`coda_hf.training.train`.

    Defaults follow the CODA recipe (coda-facts.md): AdamW betas (0.5, 0.9), lr 5e-4, weight decay
    0.005 (generator) / 0.0005 (discriminator), cosine schedule, gradient clipping 10, EMA 0.9999;
    L1 0.2 + L2 1.0 + perceptual 1.0 + GAN 1.0 (hinge, adaptive weight).
    """

    # ---- model -------------------------------------------------------------------------------
    model: str = "coda"  # coda | vqgan | vae
    pretrained_vae: str | None = None  # coda: Hub id or path of the AutoencoderKL to adapt
    vae_subfolder: str | None = None  # e.g. "vae" inside a diffusers pipeline repo
    preset: str | None = None  # coda: named recipe of CodaVQModel.from_vae (e.g. "flux-vae")
    pretrained_model: str | None = None  # fine-tune an existing tokenizer (CodaVQModel / VQGANModel / VAE dir)
    reinit_codebook: bool = False  # fine-tuning: re-initialise the quantizer instead of keeping the codebook
    quantizer: dict[str, Any] = field(default_factory=dict)  # {"name": ..., **kwargs} (coda / vqgan)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor kwargs of the model
    kl_beta: float = 1e-6  # vae: beta of the KL term

    # ---- data --------------------------------------------------------------------------------
    dataset_name: str | None = None  # any Hub image dataset, e.g. ILSVRC/imagenet-1k
    dataset_config_name: str | None = None
    dataset_split: str = "train"
    streaming: bool = False
    train_data_dir: str | None = None  # local image folder, or a folder of parquet / webdataset (.tar) shards
    image_column: str = "image"
    cache_dir: str | None = None  # datasets cache
    resolution: int = 256
    random_flip: bool = True
    crop_scale_min: float = 0.8  # random-resized-crop scale range (crop_scale_min, 1.0); 1.0 = centre crop
    shuffle_buffer_size: int = 1000
    num_shards: int | None = None  # local (non-streamed) data: shards made by to_iterable_dataset
    dataloader_num_workers: int = 0
    log_sample_ids: bool = False  # each rank writes the ids of the samples it read to sample_ids/rank<r>.txt

    # ---- objective ---------------------------------------------------------------------------
    l1_weight: float = 0.2
    l2_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_backend: str = "efficientnet"  # efficientnet (offline) | lpips
    perceptual_pretrained: bool = True
    lpips_weights: str | None = None
    gan_weight: float = 1.0  # 0 disables the discriminator
    gan_loss: str = "hinge"
    adaptive_weight: bool = True
    disc_start: int = 0
    discriminator: str = "projected"  # projected | patchgan
    discriminator_kwargs: dict[str, Any] = field(default_factory=dict)

    # ---- optimisation ------------------------------------------------------------------------
    learning_rate: float = 5e-4
    disc_learning_rate: float | None = None  # None: learning_rate
    quantizer_learning_rate: float | None = None  # the model's quantizer (codebook, projections); None: learning_rate
    # A quantizer with a data-dependent start (attention init "data") samples its codes from this many
    # training images per process before the first step; 0: from the first training batch.
    data_init_images: int = 0
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.005
    disc_weight_decay: float = 0.0005
    lr_scheduler: str = "cosine"  # any diffusers.optimization.get_scheduler name
    lr_warmup_steps: int = 0
    max_grad_norm: float = 10.0
    gradient_accumulation_steps: int = 1
    use_ema: bool = False
    ema_decay: float = 0.9999
    ema_start_step: int = 0

    # ---- run ---------------------------------------------------------------------------------
    output_dir: str = "coda-tokenizer"
    seed: int = 0
    train_batch_size: int = 8  # per process
    max_train_steps: int | None = None  # optimiser steps; None: num_train_epochs x steps per epoch
    num_train_epochs: int = 1
    mixed_precision: str = "no"
    cpu: bool = False  # force CPU (also ACCELERATE_USE_CPU=true)
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint directory
    max_nonfinite_steps: int = 10  # this many non-finite losses in a row stop the run
    report_to: str = "tensorboard"  # accelerate tracker name(s), comma-separated; "none" disables
    tracker_project_name: str = "coda_hf_tokenizer"
    logging_steps: int = 10
    image_logging_steps: int = 500  # reconstruction grid every N steps (0 disables)
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False
    hub_token: str | None = None
    # Test hook: update attempts (1-based, skipped steps included) whose loss is replaced by NaN.
    inject_nonfinite_at: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.model not in MODEL_TYPES:
            raise ValueError(f"model must be one of {MODEL_TYPES}; got {self.model!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}")
        if self.mixed_precision == "fp16" and self.gan_weight > 0:
            # accelerate has ONE GradScaler: stepping two optimisers with it would unscale the second
            # one's gradients twice. bf16 needs no scaler.
            raise ValueError("--mixed_precision fp16 is not supported with a discriminator (two optimisers share "
                             "accelerate's single GradScaler); use --mixed_precision bf16, or --gan_weight 0")
        if self.model == "coda" and self.pretrained_vae is None and self.pretrained_model is None:
            raise ValueError("model 'coda' adapts a pretrained VAE: pass --pretrained_vae HUB_ID_OR_PATH "
                             "(or --pretrained_model to fine-tune a CodaVQModel)")
        if self.pretrained_vae is not None and self.model != "coda":
            raise ValueError(f"--pretrained_vae is only used by --model coda; got --model {self.model}")
        if self.reinit_codebook and self.pretrained_model is None:
            raise ValueError("--reinit_codebook only applies when fine-tuning with --pretrained_model")
        if self.reinit_codebook and self.model == "vae":
            raise ValueError("--reinit_codebook: a continuous VAE has no codebook")
        for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "max_nonfinite_steps",
                     "resolution", "num_train_epochs", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"max_train_steps must be >= 1; got {self.max_train_steps}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be >= 1; got {self.checkpoints_total_limit}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(f"crop_scale_min must be in (0, 1]; got {self.crop_scale_min}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id ORG/NAME")
        if self.data_init_images < 0:
            raise ValueError(f"data_init_images must be >= 0 (0 = the first training batch); got {self.data_init_images}")
        if self.quantizer_learning_rate is not None:
            if self.quantizer_learning_rate < 0:
                raise ValueError(f"quantizer_learning_rate must be >= 0; got {self.quantizer_learning_rate}")
            if self.model == "vae":
                raise ValueError("--quantizer_learning_rate: a continuous VAE has no quantizer")
        if self.quantizer and "name" not in self.quantizer:
            raise ValueError(f"quantizer options need a 'name' (a registered quantizer); got {self.quantizer}")

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self, include_private: bool = False) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not include_private:
            for name in PRIVATE_FIELDS:
                out.pop(name, None)
        return out

    def save(self, directory: str | Path) -> None:
        """Write ``training_config.json`` and ``training_config.yaml`` (secrets left out) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        (directory / "training_config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (directory / "training_config.yaml").write_text(yaml.safe_dump(data, sort_keys=True))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainingConfig:
        fields = _field_types()
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown training option(s) {unknown}")
        return cls(**{k: _coerce(k, v, fields[k], source) for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainingConfig:
        return cls.from_dict(_read_yaml(path), source=str(path))

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> TrainingConfig:
        """Parse ``[--config file.yaml] [--key value | --flag | --dict.key value] ...``."""
        return cls.from_dict(parse_overrides(argv or []), source="command line")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainingConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainingConfig)}


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {str(path)!r}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(inner type, optional?)`` of ``X | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(name: str, value: Any, tp: Any, source: str) -> Any:
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"{source}: option {name} may not be None")
    origin = typing.get_origin(base) or base
    if isinstance(value, str) and origin in (dict, list, bool, int, float):
        parsed = yaml.safe_load(value) if value.strip() else value
        if origin is list and isinstance(parsed, (int, float)):
            parsed = [parsed]
        elif origin is list and isinstance(parsed, str):
            parsed = [yaml.safe_load(p) for p in parsed.split(",") if p.strip()]  # "2,3"
        value = parsed
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if origin is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if origin is str:
            return str(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{source}: option {name} expects {tp}; got {value!r}") from None
    return value


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """Turn ``argv`` into a flat option dict (``--config`` file first, then the rest in order)."""
    fields = _field_types()
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) < 3:
            raise ValueError(f"command line: expected --option, got {token!r}")
        key, has_eq, inline = token[2:].partition("=")
        key = key.replace("-", "_")
        base = key.split(".", 1)[0]
        if base != "config" and base not in fields:
            raise ValueError(f"command line: unknown option --{key}")
        if has_eq:
            value: Any = inline
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 2
        elif base != "config" and _base_type(fields[base])[0] is bool:
            value = True
            i += 1
        else:
            raise ValueError(f"command line: option --{key} needs a value")
        pairs.append((key, value))

    data: dict[str, Any] = {}
    for key, value in pairs:
        if key == "config":
            data.update(_read_yaml(value))
    for key, value in pairs:
        if key == "config":
            continue
        if "." in key:
            base, sub = key.split(".", 1)
            if typing.get_origin(_base_type(fields[base])[0]) is not dict:
                raise ValueError(f"command line: --{key}: option {base} is not a mapping")
            current = data.get(base) or {}
            nested = dict(yaml.safe_load(current) if isinstance(current, str) else current)
            nested[sub] = yaml.safe_load(value) if isinstance(value, str) else value
            data[base] = nested
        else:
            data[key] = value
    return data
