"""The MaskGIT mask schedule and its two uses: masking for training, iterative unmasking for sampling.

The schedule ``gamma(r)`` is the fraction of tokens still masked at progress ``r`` in ``[0, 1]``:
``gamma(0) = 1`` (all masked), ``gamma(1) = 0`` (none), monotonically non-increasing (MaskGIT, Chang et al. 2022,
Sec. 3.3). This module is the only place that defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

MASK_SCHEDULES = ("cosine", "linear", "square", "arccos")


@dataclass
class MaskGitSchedulerOutput(BaseOutput):
    """Output of :meth:`MaskGitScheduler.step`.

    Attributes:
        prev_sample: ``(B, N)`` ids after this step: codes where decided, the mask id elsewhere.
        pred_original_sample: ``(B, N)`` codes everywhere (kept ones plus this step's samples).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


@dataclass
class MaskGitMaskingOutput(BaseOutput):
    """Output of :meth:`MaskGitScheduler.mask_tokens`.

    Attributes:
        masked_ids: ``(B, N)`` ids with the mask id at masked positions.
        mask: ``(B, N)`` bool, ``True`` where masked (where the training loss counts).
        timesteps: ``(B,)`` progress ``r`` in ``[0, 1)`` that set each sample's mask ratio ``gamma(r)``.
    """

    masked_ids: torch.Tensor
    mask: torch.Tensor
    timesteps: torch.Tensor


Generators = torch.Generator | list[torch.Generator] | None


def _uniform(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    """Uniform noise in ``(0, 1)`` drawn on the generator's device (reproducible), moved to ``device``.

    A list holds one generator per row (dim 0): row ``i`` comes from ``generator[i]`` alone, so a batch
    reproduces, row by row, what each generator gives for a batch of one (diffusers' ``randn_tensor`` rule).
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got a list of {len(generator)} generators for a batch of {shape[0]}; pass one per sample")
        return torch.cat([_uniform((1, *shape[1:]), g, device) for g in generator])
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device).to(device)
    return u.clamp_(1e-20, 1.0 - 1e-7)


def _gumbel(shape: tuple[int, ...], generator: Generators, device: torch.device) -> torch.Tensor:
    return -torch.log(-torch.log(_uniform(shape, generator, device)))


def _sample_codes(logits: torch.Tensor, generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, log-probabilities)``, each ``(B, N)``: codes drawn from ``softmax`` of ``(B, N, K)`` float
    logits by inverting the CDF, and their log-probabilities.

    One uniform per token, not ``K`` Gumbel draws (Gumbel-max): with a CPU generator and a GPU model, noise
    of the logits' full ``(B, N, K)`` shape would be drawn on the CPU and copied over at every step, and with
    thousands of codes that, not the model, dominates the time of a sampling step.
    """
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, N, 1)
    cdf = (logits - lse).exp_().cumsum_(-1)  # (B, N, K); float32 rounding over K codes stays ~1e-6 of 1
    u = _uniform(logits.shape[:2], generator, logits.device) * cdf[..., -1]  # (B, N)
    # the first code whose CDF reaches u: code k with probability p_k (a code with p_k = 0 is never chosen)
    codes = torch.searchsorted(cdf, u[..., None]).clamp_(max=logits.shape[-1] - 1)  # (B, N, 1)
    return codes[..., 0], (logits.gather(-1, codes) - lse)[..., 0]


class MaskGitScheduler(SchedulerMixin, ConfigMixin):
    """Masking schedule of MaskGIT, for training (:meth:`mask_tokens`) and sampling (:meth:`step`).

    Args:
        mask_schedule: ``gamma(r)``: ``"cosine"`` ``cos(pi r / 2)`` (MaskGIT/CODA default), ``"linear"``
            ``1 - r``, ``"square"`` ``1 - r^2``, or ``"arccos"`` ``(2 / pi) arccos(r)``.
        choice_temperature: scale of the Gumbel noise added to the log-confidences when choosing which
            tokens to keep at a sampling step; annealed as ``choice_temperature * (1 - r)``.
    """

    order = 1

    @register_to_config
    def __init__(self, mask_schedule: str = "cosine", choice_temperature: float = 4.5):
        if mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {MASK_SCHEDULES}; got {mask_schedule!r}")
        if choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0; got {choice_temperature}")
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def mask_ratio(self, r: torch.Tensor | float) -> torch.Tensor:
        """``gamma(r)``: fraction of tokens masked at progress ``r`` in ``[0, 1]`` (the one schedule)."""
        r = torch.as_tensor(r, dtype=torch.float64).clamp(0.0, 1.0)
        name = self.config.mask_schedule
        if name == "cosine":
            # cos(pi / 2) is 6e-17 in floating point: pin the end point to exactly 0
            return torch.where(r < 1, torch.cos(r * math.pi / 2), torch.zeros_like(r))
        if name == "linear":
            return 1.0 - r
        if name == "square":
            return 1.0 - r**2
        return torch.arccos(r) * (2 / math.pi)  # "arccos"

    # ----- training -----
    def mask_tokens(
        self,
        token_ids: torch.Tensor,
        mask_token_id: int,
        timesteps: torch.Tensor | None = None,
        generator: Generators = None,
    ) -> MaskGitMaskingOutput:
        """Mask ``ceil(gamma(r) * N)`` (at least one) random positions of each sample.

        Args:
            token_ids: ``(B, N)`` codes.
            mask_token_id: the id written at masked positions (``transformer.mask_token_id``).
            timesteps: ``(B,)`` progress ``r`` per sample; uniform in ``[0, 1)`` when ``None``.
            generator: randomness for ``r`` and the positions (a list: one generator per sample).
        """
        if not isinstance(token_ids, torch.Tensor) or token_ids.ndim != 2:
            shape = (
                tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
            )
            raise ValueError(f"token_ids must be (B, N); got {shape}")
        b, n = token_ids.shape
        device = token_ids.device
        if timesteps is None:
            timesteps = _uniform((b,), generator, device)
        timesteps = torch.as_tensor(timesteps, device=device, dtype=torch.float32)
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must be ({b},); got {tuple(timesteps.shape)}")
        num_masked = torch.ceil(self.mask_ratio(timesteps).to(device) * n).long().clamp(1, n)  # (B,)
        ranks = _uniform((b, n), generator, device).argsort(dim=1).argsort(dim=1)  # random permutation ranks
        mask = ranks < num_masked[:, None]
        masked_ids = torch.where(mask, torch.full_like(token_ids, mask_token_id), token_ids)
        return MaskGitMaskingOutput(masked_ids=masked_ids, mask=mask, timesteps=timesteps)

    # ----- sampling -----
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Prepare ``num_inference_steps`` unmasking steps; ``timesteps`` are the step indices."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int; got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps, device=device)

    def num_masked_after(self, step_index: int, num_tokens: int) -> int:
        """Tokens still masked after step ``step_index`` (0-based): ``floor(gamma((t + 1) / T) * N)``."""
        r = (step_index + 1) / self.num_inference_steps
        return int(math.floor(float(self.mask_ratio(r)) * num_tokens + 1e-6))

    def step(
        self,
        logits: torch.Tensor,
        step_index: int,
        sample: torch.Tensor,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> MaskGitSchedulerOutput | tuple:
        """One confidence-based unmasking step (MaskGIT iterative decoding).

        Samples a code at every masked position from ``softmax(logits)``, then keeps the
        ``N - floor(gamma((t + 1) / T) * N)`` most confident decided tokens (already decided ones always
        stay), re-masking the rest. Confidence is ``log p(sampled code) + choice_temperature * (1 - r) * g``
        with Gumbel noise ``g``, ``r = (t + 1) / T``. Every step decides at least one more token.

        Args:
            logits: ``(B, N, K)`` logits over the codes.
            step_index: ``t`` in ``[0, num_inference_steps)``.
            sample: ``(B, N)`` current ids; the mask id is ``K`` (``logits.shape[-1]``).
            generator: randomness for sampling (one uniform per token, inverse CDF) and the Gumbel noise on
                the confidences; a list holds one generator per sample
                (sample ``i`` then draws exactly what ``generator[i]`` draws for a batch of one).
        """
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        if not 0 <= step_index < self.num_inference_steps:
            raise ValueError(f"step_index must lie in [0, {self.num_inference_steps}); got {step_index}")
        if logits.ndim != 3 or sample.shape != logits.shape[:2]:
            raise ValueError(
                f"logits must be (B, N, K) and sample (B, N); got {tuple(logits.shape)} and {tuple(sample.shape)}"
            )
        b, n, k = logits.shape
        mask_id = k
        is_masked = sample == mask_id  # (B, N)
        sampled, log_p = _sample_codes(logits.float(), generator)  # (B, N) codes and their log-probabilities
        pred = torch.where(is_masked, sampled, sample)  # (B, N) codes

        r = (step_index + 1) / self.num_inference_steps
        temperature = self.config.choice_temperature * (1.0 - r)
        confidence = log_p + temperature * _gumbel((b, n), generator, logits.device)
        confidence = torch.where(is_masked, confidence, torch.full_like(confidence, torch.inf))

        num_unknown = is_masked.sum(dim=1)  # (B,)
        target = torch.full_like(num_unknown, self.num_masked_after(step_index, n))
        num_to_mask = torch.minimum(target, (num_unknown - 1).clamp(min=0))  # (B,) always decide >= 1 token
        ranks = confidence.argsort(dim=1).argsort(dim=1)  # 0 = least confident
        remask = ranks < num_to_mask[:, None]
        prev_sample = torch.where(remask, torch.full_like(pred, mask_id), pred)
        if not return_dict:
            return (prev_sample, pred)
        return MaskGitSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred)


__all__ = ["MASK_SCHEDULES", "MaskGitMaskingOutput", "MaskGitScheduler", "MaskGitSchedulerOutput"]
