"""Training of the MaskGIT prior on pre-tokenized images (``examples/train_maskgit.py`` wires this up).

Masked-token cross-entropy (loss only on masked positions, mask ratio from
:class:`~coda_hf.maskgit.MaskGitScheduler`), class dropout to the null class for classifier-free guidance,
AdamW + cosine LR with warm-up, EMA of the weights, accelerate checkpoints, sample grids in tensorboard,
and a final ``save_pretrained`` of the prior and of the whole :class:`CodaMaskGitPipeline`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid

from ..distributed import owns_no_process_group_yet, release_distributed
from ..image_io import list_image_files
from ..maskgit import MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from ..models.loading import load_tokenizer
from ..pipelines.maskgit import CodaMaskGitPipeline
from .checkpointing import refuse_unsafe_pickles
from .maskgit_data import LABEL_COLUMN, TOKEN_COLUMN, pretokenize_dataset

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_CONFIG_NAME = "training_config.json"


# ----------------------------------------------------------------------------------------- loss
@dataclass
class MaskGitLossOutput:
    """Result of :func:`maskgit_loss`.

    Attributes:
        loss: cross-entropy over the masked positions only.
        masked_accuracy: fraction of masked positions whose argmax is the true code (detached).
        mask_ratio: fraction of positions that were masked (detached).
    """

    loss: torch.Tensor
    masked_accuracy: torch.Tensor
    mask_ratio: torch.Tensor


def drop_class_labels(
    class_labels: torch.Tensor, drop_prob: float, null_class_id: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each label by the null class with probability ``drop_prob`` (classifier-free guidance training)."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"class_drop_prob must lie in [0, 1]; got {drop_prob}")
    if drop_prob == 0.0:
        return class_labels
    gen_device = generator.device if generator is not None else class_labels.device
    drop = (
        torch.rand(class_labels.shape, generator=generator, device=gen_device).to(class_labels.device)
        < drop_prob
    )
    return torch.where(drop, torch.full_like(class_labels, null_class_id), class_labels)


def maskgit_loss(
    model: MaskGitTransformer,
    scheduler: MaskGitScheduler,
    token_ids: torch.Tensor,
    class_labels: torch.Tensor,
    class_drop_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> MaskGitLossOutput:
    """One MaskGIT training objective evaluation on ``(B, N)`` codes and ``(B,)`` class labels."""
    inner = getattr(model, "module", model)  # DDP-wrapped or not
    masking = scheduler.mask_tokens(token_ids, inner.mask_token_id, generator=generator)
    labels = torch.where(
        masking.mask, token_ids, torch.full_like(token_ids, -100)
    )  # loss on masked positions
    class_labels = drop_class_labels(class_labels, class_drop_prob, inner.null_class_id, generator)
    out = model(input_ids=masking.masked_ids, class_labels=class_labels, labels=labels)
    with torch.no_grad():
        correct = (out.logits.argmax(-1) == token_ids) & masking.mask
        accuracy = correct.sum() / masking.mask.sum().clamp(min=1)
    return MaskGitLossOutput(loss=out.loss, masked_accuracy=accuracy, mask_ratio=masking.mask.float().mean())


# ----------------------------------------------------------------------------------------- config
@dataclass
class MaskGitTrainingConfig:
    """Every setting of ``examples/train_maskgit.py`` (command-line flags of the same names)."""

    tokenizer: str = field(
        metadata={"help": "saved coda_hf tokenizer directory (CodaVQModel, VQGANModel, ...)"}
    )
    output_dir: str = field(metadata={"help": "checkpoints, logs, samples, prior/ and pipeline/ go here"})
    tokenizer_class: str | None = field(
        default=None,
        metadata={"help": "'module:Class' of the tokenizer when its config does not name a coda_hf class"},
    )
    # data
    train_data_dir: str | None = field(
        default=None, metadata={"help": "local image folder (datasets imagefolder)"}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset name (instead of train_data_dir)"}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "config of dataset_name"})
    dataset_split: str = field(default="train", metadata={"help": "split to train on"})
    image_column: str = field(default="image", metadata={"help": "image column"})
    label_column: str | None = field(
        default="label", metadata={"help": "class column; 'none' trains unconditionally (one class)"}
    )
    resolution: int = field(default=256, metadata={"help": "training image size (square)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N images"})
    token_cache_dir: str | None = field(
        default=None, metadata={"help": "where the token dataset is cached (default OUTPUT_DIR/token_cache)"}
    )
    tokenize_batch_size: int = field(default=32, metadata={"help": "batch size of pre-tokenization"})
    # prior architecture (-> MaskGitConfig)
    hidden_size: int = field(default=256, metadata={"help": "prior width"})
    num_hidden_layers: int = field(default=4, metadata={"help": "prior depth"})
    num_attention_heads: int = field(default=4, metadata={"help": "prior attention heads"})
    dropout: float = field(default=0.1, metadata={"help": "prior hidden and attention dropout"})
    num_classes: int | None = field(
        default=None, metadata={"help": "number of classes (default: from the data)"}
    )
    # objective and sampling
    mask_schedule: str = field(default="cosine", metadata={"help": "cosine | linear | square | arccos"})
    class_drop_prob: float = field(
        default=0.1, metadata={"help": "probability of training on the null class"}
    )
    num_inference_steps: int = field(default=8, metadata={"help": "unmasking steps of the sample grids"})
    guidance_scale: float = field(
        default=2.0, metadata={"help": "classifier-free guidance of the sample grids"}
    )
    # optimisation
    train_batch_size: int = field(default=32, metadata={"help": "batch size per process"})
    num_train_epochs: int = field(
        default=10, metadata={"help": "epochs (ignored when max_train_steps is set)"}
    )
    max_train_steps: int | None = field(default=None, metadata={"help": "total optimizer steps"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=4e-4, metadata={"help": "peak learning rate"})
    lr_warmup_steps: int = field(
        default=500, metadata={"help": "linear warm-up steps before the cosine decay"}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.96, metadata={"help": "AdamW beta2"})
    weight_decay: float = field(default=0.045, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    use_ema: bool = field(
        default=True, metadata={"help": "keep an EMA of the weights (used for samples and saving)"}
    )
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay"})
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    # bookkeeping
    checkpointing_steps: int = field(default=500, metadata={"help": "save accelerate state every N steps"})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "keep at most N checkpoints"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "a checkpoint directory, or 'latest' in output_dir"}
    )
    validation_steps: int = field(default=1000, metadata={"help": "log a sample grid every N steps"})
    num_validation_images: int = field(default=8, metadata={"help": "images per sample grid"})
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker ('none' to disable)"})
    logging_steps: int = field(default=10, metadata={"help": "log loss / lr every N steps"})

    def __post_init__(self):
        if (self.train_data_dir is None) == (self.dataset_name is None):
            raise ValueError("give exactly one of --train_data_dir and --dataset_name")
        if self.label_column is not None and self.label_column.lower() == "none":
            self.label_column = None
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no | fp16 | bf16; got {self.mixed_precision!r}")
        for name in (
            "train_batch_size",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "validation_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------- helpers
def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or ``None``."""
    found = [
        p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(r"checkpoint-\d+", p.name)
    ]
    return max(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def _prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    found = sorted(
        output_dir.glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :])
    )
    for old in found[: max(0, len(found) - limit)]:
        shutil.rmtree(old, ignore_errors=True)


def load_image_dataset(config: MaskGitTrainingConfig) -> datasets.Dataset:
    if config.train_data_dir is not None:
        # Every image of the folder, whatever its name (explicit data_files: no split-by-file-name);
        # class labels still come from the subfolder names.
        images = list_image_files(config.train_data_dir) if Path(config.train_data_dir).is_dir() else []
        if not images:
            raise FileNotFoundError(f"--train_data_dir {config.train_data_dir!r} is not a folder of images")
        if config.dataset_split != "train":
            raise ValueError(f"--dataset_split {config.dataset_split!r} applies to --dataset_name; a "
                             "--train_data_dir folder is one split of all its images")  # fmt: skip
        ds = datasets.load_dataset("imagefolder", data_files={"train": images}, split="train")
    else:
        ds = datasets.load_dataset(
            config.dataset_name, config.dataset_config_name, split=config.dataset_split
        )
    if config.max_train_samples is not None:
        ds = ds.select(range(min(config.max_train_samples, len(ds))))
    return ds


def sample_grid(pipeline: CodaMaskGitPipeline, config: MaskGitTrainingConfig, step: int) -> np.ndarray:
    """Generate ``num_validation_images`` images cycling over the classes -> ``(H, W, 3)`` uint8 grid."""
    num_classes = pipeline.transformer.config.num_classes
    labels = [i % num_classes for i in range(config.num_validation_images)]
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    images = pipeline(
        class_labels=labels,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=generator,
        output_type="pil",
    ).images
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    images = images + [images[0].copy() for _ in range(rows * cols - len(images))]
    grid = make_image_grid(images, rows=rows, cols=cols)
    out = Path(config.output_dir) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    grid.save(out / f"step-{step:07d}.png")
    return np.asarray(grid)


# ----------------------------------------------------------------------------------------- training
def train_maskgit(config: MaskGitTrainingConfig) -> Path:
    """Run the whole training; returns ``output_dir`` (holding ``prior/`` and ``pipeline/``)."""
    output_dir = Path(config.output_dir)
    report_to = None if config.report_to == "none" else config.report_to
    owns_process_group = owns_no_process_group_yet()
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.tokenizer, config.tokenizer_class).to(accelerator.device).eval()
    tokenizer.requires_grad_(False)
    cache_dir = config.token_cache_dir or str(output_dir / "token_cache")
    with accelerator.main_process_first():
        images = load_image_dataset(config)
        label_column = config.label_column
        token_ds = pretokenize_dataset(
            images, tokenizer, cache_dir, config.resolution, config.image_column, label_column,
            batch_size=config.tokenize_batch_size, device=accelerator.device,
        )  # fmt: skip
    if config.num_classes is not None:
        num_classes = config.num_classes
    elif label_column and isinstance(images.features.get(label_column), datasets.ClassLabel):
        num_classes = images.features[label_column].num_classes
    else:
        num_classes = int(max(token_ds[LABEL_COLUMN], default=0)) + 1
    if len(token_ds) and int(max(token_ds[LABEL_COLUMN])) >= num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the data has label {int(max(token_ds[LABEL_COLUMN]))}"
        )

    level_shapes = [list(s) for s in tokenizer.level_shapes(config.resolution, config.resolution)]
    prior = MaskGitTransformer(
        MaskGitConfig(
            level_shapes=level_shapes,
            codebook_size=int(tokenizer.codebook_size),
            num_classes=num_classes,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            hidden_dropout_prob=config.dropout,
            attention_dropout_prob=config.dropout,
        )
    )
    scheduler = MaskGitScheduler(mask_schedule=config.mask_schedule)
    ema = EMAModel(prior.parameters(), decay=config.ema_decay) if config.use_ema else None

    dataloader = accelerator.prepare(
        torch.utils.data.DataLoader(
            token_ds.with_format("torch"), batch_size=config.train_batch_size, shuffle=True, drop_last=False
        )
    )  # sharded across processes: len() is per process from here on
    optimizer = torch.optim.AdamW(
        prior.parameters(), lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
    )  # fmt: skip
    updates_per_epoch = math.ceil(len(dataloader) / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
    num_epochs = math.ceil(max_steps / updates_per_epoch)
    # The prepared LR scheduler steps once per process per update: count in process-steps.
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )  # fmt: skip
    prior, optimizer, lr_scheduler = accelerator.prepare(prior, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and report_to:
        accelerator.init_trackers("train_maskgit", config={k: str(v) for k, v in asdict(config).items()})

    global_step, first_epoch, skip_batches = 0, 0, 0
    if config.resume_from_checkpoint:
        path = (
            latest_checkpoint(output_dir)
            if config.resume_from_checkpoint == "latest"
            else Path(config.resume_from_checkpoint)
        )
        if path is None or not path.is_dir():
            logger.warning("no checkpoint %r found; starting a new training", config.resume_from_checkpoint)
        else:
            refuse_unsafe_pickles(path)
            accelerator.load_state(str(path))
            global_step = int(path.name[len(CHECKPOINT_PREFIX) :])
            first_epoch = global_step // updates_per_epoch
            skip_batches = (global_step % updates_per_epoch) * config.gradient_accumulation_steps
            logger.info(
                "resumed from %s at step %d (epoch %d, skipping %d batches)",
                path,
                global_step,
                first_epoch,
                skip_batches,
            )

    def build_pipeline() -> CodaMaskGitPipeline:
        model = accelerator.unwrap_model(prior)
        pipe = CodaMaskGitPipeline(tokenizer=tokenizer, transformer=model, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def with_ema_weights(fn):
        model = accelerator.unwrap_model(prior)
        if ema is not None:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        model.eval()
        try:
            return fn()
        finally:
            if ema is not None:
                ema.restore(model.parameters())
            model.train()

    prior.train()
    for epoch in range(first_epoch, num_epochs):
        loader = accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader
        skip_batches = 0
        for batch in loader:
            with accelerator.accumulate(prior):
                out = maskgit_loss(
                    prior,
                    scheduler,
                    batch[TOKEN_COLUMN].long(),
                    batch[LABEL_COLUMN].long(),
                    config.class_drop_prob,
                )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(prior.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(accelerator.unwrap_model(prior).parameters())
            if global_step % config.logging_steps == 0 or global_step == 1:
                logs = {
                    "loss": accelerator.gather(out.loss.detach()[None]).mean().item(),
                    "masked_accuracy": accelerator.gather(out.masked_accuracy[None]).mean().item(),
                    "lr": lr_scheduler.get_last_lr()[0],
                    "epoch": epoch,
                }
                accelerator.log(logs, step=global_step)
                if accelerator.is_main_process:
                    logger.info("step %d: %s", global_step, logs)
            if global_step % config.checkpointing_steps == 0:
                if accelerator.is_main_process:
                    _prune_checkpoints(output_dir, None if config.checkpoints_total_limit is None
                                       else config.checkpoints_total_limit - 1)  # fmt: skip
                accelerator.wait_for_everyone()
                accelerator.save_state(str(output_dir / f"{CHECKPOINT_PREFIX}{global_step}"))
            if global_step % config.validation_steps == 0 and accelerator.is_main_process:
                grid = with_ema_weights(lambda step=global_step: sample_grid(build_pipeline(), config, step))
                for tracker in accelerator.trackers:
                    if tracker.name == "tensorboard":
                        tracker.writer.add_image("samples", grid, global_step, dataformats="HWC")
            if global_step >= max_steps:
                break
        if global_step >= max_steps:
            break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:

        def _save():
            pipe = build_pipeline()
            pipe.transformer.save_pretrained(output_dir / "prior")
            pipe.save_pretrained(output_dir / "pipeline")
            # The settings next to the weights (read by coda_hf.hub model cards); never inside the model config.
            settings = json.dumps(asdict(config), indent=2, sort_keys=True)
            for folder in ("prior", "pipeline"):
                (output_dir / folder / TRAINING_CONFIG_NAME).write_text(settings)

        with_ema_weights(_save)
    accelerator.end_training()
    release_distributed(accelerator, owns_process_group)
    return output_dir


__all__ = [
    "MaskGitLossOutput",
    "MaskGitTrainingConfig",
    "drop_class_labels",
    "latest_checkpoint",
    "load_tokenizer",
    "maskgit_loss",
    "train_maskgit",
]
