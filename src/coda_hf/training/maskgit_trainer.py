"""Training of the MaskGIT prior on pre-tokenized images (``examples/train_maskgit.py`` wires this up).

Masked-token cross-entropy (loss only on masked positions, mask ratio from
:class:`~coda_hf.maskgit.MaskGitScheduler`), class dropout to the null class for classifier-free guidance,
AdamW + cosine LR with warm-up, EMA of the weights, sample grids in tensorboard, and a final
``save_pretrained`` of the prior and of the whole :class:`CodaMaskGitPipeline`. The loop, accumulation,
atomic checkpoints and resumption are the shared skeleton's (:mod:`.trainer`).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.data_loader import skip_first_batches
from accelerate.logging import get_logger
from diffusers.utils import make_image_grid

from ..maskgit import MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from ..metrics.eval_data import load_image_dataset
from ..models.loading import load_tokenizer
from ..pipelines.maskgit import CodaMaskGitPipeline
from ..settings import Settings, default_of, option
from .checkpointing import list_checkpoints
from .maskgit_data import LABEL_COLUMN, TOKEN_COLUMN, pretokenize_dataset
from .optim import build_adamw, build_ema, build_lr_scheduler, trainable_parameters
from .trainer import Trainer, all_finite

logger = get_logger(__name__)

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
def _prior(name: str):
    return default_of(MaskGitConfig, name)


@dataclass
class MaskGitTrainingConfig(Settings):
    """Every setting of ``examples/train_maskgit.py`` (command-line flags of the same names)."""

    tokenizer: str = option(help="saved coda_hf tokenizer directory (CodaVQModel, VQGANModel, ...)")
    output_dir: str = option(help="checkpoints, logs, samples, prior/ and pipeline/ go here (one live trainer at a time)")
    tokenizer_class: str | None = option(None, "'module:Class' of the tokenizer when its config does not name a coda_hf class")
    # data
    train_data_dir: str | None = option(None, "local image folder (labels from subfolders) or parquet / webdataset shards")
    dataset_name: str | None = option(None, "Hub dataset name (instead of train_data_dir)")
    dataset_config_name: str | None = option(None, "config of dataset_name")
    dataset_split: str = option("train", "split to train on")
    image_column: str = option("image", "image column")
    label_column: str | None = option("label", "class column; 'none' trains unconditionally (one class)")
    resolution: int = option(256, "training image size (square)")
    max_train_samples: int | None = option(None, "use only the first N images")
    token_cache_dir: str | None = option(None, "where the token dataset is cached (default OUTPUT_DIR/token_cache)")
    tokenize_batch_size: int = option(32, "batch size of pre-tokenization")
    # prior architecture (-> MaskGitConfig; defaults: MaskGitConfig's)
    hidden_size: int = option(_prior("hidden_size"), "prior width")
    num_hidden_layers: int = option(_prior("num_hidden_layers"), "prior depth")
    num_attention_heads: int = option(_prior("num_attention_heads"), "prior attention heads")
    intermediate_size: int | None = option(_prior("intermediate_size"), "prior MLP width (none: 4 x hidden_size)")
    dropout: float = option(_prior("hidden_dropout_prob"), "prior hidden and attention dropout")
    num_classes: int | None = option(None, "number of classes (default: from the data)")
    # objective and sampling
    mask_schedule: str = option(default_of(MaskGitScheduler, "mask_schedule"), "cosine | linear | square | arccos")
    class_drop_prob: float = option(0.1, "probability of training on the null class")
    num_inference_steps: int = option(8, "unmasking steps of the sample grids")
    guidance_scale: float = option(2.0, "classifier-free guidance of the sample grids")
    # optimisation
    train_batch_size: int = option(32, "batch size per process")
    num_train_epochs: int = option(10, "epochs (ignored when max_train_steps is set)")
    max_train_steps: int | None = option(None, "total optimizer steps")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(4e-4, "peak learning rate")
    lr_warmup_steps: int = option(500, "linear warm-up steps before the cosine decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.96, "AdamW beta2")
    weight_decay: float = option(0.045, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    use_ema: bool = option(True, "keep an EMA of the weights (used for samples and saving)")
    ema_decay: float = option(default_of(build_ema, "decay"), "EMA decay")
    mixed_precision: str = option("no", "no | fp16 | bf16")
    seed: int = option(0, "random seed")
    max_nonfinite_steps: int = option(10, "this many non-finite losses in a row stop the run")
    # bookkeeping
    checkpointing_steps: int = option(500, "save a resumable checkpoint every N steps")
    checkpoints_total_limit: int | None = option(None, "keep at most N checkpoints")
    resume_from_checkpoint: str | None = option(None, "a checkpoint directory, or 'latest' in output_dir")
    validation_steps: int = option(1000, "log a sample grid every N steps")
    num_validation_images: int = option(8, "images per sample grid")
    report_to: str = option("tensorboard", "accelerate tracker ('none' to disable)")
    logging_steps: int = option(10, "log loss / lr every N steps")

    def __post_init__(self):
        if (self.train_data_dir is None) == (self.dataset_name is None):
            raise ValueError("give exactly one of --train_data_dir and --dataset_name")
        if self.label_column is not None and self.label_column.lower() == "none":
            self.label_column = None
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no | fp16 | bf16; got {self.mixed_precision!r}")
        for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps",
                     "max_nonfinite_steps", "logging_steps"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------- helpers
def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder of ``output_dir``, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def training_images(config: MaskGitTrainingConfig) -> datasets.Dataset:
    """The map-style image dataset to pre-tokenise (:func:`coda_hf.metrics.eval_data.load_image_dataset`: a
    folder is every image in it, class labels from subfolder names), its first ``max_train_samples``."""
    ds = load_image_dataset(
        config.train_data_dir, config.dataset_name, config.dataset_split, streaming=False,
        config_name=config.dataset_config_name, option="--train_data_dir",
    )  # fmt: skip
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
def _encode_state(state: torch.Tensor | None) -> str | None:
    return None if state is None else base64.b64encode(state.numpy().tobytes()).decode()


def _decode_state(text: str | None) -> torch.Tensor | None:
    return None if text is None else torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


class MaskGitTrainer(Trainer):
    """The prior's steps of the :class:`~.trainer.Trainer` skeleton: a generator step only (masked-token
    cross-entropy), epochs over a shuffled token dataset.

    Accumulation groups never span an epoch boundary: an epoch whose batch count is not a multiple of
    ``gradient_accumulation_steps`` ends with a shorter update. Resumption is exact: a checkpoint records the
    epoch, the batches read in it and the random state the epoch's shuffle was drawn from.
    """

    progress_name = "train_maskgit"

    def __init__(self, config: MaskGitTrainingConfig):
        super().__init__(config, config.output_dir, report_to=config.report_to)
        self.epoch, self.batch_in_epoch, self._iter = 0, 0, None
        self._epoch_rng: dict[str, str | None] | None = None  # random state the current epoch's order came from
        self._resumed_epoch = False

    # -- set-up
    def set_up(self) -> None:
        config, accelerator = self.config, self.accelerator
        self.tokenizer = load_tokenizer(config.tokenizer, config.tokenizer_class).to(accelerator.device).eval()
        self.tokenizer.requires_grad_(False)
        cache_dir = config.token_cache_dir or str(self.output_dir / "token_cache")
        with accelerator.main_process_first():
            images = training_images(config)
            token_ds = pretokenize_dataset(
                images, self.tokenizer, cache_dir, config.resolution, config.image_column, config.label_column,
                batch_size=config.tokenize_batch_size, device=accelerator.device,
            )  # fmt: skip
        prior = MaskGitTransformer(self._prior_config(images, token_ds))
        self.scheduler = MaskGitScheduler(mask_schedule=config.mask_schedule)
        self.ema = build_ema(list(prior.parameters()), config.ema_decay) if config.use_ema else None
        self.dataloader = accelerator.prepare(
            torch.utils.data.DataLoader(token_ds.with_format("torch"), batch_size=config.train_batch_size, shuffle=True,
                                        drop_last=False)  # fmt: skip
        )  # sharded across processes: len() is per process from here on
        opt = build_adamw(list(prior.parameters()), config.learning_rate, (config.adam_beta1, config.adam_beta2),
                          config.weight_decay, name="prior")  # fmt: skip
        self.epoch_len = len(self.dataloader)
        updates_per_epoch = math.ceil(self.epoch_len / self.accumulation)
        self.total_steps = config.max_train_steps or config.num_train_epochs * updates_per_epoch
        self.sched_g = build_lr_scheduler("cosine", opt, config.lr_warmup_steps, self.total_steps)
        self.model, self.opt_g = accelerator.prepare(prior, opt)
        self.gen_params = trainable_parameters(self.model)
        if self.ema is not None:
            self.ema.to(accelerator.device)

    def _prior_config(self, images: datasets.Dataset, token_ds: datasets.Dataset) -> MaskGitConfig:
        config = self.config
        label_column = config.label_column
        if config.num_classes is not None:
            num_classes = config.num_classes
        elif label_column and isinstance(images.features.get(label_column), datasets.ClassLabel):
            num_classes = images.features[label_column].num_classes
        else:
            num_classes = int(max(token_ds[LABEL_COLUMN], default=0)) + 1
        if len(token_ds) and int(max(token_ds[LABEL_COLUMN])) >= num_classes:
            raise ValueError(f"num_classes={num_classes} but the data has label {int(max(token_ds[LABEL_COLUMN]))}")
        return MaskGitConfig(
            level_shapes=[list(s) for s in self.tokenizer.level_shapes(config.resolution, config.resolution)],
            codebook_size=int(self.tokenizer.codebook_size), num_classes=num_classes, hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size, hidden_dropout_prob=config.dropout, attention_dropout_prob=config.dropout,
        )  # fmt: skip

    def after_resume(self) -> None:
        self.init_trackers("train_maskgit", {k: str(v) for k, v in self.config.to_dict().items()})
        self.model.train()

    # -- data: epochs of the shuffled token dataset
    def micro_batches(self):
        for micro in range(self.accumulation):
            if self.batch_in_epoch == self.epoch_len:
                self._end_epoch()
            batch = self._next_batch()
            last = micro == self.accumulation - 1 or self.batch_in_epoch == self.epoch_len
            yield batch, last
            if last:
                return

    def _rng_states(self) -> dict[str, str | None]:
        generator = getattr(self.dataloader.get_sampler(), "generator", None)
        return {"torch": _encode_state(torch.get_rng_state()),
                "sampler": _encode_state(generator.get_state() if generator is not None else None)}  # fmt: skip

    def _next_batch(self):
        if self._iter is not None:
            self.batch_in_epoch += 1
            return next(self._iter)
        # A new epoch: its order is drawn (from the global or the sampler's generator) at the first batch.
        if not self._resumed_epoch:
            self._epoch_rng = self._rng_states()
            self._iter = iter(self.dataloader)
            self.batch_in_epoch += 1
            return next(self._iter)
        # Resumed mid-epoch: draw the epoch's order from the random state it was drawn from, skip the batches
        # already trained on, and go on with the random state of the checkpoint.
        self._resumed_epoch = False
        now = torch.get_rng_state()
        torch.set_rng_state(_decode_state(self._epoch_rng["torch"]))
        generator = getattr(self.dataloader.get_sampler(), "generator", None)
        if generator is not None and self._epoch_rng["sampler"] is not None:
            generator.set_state(_decode_state(self._epoch_rng["sampler"]))
        loader = skip_first_batches(self.dataloader, self.batch_in_epoch) if self.batch_in_epoch else self.dataloader
        self._iter = iter(loader)
        batch = next(self._iter)
        torch.set_rng_state(now)
        self.batch_in_epoch += 1
        return batch

    def _end_epoch(self) -> None:
        if self._iter is not None and next(self._iter, None) is not None:
            raise RuntimeError(f"the data loader yielded more than its {self.epoch_len} batches per epoch")
        self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None

    def data_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_in_epoch": self.batch_in_epoch, "epoch_rng": self._epoch_rng}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch_in_epoch, self._epoch_rng = state["epoch"], state["batches_in_epoch"], state["epoch_rng"]
        self._resumed_epoch = self.batch_in_epoch < self.epoch_len
        if not self._resumed_epoch:  # the checkpoint ends an epoch: the next one starts afresh
            self._end_epoch()
        logger.info("resumed from %s at step %d (epoch %d, skipping %d batches)", self.last_checkpoint,
                    self.global_step, self.epoch, self.batch_in_epoch)  # fmt: skip

    # -- one update
    def generator_step(self, batch, logs):
        out = maskgit_loss(self.model, self.scheduler, batch[TOKEN_COLUMN].long(), batch[LABEL_COLUMN].long(),
                           self.config.class_drop_prob)  # fmt: skip
        if not all_finite(self.accelerator, out.loss):
            return None
        self.backward(out.loss)
        self.out = out
        return out

    # -- logging, checkpoints, samples
    def log_and_checkpoint(self, step_logs, progress) -> None:
        config, accelerator, step = self.config, self.accelerator, self.global_step
        if step % config.logging_steps == 0 or step == 1:
            logs = {
                "loss": accelerator.gather(self.out.loss.detach()[None]).mean().item(),
                "masked_accuracy": accelerator.gather(self.out.masked_accuracy[None]).mean().item(),
                "lr": self.sched_g.get_last_lr()[0], "epoch": self.epoch,
            }  # fmt: skip
            accelerator.log(logs, step=step)
            logger.info("step %d: %s", step, logs)
        if step % config.checkpointing_steps == 0:
            self.save_checkpoint()
        if step % config.validation_steps == 0 and accelerator.is_main_process:
            grid = self.with_ema_weights(lambda: sample_grid(self.build_pipeline(), config, step))
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_image("samples", grid, step, dataformats="HWC")

    def build_pipeline(self) -> CodaMaskGitPipeline:
        model = self.accelerator.unwrap_model(self.model)
        pipe = CodaMaskGitPipeline(tokenizer=self.tokenizer, transformer=model, scheduler=self.scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def with_ema_weights(self, fn):
        """``fn()`` with the EMA weights in the prior, in eval mode; the training weights come back after."""
        model = self.accelerator.unwrap_model(self.model)
        if self.ema is not None:
            self.ema.store(model.parameters())
            self.ema.copy_to(model.parameters())
        model.eval()
        try:
            return fn()
        finally:
            if self.ema is not None:
                self.ema.restore(model.parameters())
            model.train()

    # -- final models
    def finalise(self) -> Path:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.with_ema_weights(self._save)
        return self.output_dir

    def _save(self) -> None:
        pipe = self.build_pipeline()
        pipe.transformer.save_pretrained(self.output_dir / "prior")
        pipe.save_pretrained(self.output_dir / "pipeline")
        # The settings next to the weights (read by coda_hf.hub model cards); never inside the model config.
        for folder in ("prior", "pipeline"):
            self.config.save(self.output_dir / folder, stem=TRAINING_CONFIG_NAME.removesuffix(".json"), yaml_too=False)


def train_maskgit(config: MaskGitTrainingConfig) -> Path:
    """Run the whole training; returns ``output_dir`` (holding ``prior/`` and ``pipeline/``)."""
    return MaskGitTrainer(config).run()

__all__ = [
    "MaskGitLossOutput",
    "MaskGitTrainer",
    "MaskGitTrainingConfig",
    "drop_class_labels",
    "latest_checkpoint",
    "load_tokenizer",
    "maskgit_loss",
    "train_maskgit",
]
