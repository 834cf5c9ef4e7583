"""``TrainingConfig``: every tokenizer-training setting, loaded from YAML plus ``--key value`` overrides.

Loaded by the one settings mechanism of the package (:mod:`coda_hf.settings`): dataclass defaults <
``--config file.yaml`` (repeatable) < command-line ``--key value``; mappings merge through the layers
(``--quantizer.quantizer_kwargs.codebook_size 16384`` changes one key), ``--help`` lists every option
with its default, an unknown option names the closest valid one. Booleans accept a bare flag
(``--streaming``) or an explicit value (``--streaming false``). Settings that feed a constructor take
that constructor's default (one default per setting). Training settings live here and never enter a
model config (house style rule 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..losses import ReconstructionLoss
from ..settings import Settings, default_of, option
from .optim import build_adamw, build_ema

MODEL_TYPES = ("coda", "vqgan", "vae")
MIXED_PRECISION = ("no", "fp16", "bf16")
# Fields never written next to the model (secrets).
PRIVATE_FIELDS = ("hub_token",)


def _loss(name: str) -> Any:
    return default_of(ReconstructionLoss, name)


@dataclass
class TrainingConfig(Settings):
    """Settings of ``examples/train_tokenizer.py`` / :func:`coda_hf.training.train`.

    Defaults follow the CODA recipe (coda-facts.md): AdamW betas (0.5, 0.9), lr 5e-4, weight decay
    0.005 (generator) / 0.0005 (discriminator), cosine schedule, gradient clipping 10, EMA 0.9999;
    L1 0.2 + L2 1.0 + perceptual 1.0 + GAN 1.0 (hinge, adaptive weight).
    """

    private_fields = PRIVATE_FIELDS

    # ---- model -------------------------------------------------------------------------------
    model: str = option("coda", "coda (adapt a pretrained VAE) | vqgan (from scratch) | vae (continuous, from scratch)")
    pretrained_vae: str | None = option(None, "coda: Hub id or path of the AutoencoderKL to adapt")
    vae_subfolder: str | None = option(None, 'e.g. "vae" inside a diffusers pipeline repo')
    preset: str | None = option(None, "coda: named recipe of CodaVQModel.from_vae (flux-vae, sd-vae, sdxl-vae, mar-vae); "
                                      "--quantizer and --model_kwargs.lora MERGE into it")  # fmt: skip
    pretrained_model: str | None = option(None, "fine-tune an existing tokenizer (CodaVQModel / VQGANModel / VAE dir)")
    reinit_codebook: bool = option(False, "fine-tuning: re-initialise the quantizer instead of keeping the codebook")
    quantizer: dict[str, Any] = option(help="{name: ..., **kwargs} of a registered quantizer (coda / vqgan); "
                                            "default: the preset's or the model's own", default_factory=dict)  # fmt: skip
    model_kwargs: dict[str, Any] = option(help="extra constructor kwargs of the model", default_factory=dict)
    kl_beta: float = option(1e-6, "vae: beta of the KL term")

    # ---- data --------------------------------------------------------------------------------
    dataset_name: str | None = option(None, "any Hub image dataset, e.g. ILSVRC/imagenet-1k")
    dataset_config_name: str | None = option(None, "config of dataset_name")
    dataset_split: str = option("train", "split to train on")
    streaming: bool = option(False, "stream dataset_name instead of downloading it")
    train_data_dir: str | None = option(None, "local image folder, or a folder of parquet / webdataset (.tar) shards")
    image_column: str = option("image", "image column")
    cache_dir: str | None = option(None, "datasets cache")
    resolution: int = option(256, "training image size (square)")
    random_flip: bool = option(True, "random horizontal flips")
    crop_scale_min: float = option(0.8, "random-resized-crop scale range (crop_scale_min, 1.0); 1.0 = centre crop")
    shuffle_buffer_size: int = option(1000, "shuffle buffer of streamed data")
    num_shards: int | None = option(None, "local (non-streamed) data: shards made by to_iterable_dataset")
    dataloader_num_workers: int = option(0, "DataLoader workers per process")
    log_sample_ids: bool = option(False, "each rank writes the ids of the samples it read to sample_ids/rank<r>.txt")

    # ---- objective (defaults: ReconstructionLoss's) -----------------------------------------------
    l1_weight: float = option(_loss("l1_weight"), "pixel L1 weight")
    l2_weight: float = option(_loss("l2_weight"), "pixel L2 weight")
    perceptual_weight: float = option(_loss("perceptual_weight"), "perceptual loss weight (0: no network)")
    perceptual_backend: str = option(_loss("perceptual_backend"), "efficientnet (offline) | lpips")
    perceptual_pretrained: bool = option(_loss("perceptual_pretrained"), "EfficientNet backend: ImageNet weights")
    lpips_weights: str | None = option(_loss("lpips_weights"), "lpips backend: safetensors path or Hub repo id")
    gan_weight: float = option(_loss("gan_weight"), "generator GAN weight; 0 disables the discriminator")
    gan_loss: str = option(_loss("gan_loss"), "hinge | non_saturating")
    adaptive_weight: bool = option(_loss("adaptive_weight"), "VQGAN adaptive GAN weight")
    disc_start: int = option(_loss("disc_start"), "optimiser step from which the GAN terms are on")
    discriminator: str = option("projected", "projected | patchgan (coda_hf.discriminators.build_discriminator)")
    discriminator_kwargs: dict[str, Any] = option(help="constructor kwargs of the discriminator", default_factory=dict)

    # ---- optimisation ------------------------------------------------------------------------
    learning_rate: float = option(5e-4, "generator learning rate")
    disc_learning_rate: float | None = option(None, "discriminator learning rate (none: learning_rate)")
    quantizer_learning_rate: float | None = option(None, "the model's quantizer (codebook, projections); none: learning_rate")
    data_init_images: int = option(0, "a quantizer with a data-dependent start (attention init 'data') samples its codes "
                                      "from this many training images per process before the first step; 0: the first batch")  # fmt: skip
    adam_beta1: float = option(default_of(build_adamw, "betas")[0], "AdamW beta1")
    adam_beta2: float = option(default_of(build_adamw, "betas")[1], "AdamW beta2")
    adam_epsilon: float = option(default_of(build_adamw, "eps"), "AdamW epsilon")
    weight_decay: float = option(default_of(build_adamw, "weight_decay"), "generator AdamW weight decay")
    disc_weight_decay: float = option(0.0005, "discriminator AdamW weight decay")
    lr_scheduler: str = option("cosine", "any diffusers.optimization.get_scheduler name")
    lr_warmup_steps: int = option(0, "linear warm-up steps")
    max_grad_norm: float = option(10.0, "gradient clipping norm")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimiser step")
    use_ema: bool = option(False, "keep an EMA of the weights (saved as the model)")
    ema_decay: float = option(default_of(build_ema, "decay"), "EMA decay")
    ema_start_step: int = option(0, "no EMA update before this many optimiser steps")

    # ---- run ---------------------------------------------------------------------------------
    output_dir: str = option("coda-tokenizer", "model, checkpoints and logs go here (one live trainer at a time)")
    seed: int = option(0, "random seed")
    train_batch_size: int = option(8, "batch size per process")
    max_train_steps: int | None = option(None, "optimiser steps; none: num_train_epochs x steps per epoch; 0: no "
                                               "update, a training-free tokenizer (a data-dependent quantizer such "
                                               "as 'quantile' measured on data_init_images images) is saved")  # fmt: skip
    num_train_epochs: int = option(1, "epochs (ignored when max_train_steps is set)")
    mixed_precision: str = option("no", "no | fp16 | bf16")
    cpu: bool = option(False, "force CPU (also ACCELERATE_USE_CPU=true)")
    checkpointing_steps: int = option(500, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = option(None, "keep at most N checkpoints")
    resume_from_checkpoint: str | None = option(None, '"latest" or a checkpoint directory')
    max_nonfinite_steps: int = option(10, "this many non-finite losses in a row stop the run")
    report_to: str = option("tensorboard", 'accelerate tracker name(s), comma-separated; "none" disables')
    tracker_project_name: str = option("coda_hf_tokenizer", "tracker project name")
    logging_steps: int = option(10, "log scalars every N steps")
    image_logging_steps: int = option(500, "reconstruction grid every N steps (0 disables)")
    push_to_hub: bool = option(False, "upload the trained model to hub_model_id")
    hub_model_id: str | None = option(None, "ORG/NAME of the Hub repository")
    hub_private: bool = option(False, "create the Hub repository private")
    hub_token: str | None = option(None, "Hub token (never saved)")

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
        if self.max_train_steps is not None and self.max_train_steps < 0:
            raise ValueError(f"max_train_steps must be >= 0 (0: no update, a training-free tokenizer); got {self.max_train_steps}")
        if self.max_train_steps == 0 and self.model == "vae":
            raise ValueError("max_train_steps 0 saves a training-free tokenizer; a continuous VAE from scratch needs training")
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
        if self.quantizer and "name" not in self.quantizer and self.preset is None and self.pretrained_model is None:
            # Without a name the options merge into a base quantizer: the preset's, or the fine-tuned model's.
            raise ValueError(f"quantizer options need a 'name' (a registered quantizer), or a --preset / --pretrained_model "
                             f"whose quantizer they change; got {self.quantizer}")
