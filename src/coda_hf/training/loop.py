"""The tokenizer trainer: the generator and discriminator steps of the shared skeleton (:mod:`.trainer`).

One optimiser update ("step") = ``gradient_accumulation_steps`` micro-batches. Per micro-batch:

1. generator step: ``model(images)`` -> ``ReconstructionLoss.generator_loss`` (pixel + perceptual +
   adaptive GAN + quantizer / KL terms); the discriminator is passed in unwrapped with its parameters
   frozen, so its gradients are untouched;
2. discriminator step (GAN on and past ``disc_start``): ``discriminator_loss`` on real images and
   the detached reconstructions, through the (DDP-wrapped) discriminator.

Then both optimisers clip (``max_grad_norm``) and step, schedules and EMA advance; non-finite losses
skip the update (:mod:`.trainer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..discriminators import build_discriminator
from .config import TrainingConfig
from .data import DataState, TrainBatches, build_transform
from .models import build_model, data_initialize, save_model
from .optim import build_adamw, build_ema, build_lr_scheduler, parameter_groups, trainable_parameters
from .trainer import NonFiniteLossError, Trainer, add_logs, all_finite, make_accelerator

logger = get_logger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        output_dir: where the model (``save_pretrained``), ``training_config.json`` and
            ``training_summary.json`` were written.
        global_step: optimiser updates done (skipped updates not counted).
        skipped_nonfinite_steps: updates skipped for a non-finite loss or gradient (this rank).
        skipped_images: unreadable images skipped, summed over processes.
        last_checkpoint: the newest checkpoint directory, if any.
        last_logs: the last logged scalars.
        is_main_process: whether this process is the main one (the one that saved the model).
    """

    output_dir: str
    global_step: int
    skipped_nonfinite_steps: int
    skipped_images: int
    last_checkpoint: str | None
    last_logs: dict[str, float] = field(default_factory=dict)
    is_main_process: bool = True


# --------------------------------------------------------------------------------------- helpers
def build_loss(config: TrainingConfig):
    from ..losses import ReconstructionLoss

    return ReconstructionLoss(
        l1_weight=config.l1_weight, l2_weight=config.l2_weight, perceptual_weight=config.perceptual_weight,
        perceptual_backend=config.perceptual_backend, perceptual_pretrained=config.perceptual_pretrained,
        lpips_weights=config.lpips_weights, gan_weight=config.gan_weight, gan_loss=config.gan_loss,
        adaptive_weight=config.adaptive_weight, disc_start=config.disc_start,
        kl_weight=config.kl_beta if config.model == "vae" else 0.0,
    )  # fmt: skip


def params_sha256(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (float32, name order): equal hashes = identical weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def reconstruction_grid(images: torch.Tensor, reconstructions: torch.Tensor, max_images: int = 8) -> np.ndarray:
    """``(H', W', 3)`` uint8: originals on the top row, reconstructions below; inputs (B, 3, H, W) in [-1, 1]."""
    n = min(max_images, images.shape[0])
    rows = [torch.cat(list(t[:n].detach().float().cpu().clamp(-1, 1)), dim=-1) for t in (images, reconstructions)]
    grid = torch.cat(rows, dim=-2)  # (3, 2H, nW)
    return ((grid + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _set_requires_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def push_model_to_hub(model_dir: str | Path, config: TrainingConfig) -> str:
    """Upload the trained model to ``config.hub_model_id`` with :func:`coda_hf.hub.push_to_hub`.

    Only the top-level files of ``model_dir`` go up (weights, ``config.json``, ``training_config.json``,
    ``training_summary.json``): checkpoints, logs and sample grids stay local.
    """
    import shutil
    import tempfile

    from ..hub import push_to_hub

    with tempfile.TemporaryDirectory(prefix="coda_hf_train_push_") as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        for f in Path(model_dir).iterdir():
            if f.is_file() and not f.name.startswith("."):  # not the run's lock file
                shutil.copy2(f, staged / f.name)
        return push_to_hub(str(staged), config.hub_model_id, private=config.hub_private, token=config.hub_token)


# --------------------------------------------------------------------------------------- training
class TokenizerTrainer(Trainer):
    """The tokenizer's steps of the :class:`~.trainer.Trainer` skeleton (see the module docstring)."""

    def __init__(self, config: TrainingConfig):
        super().__init__(config, config.output_dir, report_to=config.report_to, cpu=config.cpu)
        self.ids_file = None
        self.logs: dict[str, float] = {}

    # -- set-up
    def set_up(self) -> None:
        config, accelerator = self.config, self.accelerator
        model = build_model(config)
        model.train()
        # Built in this order (model, loss networks, discriminator): the random initialisations follow it.
        self.loss_fn = build_loss(config).to(accelerator.device)
        disc = build_discriminator(config.discriminator, **config.discriminator_kwargs) if config.gan_weight > 0 else None
        self.transform = build_transform(config)
        with accelerator.main_process_first():  # the main process builds the datasets cache, the others reuse it
            self.batches = TrainBatches(config, self.transform, rank=accelerator.process_index,
                                        world_size=accelerator.num_processes)  # fmt: skip
        self.total_steps = self._total_steps()
        if self.total_steps == 0:  # training-free: nothing to optimise, the model is measured and saved
            self.model = self.raw_model = model.to(accelerator.device)  # no DDP: it refuses a module without gradients
            self.opt_g = self.sched_g = self.disc_raw = self.last_layer = None
            self.gen_params = []
            return
        self._build_optimizers(model, disc)
        if disc is not None:
            self.model, self.opt_g, self.disc, self.opt_d = accelerator.prepare(model, self.opt_g, disc, self.opt_d)
            self.disc_raw = accelerator.unwrap_model(self.disc)
            self.disc_params = trainable_parameters(self.disc)
        else:
            self.model, self.opt_g = accelerator.prepare(model, self.opt_g)
            self.disc_raw = None
        self.raw_model = accelerator.unwrap_model(self.model)
        self.gen_params = trainable_parameters(self.model)  # the prepared model's (same tensors under DDP)
        if config.use_ema:
            self.ema = build_ema(self.gen_params, config.ema_decay, config.ema_start_step)
            self.ema.to(accelerator.device)
        self.last_layer = None
        if disc is not None and config.adaptive_weight:
            self.last_layer = self.raw_model.get_last_layer()
            if not self.last_layer.requires_grad:
                # CODA: the base VAE (its output conv included) is frozen. The adaptive weight only needs
                # gradients AT that layer, so it joins the graph but never the optimiser (gen_params above).
                logger.info("the decoder's last layer is frozen: it tracks gradients only to measure the adaptive GAN weight")
                self.last_layer.requires_grad_(True)
                self.measured_only = [self.last_layer]

    def _total_steps(self) -> int:
        if self.config.max_train_steps is not None:
            return self.config.max_train_steps
        per_epoch = self.batches.steps_per_epoch(self.accelerator.num_processes)
        if per_epoch is None:
            raise ValueError("the dataset size is unknown (a stream without split sizes): pass --max_train_steps")
        return per_epoch * self.config.num_train_epochs

    def _build_optimizers(self, model: torch.nn.Module, disc: torch.nn.Module | None) -> None:
        config = self.config
        betas = (config.adam_beta1, config.adam_beta2)
        gen_groups = parameter_groups(model, config.learning_rate, config.quantizer_learning_rate)
        frozen = (f"--model {config.model} with --quantizer {config.quantizer.get('name')!r}: no parameter is trained by "
                  "gradient. A frozen VAE without LoRA (rank 0) and a codebook that learns without gradients "
                  "(use_ema=True) leave nothing to optimise: give the VAE LoRA adapters (model_kwargs lora rank > 0) "
                  "or use a gradient-trained codebook (use_ema=False)")  # fmt: skip
        self.opt_g = build_adamw(gen_groups, config.learning_rate, betas, config.weight_decay, config.adam_epsilon,
                                 hint=frozen)  # fmt: skip
        self.sched_g = build_lr_scheduler(config.lr_scheduler, self.opt_g, config.lr_warmup_steps, self.total_steps)
        if disc is not None:
            self.opt_d = build_adamw(trainable_parameters(disc), config.disc_learning_rate or config.learning_rate, betas,
                                     config.disc_weight_decay, config.adam_epsilon, name="discriminator")  # fmt: skip
            # The discriminator's schedule spans its active updates (from disc_start on).
            self.sched_d = build_lr_scheduler(config.lr_scheduler, self.opt_d, config.lr_warmup_steps,
                                              max(1, self.total_steps - config.disc_start))  # fmt: skip

    def after_resume(self) -> None:
        config, accelerator = self.config, self.accelerator
        if config.data_init_images > 0 and getattr(getattr(self.raw_model, "quantizer", None), "needs_data_init", False):
            # a fresh stream (same seed: the run's first images), so the training data position is untouched
            init_batches = TrainBatches(config, self.transform, rank=accelerator.process_index,
                                        world_size=accelerator.num_processes)  # fmt: skip
            used = data_initialize(self.raw_model, init_batches, config.data_init_images, accelerator.device, config.seed)
            logger.info("quantizer codebook initialised from %d training images per process", used)
        if self.total_steps == 0 and getattr(getattr(self.raw_model, "quantizer", None), "needs_data_init", False):
            raise ValueError("max_train_steps 0 with a data-dependent quantizer needs data_init_images > 0: without a "
                             "training batch nothing else measures it")  # fmt: skip
        hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        self.init_trackers(config.tracker_project_name, hparams)
        if config.log_sample_ids:
            ids_dir = self.output_dir / "sample_ids"
            ids_dir.mkdir(parents=True, exist_ok=True)
            self.ids_file = open(ids_dir / f"rank{accelerator.process_index}.txt", "a")  # noqa: SIM115

    # -- one update
    def micro_batches(self):
        for micro in range(self.accumulation):
            batch = next(self.batches)
            if self.ids_file is not None:
                self.ids_file.write("".join(f"{i}\n" for i in batch["id"]))
                self.ids_file.flush()
            yield batch, micro == self.accumulation - 1

    def generator_step(self, batch, logs):
        """The discriminator is a frozen function of the reconstruction here: its gradients stay untouched."""
        accelerator = self.accelerator
        self.images = batch["pixel_values"].to(accelerator.device)  # (B, 3, H, W) in [-1, 1]
        _set_requires_grad(self.disc_params, False)
        try:
            with accelerator.autocast():
                self.out = self.model(self.images)
                gen = self.loss_fn.generator_loss(
                    self.images, self.out.sample, step=self.global_step, last_layer=self.last_layer,
                    quantizer_losses=self.out.losses, posterior=getattr(self.out, "posterior", None),
                    discriminator=self.disc_raw,
                )  # fmt: skip
            if not self.check_finite(gen.total):
                return None
            self.backward(gen.total)
        finally:
            _set_requires_grad(self.disc_params, True)
        add_logs(logs, {f"loss/{k}": v for k, v in gen.to_dict().items()}, self.accumulation)
        return gen

    def discriminator_step(self, batch, gen, logs) -> bool:
        """Real images against the detached reconstructions, through the (DDP-wrapped) discriminator."""
        if self.disc is None or gen.disc_factor <= 0:
            return True
        with self.accelerator.autocast():
            d_out = self.loss_fn.discriminator_loss(self.images, self.out.sample.detach(), step=self.global_step,
                                                    discriminator=self.disc)  # fmt: skip
        if not self.check_finite(d_out.total):
            return False
        self.backward(d_out.total)
        add_logs(logs, d_out.to_dict(), self.accumulation)
        return True

    # -- logging, images, checkpoints
    def log_and_checkpoint(self, step_logs, progress) -> None:
        config, accelerator, step = self.config, self.accelerator, self.global_step
        if step % config.logging_steps == 0 or step == self.total_steps:
            logs = dict(step_logs)
            logs.update({f"stats/{k}": float(v) for k, v in (self.out.stats or {}).items() if torch.as_tensor(v).numel() == 1})
            logs.update({"lr": self.sched_g.get_last_lr()[0], "grad_norm": float(self.grad_norm),
                         "data/skipped_images": self.batches.state.skipped_images,
                         "data/epoch": self.batches.state.epoch, "skipped_nonfinite_steps": self.skipped_nonfinite})
            progress.set_postfix(loss=f"{logs.get('loss/total', float('nan')):.4f}")
            accelerator.log(logs, step=step)
            self.logs = logs
        if config.image_logging_steps and step % config.image_logging_steps == 0 and accelerator.is_main_process:
            _log_images(accelerator, config, self.images, self.out.sample, step)
        if step % config.checkpointing_steps == 0 or step == self.total_steps:
            self.save_checkpoint()

    def data_state(self) -> dict[str, Any]:
        return self.batches.state.to_dict()

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.batches.load_state(DataState.from_dict(state))

    def close(self) -> None:
        if self.ids_file is not None:
            self.ids_file.close()
            self.ids_file = None

    # -- final model
    def finalise(self) -> TrainResult:
        accelerator = self.accelerator
        for tensor in self.measured_only:
            tensor.requires_grad_(False)
        accelerator.wait_for_everyone()
        state = self.batches.state
        summaries = gather_object([{
            "rank": accelerator.process_index, "params_sha256": params_sha256(self.raw_model),
            "skipped_images": state.skipped_images, "skipped_nonfinite_steps": self.skipped_nonfinite, "epoch": state.epoch,
        }])  # fmt: skip
        if accelerator.is_main_process:
            self._save_final(summaries)
        return TrainResult(
            output_dir=str(self.output_dir), global_step=self.global_step, skipped_nonfinite_steps=self.skipped_nonfinite,
            skipped_images=sum(s["skipped_images"] for s in summaries),
            last_checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None, last_logs=self.logs,
            is_main_process=accelerator.is_main_process,
        )  # fmt: skip

    def _save_final(self, summaries: list[dict[str, Any]]) -> None:
        """The model (EMA weights when kept), its settings, the run summary, and the Hub upload."""
        config, output_dir = self.config, self.output_dir
        if self.ema is not None:
            self.ema.store(self.gen_params)
            self.ema.copy_to(self.gen_params)
        save_model(self.raw_model, output_dir)
        if self.ema is not None:
            self.ema.restore(self.gen_params)
        config.save(output_dir)
        summary = {"global_step": self.global_step, "num_processes": self.accelerator.num_processes,
                   "skipped_images": sum(s["skipped_images"] for s in summaries), "ema": self.ema is not None,
                   "ranks": summaries, "last_logs": self.logs}  # fmt: skip
        (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if config.push_to_hub:
            url = push_model_to_hub(output_dir, config)
            logger.info("pushed %s to %s", output_dir, url)


def train(config: TrainingConfig) -> TrainResult:
    """Run the training described by ``config`` (single or multi-process, launched by ``accelerate``)."""
    return TokenizerTrainer(config).run()


def _log_images(accelerator: Accelerator, config: TrainingConfig, images, reconstructions, step: int) -> None:
    """Reconstruction grid to every image-capable tracker and to ``output_dir/samples/step-<n>.png``."""
    from PIL import Image

    grid = reconstruction_grid(images, reconstructions)
    samples = Path(config.output_dir) / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(samples / f"step-{step:07d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("reconstructions", grid, global_step=step, dataformats="HWC")
        elif hasattr(tracker, "log_images"):
            with contextlib.suppress(Exception):
                tracker.log_images({"reconstructions": [grid]}, step=step)


__all__ = ["NonFiniteLossError", "TokenizerTrainer", "TrainResult", "all_finite", "make_accelerator", "train"]
