"""The trainer skeleton shared by the tokenizer trainer (:mod:`.loop`) and the prior trainer (:mod:`.maskgit_trainer`).

A run is a sequence of named steps (:meth:`Trainer.run`)::

    set_up                      models, data, optimisers, schedules, EMA (subclass)
    resume                      the latest / given checkpoint: weights, optimisers, RNG, data position, counters
    after_resume                what needs the resumed state (a data-dependent codebook start) and the trackers
    until total_steps updates:  update = for each of gradient_accumulation_steps micro-batches:
                                    generator_step      forward, loss, backward(loss / accumulation) (subclass)
                                    discriminator_step  the GAN's own step (tokenizer trainer only)
                                optimizer_step          clip, step, schedules, EMA, or skip a non-finite update
                                log_and_checkpoint      scalars, images, atomic checkpoints (:mod:`.checkpointing`)
    finalise                    save the model(s) (subclass), end the trackers, release the process group

One accumulation style: micro-batches accumulate locally (``no_sync``; the last one all-reduces), every
loss is divided by ``gradient_accumulation_steps`` and accelerate sees steps of 1; schedules are registered
for checkpointing, not prepared, and step once per update on every process. A non-finite loss (checked on
every process at once) or gradient norm skips the update; ``max_nonfinite_steps`` of them in a row stop the
run with :class:`NonFiniteLossError`, leaving the last checkpoint as it was. One live trainer per output
directory (:mod:`.run_lock`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from ..distributed import owns_no_process_group_yet, release_distributed
from .checkpointing import load_checkpoint, remove_incomplete, resolve_checkpoint, save_checkpoint
from .run_lock import OutputDirInUseError, hold_output_dir

logger = get_logger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row; the last checkpoint on disk is intact."""


def make_accelerator(output_dir: str | os.PathLike, mixed_precision: str = "no", report_to: str = "none",
                     cpu: bool = False) -> Accelerator:  # fmt: skip
    """The run's ``Accelerator``: trackers from ``report_to`` (comma-separated, ``"none"``: none), logs in
    ``output_dir/logs``; ``cpu`` or ``ACCELERATE_USE_CPU=true`` forces the CPU."""
    trackers = [t.strip() for t in report_to.split(",") if t.strip() and t.strip() != "none"]
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=os.path.join(str(output_dir), "logs"))
    cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, log_with=trackers or None, project_config=project)


def all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    """``True`` when ``value`` is finite on EVERY process (all processes take the same branch)."""
    bad = (~torch.isfinite(value.detach().float())).any().float().reshape(1)
    return float(accelerator.reduce(bad, reduction="sum").item()) == 0.0


def add_logs(total: dict[str, float], new: dict[str, float], scale: float) -> None:
    """``total[k] += new[k] * scale``: a micro-batch's share of an update's logged scalars."""
    for k, v in new.items():
        total[k] = total.get(k, 0.0) + v / scale


class Trainer:
    """Base of the trainers. Subclasses set, in :meth:`set_up`: ``model`` (prepared), ``gen_params``,
    ``opt_g``, ``sched_g``, ``total_steps``, and optionally ``disc`` (prepared), ``disc_params``, ``opt_d``,
    ``sched_d``, ``ema``, ``measured_only`` (tensors that get gradients only to be measured)."""

    progress_name = "train"

    def __init__(self, config, output_dir: str | os.PathLike, report_to: str = "none", cpu: bool = False):
        self.config = config
        self.output_dir = Path(output_dir)
        self.report_to, self.cpu = report_to, cpu
        self.accumulation = int(config.gradient_accumulation_steps)
        self.global_step = self.attempts = self.skipped_nonfinite = self.consecutive_bad = 0
        self.last_checkpoint: Path | None = None
        self.disc = self.opt_d = self.sched_d = self.ema = None
        self.disc_params: list[torch.nn.Parameter] = []
        self.measured_only: list[torch.Tensor] = []
        self.grad_norm: torch.Tensor | None = None

    # ------------------------------------------------------------------ the run
    def run(self):
        owns_process_group = owns_no_process_group_yet()
        self.accelerator = make_accelerator(self.output_dir, self.config.mixed_precision, self.report_to, self.cpu)
        with self._hold_output_dir():
            if self.accelerator.is_main_process:
                for removed in remove_incomplete(self.output_dir):
                    logger.warning("removed the incomplete checkpoint save %s left by an interrupted run", removed)
                self.config.save(self.output_dir)
            self.accelerator.wait_for_everyone()
            set_seed(self.config.seed)  # same initial weights on every process
            self.set_up()
            self._register_for_checkpointing()
            self.resume()
            self.after_resume()
            self.train_loop()
            result = self.finalise()
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()
            release_distributed(self.accelerator, owns_process_group)
        return result

    @contextlib.contextmanager
    def _hold_output_dir(self):
        """The main process locks the output directory; every process learns whether it could."""
        with contextlib.ExitStack() as stack:
            error = None
            if self.accelerator.is_main_process:
                try:
                    stack.enter_context(hold_output_dir(self.output_dir))
                except OutputDirInUseError as e:
                    error = str(e)
            (error,) = broadcast_object_list([error])
            if error is not None:
                raise OutputDirInUseError(error)
            yield

    def _register_for_checkpointing(self) -> None:
        # Schedules step once per update on every process: registered, not prepared (prepare would step
        # them num_processes times per update). The order fixes the checkpoint's custom_checkpoint_<i>.
        for obj in (self.sched_g, self.sched_d, self.ema):
            if obj is not None:
                self.accelerator.register_for_checkpointing(obj)

    def train_loop(self) -> None:
        progress = tqdm(total=self.total_steps, initial=self.global_step, desc=self.progress_name,
                        disable=not self.accelerator.is_local_main_process)  # fmt: skip
        try:
            while self.global_step < self.total_steps:
                step_logs = self.update()
                if step_logs is None:
                    continue  # skipped (non-finite)
                self.global_step += 1
                progress.update(1)
                self.log_and_checkpoint(step_logs, progress)
        finally:
            progress.close()
            self.close()

    # ------------------------------------------------------------------ one update
    def update(self) -> dict[str, float] | None:
        """One optimiser update from ``gradient_accumulation_steps`` micro-batches; its logged scalars, or
        ``None`` when it was skipped for a non-finite loss or gradient."""
        self.attempts += 1
        finite, logs = True, {}
        for batch, last in self.micro_batches():
            if not finite:
                continue  # the update is skipped anyway: only keep the data position moving
            with contextlib.ExitStack() as stack:
                if not last:  # accumulate locally; gradients are all-reduced on the last micro-batch
                    for module in (self.model, self.disc):
                        if module is not None:
                            stack.enter_context(self.accelerator.no_sync(module))
                out = self.generator_step(batch, logs)
                finite = out is not None and self.discriminator_step(batch, out, logs)
        return self.optimizer_step(finite, logs)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss / self.accumulation)

    def check_finite(self, loss: torch.Tensor) -> bool:
        return all_finite(self.accelerator, loss)

    def optimizer_step(self, finite: bool, logs: dict[str, float]) -> dict[str, float] | None:
        """Clip and step both optimisers, their schedules and the EMA; or skip the update."""
        accelerator, grad_norm = self.accelerator, None
        if finite:
            grad_norm = accelerator.clip_grad_norm_(self.gen_params, self.config.max_grad_norm)
            if accelerator.scaler is None:
                finite = all_finite(accelerator, torch.as_tensor(grad_norm))
            # fp16: inf gradients are the GradScaler's business (it skips the step and lowers the scale).
        for tensor in self.measured_only:
            tensor.grad = None  # measured, never trained
        if not finite:
            self._skip_update()
            return None
        self.consecutive_bad = 0
        self.opt_g.step()
        self.sched_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            if any(p.grad is not None for p in self.disc_params):
                accelerator.clip_grad_norm_(self.disc_params, self.config.max_grad_norm)
                self.opt_d.step()
                self.sched_d.step()
            self.opt_d.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.gen_params)
        self.grad_norm = grad_norm
        return logs

    def _skip_update(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_d is not None:
            self.opt_d.zero_grad(set_to_none=True)
        self.skipped_nonfinite += 1
        self.consecutive_bad += 1
        logger.warning("non-finite loss or gradient at update attempt %d (step %d): update skipped (%d in a row)",
                       self.attempts, self.global_step, self.consecutive_bad)  # fmt: skip
        limit = self.config.max_nonfinite_steps
        if self.consecutive_bad >= limit:
            raise NonFiniteLossError(
                f"{self.consecutive_bad} non-finite losses/gradients in a row (max_nonfinite_steps={limit}) at step "
                f"{self.global_step}: stopping. The last checkpoint {self.last_checkpoint or '(none saved yet)'} is "
                "intact; lower the learning rate or check the data, then resume with --resume_from_checkpoint latest"
            )

    # ------------------------------------------------------------------ checkpoints
    def rank_state(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step, "attempts": self.attempts, "skipped_nonfinite_steps": self.skipped_nonfinite,
            "num_processes": self.accelerator.num_processes, "data": self.data_state(),
        }  # fmt: skip

    def save_checkpoint(self) -> None:
        self.last_checkpoint = save_checkpoint(self.accelerator, self.output_dir, self.global_step, self.rank_state(),
                                               self.config.checkpoints_total_limit)  # fmt: skip

    def resume(self) -> None:
        path = resolve_checkpoint(self.output_dir, self.config.resume_from_checkpoint)
        if path is None:
            return
        saved = load_checkpoint(self.accelerator, path)
        self.last_checkpoint = path
        self.global_step = int(saved["global_step"])
        self.attempts = int(saved.get("attempts", self.global_step))
        self.skipped_nonfinite = int(saved.get("skipped_nonfinite_steps", 0))
        self.load_data_state(saved["data"])

    def init_trackers(self, project_name: str, hparams: dict[str, Any]) -> None:
        if self.report_to != "none":
            self.accelerator.init_trackers(project_name, config=hparams)

    # ------------------------------------------------------------------ subclass steps
    def set_up(self) -> None:
        raise NotImplementedError

    def after_resume(self) -> None:
        """After :meth:`resume`: work that needs the resumed state; trackers."""

    def micro_batches(self):
        """Yield ``(batch, is_last)`` for the micro-batches of the next update."""
        raise NotImplementedError

    def generator_step(self, batch, logs: dict[str, float]):
        """Forward, loss, :meth:`backward` on one micro-batch; what the discriminator step needs, or ``None``
        when the loss is non-finite (on any process)."""
        raise NotImplementedError

    def discriminator_step(self, batch, out, logs: dict[str, float]) -> bool:
        """The discriminator's step on one micro-batch; ``False`` when its loss is non-finite."""
        return True

    def log_and_checkpoint(self, logs: dict[str, float], progress) -> None:
        raise NotImplementedError

    def data_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_data_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release files opened for the loop (also after an error)."""

    def finalise(self):
        raise NotImplementedError


__all__ = ["NonFiniteLossError", "Trainer", "all_finite", "make_accelerator"]
