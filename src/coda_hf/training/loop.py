"""The tokenizer training loop: generator and discriminator steps with accelerate.

One optimiser update ("step") = ``gradient_accumulation_steps`` micro-batches. Per micro-batch:

1. generator phase: ``model(images)`` -> ``ReconstructionLoss.generator_loss`` (pixel + perceptual +
   adaptive GAN + quantizer / KL terms); the discriminator is called unwrapped with its parameters
   frozen, so its gradients are untouched;
2. discriminator phase (GAN on and past ``disc_start``): ``discriminator_loss`` on real images and
   the detached reconstructions, through the (DDP-wrapped) discriminator.

Then both optimisers clip (``max_grad_norm``) and step, schedules and EMA advance. A non-finite loss
(checked on every process at once) or gradient norm skips the update; ``max_nonfinite_steps`` of them
in a row stop the run with :class:`NonFiniteLossError`, leaving the last checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm

from ..distributed import owns_no_process_group_yet, release_distributed
from .checkpointing import load_checkpoint, remove_incomplete, resolve_checkpoint, save_checkpoint
from .config import TrainingConfig
from .data import DataState, TrainBatches, build_transform
from .models import build_model, data_initialize, save_model
from .optim import build_adamw, build_ema, build_lr_scheduler, parameter_groups, trainable_parameters

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row; the last checkpoint on disk is intact."""


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
def use_cpu(config: TrainingConfig) -> bool:
    return config.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def make_accelerator(config: TrainingConfig) -> Accelerator:
    trackers = [t.strip() for t in config.report_to.split(",") if t.strip() and t.strip() != "none"]
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=os.path.join(config.output_dir, "logs"))
    # Accumulation is done by the loop itself (two models, two optimisers): accelerate sees steps of 1.
    return Accelerator(
        cpu=use_cpu(config), mixed_precision=config.mixed_precision, log_with=trackers or None,
        project_config=project,
    )  # fmt: skip


def build_loss(config: TrainingConfig):
    from ..losses import ReconstructionLoss

    return ReconstructionLoss(
        l1_weight=config.l1_weight, l2_weight=config.l2_weight, perceptual_weight=config.perceptual_weight,
        perceptual_backend=config.perceptual_backend, perceptual_pretrained=config.perceptual_pretrained,
        lpips_weights=config.lpips_weights, gan_weight=config.gan_weight, gan_loss=config.gan_loss,
        adaptive_weight=config.adaptive_weight, disc_start=config.disc_start, discriminator=config.discriminator,
        discriminator_kwargs=config.discriminator_kwargs, kl_weight=config.kl_beta if config.model == "vae" else 0.0,
    )  # fmt: skip


def all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    """``True`` when ``value`` is finite on EVERY process (all processes take the same branch)."""
    bad = (~torch.isfinite(value.detach().float())).any().float().reshape(1)
    return float(accelerator.reduce(bad, reduction="sum").item()) == 0.0


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


@contextlib.contextmanager
def _swapped_attribute(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


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
            if f.is_file():
                shutil.copy2(f, staged / f.name)
        return push_to_hub(str(staged), config.hub_model_id, private=config.hub_private, token=config.hub_token)


# --------------------------------------------------------------------------------------- training
def train(config: TrainingConfig) -> TrainResult:
    """Run the training described by ``config`` (single or multi-process, launched by ``accelerate``)."""
    owns_process_group = owns_no_process_group_yet()
    accelerator = make_accelerator(config)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for removed in remove_incomplete(output_dir):
            logger.warning("removed the incomplete checkpoint save %s left by an interrupted run", removed)
        config.save(output_dir)
    accelerator.wait_for_everyone()
    set_seed(config.seed)  # same initial weights on every process

    model = build_model(config)
    model.train()
    loss_fn = build_loss(config).to(accelerator.device)
    disc = loss_fn.discriminator
    transform = build_transform(config)
    with accelerator.main_process_first():  # the main process builds the datasets cache, the others reuse it
        batches = TrainBatches(config, transform, rank=accelerator.process_index, world_size=accelerator.num_processes)

    total_steps = config.max_train_steps
    if total_steps is None:
        per_epoch = batches.steps_per_epoch(accelerator.num_processes)
        if per_epoch is None:
            raise ValueError("the dataset size is unknown (a stream without split sizes): pass --max_train_steps")
        total_steps = per_epoch * config.num_train_epochs

    betas = (config.adam_beta1, config.adam_beta2)
    gen_groups = parameter_groups(model, config.learning_rate, config.quantizer_learning_rate)
    frozen = (f"--model {config.model} with --quantizer {config.quantizer.get('name')!r}: no parameter is trained by "
              "gradient. A frozen VAE without LoRA (rank 0) and a codebook that learns without gradients "
              "(use_ema=True) leave nothing to optimise: give the VAE LoRA adapters (model_kwargs lora rank > 0) "
              "or use a gradient-trained codebook (use_ema=False)")  # fmt: skip
    opt_g = build_adamw(gen_groups, config.learning_rate, betas, config.weight_decay, config.adam_epsilon, hint=frozen)
    sched_g = build_lr_scheduler(config.lr_scheduler, opt_g, config.lr_warmup_steps, total_steps)
    disc_params: list[torch.nn.Parameter] = []
    opt_d = sched_d = None
    if disc is not None:
        disc_params = trainable_parameters(disc)
        opt_d = build_adamw(disc_params, config.disc_learning_rate or config.learning_rate, betas,
                            config.disc_weight_decay, config.adam_epsilon, name="discriminator")
        # The discriminator's schedule spans its active updates (from disc_start on).
        sched_d = build_lr_scheduler(config.lr_scheduler, opt_d, config.lr_warmup_steps,
                                     max(1, total_steps - config.disc_start))

    if disc is not None:
        model, opt_g, disc_wrapped, opt_d = accelerator.prepare(model, opt_g, disc, opt_d)
    else:
        model, opt_g = accelerator.prepare(model, opt_g)
        disc_wrapped = None
    raw_model = accelerator.unwrap_model(model)
    gen_params = trainable_parameters(model)  # the prepared model's (same tensors under DDP)
    if disc_wrapped is not None:
        disc_params = trainable_parameters(disc_wrapped)
    # Schedules step once per update on every process: registered, not prepared (prepare would step
    # them num_processes times per update).
    accelerator.register_for_checkpointing(sched_g)
    if sched_d is not None:
        accelerator.register_for_checkpointing(sched_d)
    ema = None
    if config.use_ema:
        ema = build_ema(gen_params, config.ema_decay, config.ema_start_step)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    last_layer = frozen_last_layer = None
    if disc is not None and config.adaptive_weight:
        last_layer = raw_model.get_last_layer()
        if not last_layer.requires_grad:
            # CODA: the base VAE (its output conv included) is frozen. The adaptive weight only needs
            # gradients AT that layer, so it joins the graph but never the optimiser (gen_params above).
            logger.info("the decoder's last layer is frozen: it tracks gradients only to measure the adaptive GAN weight")
            last_layer.requires_grad_(True)
            frozen_last_layer = last_layer

    # ---- resume -------------------------------------------------------------------------------
    global_step, attempts, skipped_nonfinite = 0, 0, 0
    last_checkpoint = resolve_checkpoint(output_dir, config.resume_from_checkpoint)
    if last_checkpoint is not None:
        saved = load_checkpoint(accelerator, last_checkpoint)
        global_step = int(saved["global_step"])
        attempts = int(saved.get("attempts", global_step))
        skipped_nonfinite = int(saved.get("skipped_nonfinite_steps", 0))
        batches.load_state(DataState.from_dict(saved["data"]))

    if config.data_init_images > 0 and getattr(getattr(raw_model, "quantizer", None), "needs_data_init", False):
        # a fresh stream (same seed: the run's first images), so the training data position is untouched
        init_batches = TrainBatches(config, transform, rank=accelerator.process_index,
                                    world_size=accelerator.num_processes)  # fmt: skip
        used = data_initialize(raw_model, init_batches, config.data_init_images, accelerator.device, config.seed)
        logger.info("quantizer codebook initialised from %d training images per process", used)

    if config.report_to != "none":
        hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(config.tracker_project_name, config=hparams)
    ids_file = None
    if config.log_sample_ids:
        ids_dir = output_dir / "sample_ids"
        ids_dir.mkdir(parents=True, exist_ok=True)
        ids_file = open(ids_dir / f"rank{accelerator.process_index}.txt", "a")  # noqa: SIM115

    def rank_state() -> dict[str, Any]:
        return {
            "global_step": global_step, "attempts": attempts, "skipped_nonfinite_steps": skipped_nonfinite,
            "num_processes": accelerator.num_processes, "data": batches.state.to_dict(),
        }  # fmt: skip

    progress = tqdm(total=total_steps, initial=global_step, desc="train", disable=not accelerator.is_local_main_process)
    accum = config.gradient_accumulation_steps
    consecutive_bad = 0
    logs: dict[str, float] = {}
    try:
        while global_step < total_steps:
            attempts += 1
            finite = True
            step_logs: dict[str, float] = {}
            images = out = None
            for micro in range(accum):
                batch = next(batches)
                if ids_file is not None:
                    ids_file.write("".join(f"{i}\n" for i in batch["id"]))
                    ids_file.flush()
                if not finite:
                    continue  # the update is skipped anyway: only keep the data position moving
                images = batch["pixel_values"].to(accelerator.device)  # (B, 3, H, W) in [-1, 1]
                sync = micro == accum - 1
                with contextlib.ExitStack() as stack:
                    if not sync:  # accumulate locally; gradients are all-reduced on the last micro-batch
                        stack.enter_context(accelerator.no_sync(model))
                        if disc_wrapped is not None:
                            stack.enter_context(accelerator.no_sync(disc_wrapped))
                    # -- generator phase: the discriminator is a frozen function of the reconstruction
                    _set_requires_grad(disc_params, False)
                    with accelerator.autocast():
                        out = model(images)
                        gen = loss_fn.generator_loss(
                            images, out.sample, step=global_step, last_layer=last_layer,
                            quantizer_losses=out.losses, posterior=getattr(out, "posterior", None),
                        )  # fmt: skip
                    total = gen.total
                    if attempts in config.inject_nonfinite_at:
                        total = total * float("nan")  # test hook
                    if not all_finite(accelerator, total):
                        finite = False
                        continue
                    accelerator.backward(total / accum)
                    _set_requires_grad(disc_params, True)
                    for k, v in gen.to_dict().items():
                        step_logs[f"loss/{k}"] = step_logs.get(f"loss/{k}", 0.0) + v / accum
                    # -- discriminator phase
                    if disc_wrapped is not None and gen.disc_factor > 0:
                        with _swapped_attribute(loss_fn, "discriminator", disc_wrapped), accelerator.autocast():
                            d_out = loss_fn.discriminator_loss(images, out.sample.detach(), step=global_step)
                        if not all_finite(accelerator, d_out.total):
                            finite = False
                            continue
                        accelerator.backward(d_out.total / accum)
                        for k, v in d_out.to_dict().items():
                            step_logs[k] = step_logs.get(k, 0.0) + v / accum
            _set_requires_grad(disc_params, True)

            grad_norm = None
            if finite:
                grad_norm = accelerator.clip_grad_norm_(gen_params, config.max_grad_norm)
                if accelerator.scaler is None:
                    finite = all_finite(accelerator, torch.as_tensor(grad_norm))
                # fp16: inf gradients are the GradScaler's business (it skips the step and lowers the scale).
            if not finite:
                if frozen_last_layer is not None:
                    frozen_last_layer.grad = None
                opt_g.zero_grad(set_to_none=True)
                if opt_d is not None:
                    opt_d.zero_grad(set_to_none=True)
                skipped_nonfinite += 1
                consecutive_bad += 1
                logger.warning("non-finite loss or gradient at update attempt %d (step %d): update skipped (%d in a row)",
                               attempts, global_step, consecutive_bad)
                if consecutive_bad >= config.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{consecutive_bad} non-finite losses/gradients in a row (max_nonfinite_steps="
                        f"{config.max_nonfinite_steps}) at step {global_step}: stopping. The last checkpoint "
                        f"{last_checkpoint or '(none saved yet)'} is intact; lower the learning rate or check the data, "
                        "then resume with --resume_from_checkpoint latest"
                    )
                continue
            consecutive_bad = 0
            if frozen_last_layer is not None:
                frozen_last_layer.grad = None  # measured, never trained
            opt_g.step()
            sched_g.step()
            opt_g.zero_grad(set_to_none=True)
            if opt_d is not None:
                if any(p.grad is not None for p in disc_params):
                    accelerator.clip_grad_norm_(disc_params, config.max_grad_norm)
                    opt_d.step()
                    sched_d.step()
                opt_d.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(gen_params)
            global_step += 1
            progress.update(1)

            # ---- logging, images, checkpoints
            if global_step % config.logging_steps == 0 or global_step == total_steps:
                logs = dict(step_logs)
                logs.update({f"stats/{k}": float(v) for k, v in (out.stats or {}).items() if torch.as_tensor(v).numel() == 1})
                logs.update({"lr": sched_g.get_last_lr()[0], "grad_norm": float(grad_norm),
                             "data/skipped_images": batches.state.skipped_images,
                             "data/epoch": batches.state.epoch, "skipped_nonfinite_steps": skipped_nonfinite})
                progress.set_postfix(loss=f"{logs.get('loss/total', float('nan')):.4f}")
                accelerator.log(logs, step=global_step)
            if config.image_logging_steps and global_step % config.image_logging_steps == 0 and accelerator.is_main_process:
                _log_images(accelerator, config, images, out.sample, global_step)
            if global_step % config.checkpointing_steps == 0 or global_step == total_steps:
                last_checkpoint = save_checkpoint(accelerator, output_dir, global_step, rank_state(),
                                                  config.checkpoints_total_limit)
    finally:
        progress.close()
        if ids_file is not None:
            ids_file.close()

    # ---- final model ----------------------------------------------------------------------------
    if frozen_last_layer is not None:
        frozen_last_layer.requires_grad_(False)
    accelerator.wait_for_everyone()
    summaries = gather_object([{
        "rank": accelerator.process_index, "params_sha256": params_sha256(raw_model),
        "skipped_images": batches.state.skipped_images, "skipped_nonfinite_steps": skipped_nonfinite,
        "epoch": batches.state.epoch,
    }])  # fmt: skip
    if accelerator.is_main_process:
        if ema is not None:
            ema.store(gen_params)
            ema.copy_to(gen_params)
        save_model(raw_model, output_dir)
        if ema is not None:
            ema.restore(gen_params)
        config.save(output_dir)
        summary = {"global_step": global_step, "num_processes": accelerator.num_processes,
                   "skipped_images": sum(s["skipped_images"] for s in summaries), "ema": ema is not None,
                   "ranks": summaries, "last_logs": logs}  # fmt: skip
        (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if config.push_to_hub:
            url = push_model_to_hub(output_dir, config)
            logger.info("pushed %s to %s", output_dir, url)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    is_main = accelerator.is_main_process
    release_distributed(accelerator, owns_process_group)
    return TrainResult(
        output_dir=str(output_dir), global_step=global_step, skipped_nonfinite_steps=skipped_nonfinite,
        skipped_images=sum(s["skipped_images"] for s in summaries),
        last_checkpoint=str(last_checkpoint) if last_checkpoint else None, last_logs=logs,
        is_main_process=is_main,
    )  # fmt: skip


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


__all__ = ["NonFiniteLossError", "TrainResult", "make_accelerator", "train"]
