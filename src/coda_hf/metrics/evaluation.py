"""The reconstruction evaluation loop: images in, metrics (and figures) out.

:class:`TokenizerEvaluator` accumulates, batch by batch and per process,

* PSNR / SSIM on 8-bit images (sums + counts),
* one :class:`~coda_hf.metrics.frechet.FrechetStatistics` pair (originals, reconstructions) per
  feature network (``fd_effnet`` by default, ``rfid`` with Inception weights),
* for discrete tokenizers, :class:`~coda_hf.metrics.codebook.CodebookStatistics` (utilization over
  the whole set, perplexity, per-level quantization error, tokens per image),

and :meth:`~TokenizerEvaluator.compute` reduces everything across processes (``torch.distributed``,
e.g. under ``accelerate launch``) before turning it into numbers. :func:`evaluate_tokenizer`
runs it over an iterable of batches.

Tokenizers: anything with the ``CodaVQModel`` / ``VQGANModel`` interface (``encode(images)`` ->
``.indices``, ``.quantized``, ``.latents``, ``.stats``; ``decode(indices)``; ``.quantizer``), or a continuous
diffusers ``AutoencoderKL`` (the upper-bound row: no codebook metrics).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..distributed import all_reduce_, rank
from .codebook import CodebookStatistics
from .features import FD_EFFNET_NOTE, PooledFeatures, default_feature_extractors
from .frechet import FrechetStatistics
from .image_quality import psnr, ssim, to_uint8_range

logger = logging.getLogger(__name__)


def is_continuous_autoencoder(model) -> bool:
    """True for a continuous VAE (diffusers ``AutoencoderKL``-like: no quantizer, ``latent_dist``)."""
    return not hasattr(model, "quantizer")


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


class TokenizerEvaluator:
    """Accumulates reconstruction metrics of ``model`` over batches of ``(B, 3, H, W)`` images in ``[-1, 1]``.

    Args:
        model: a discrete tokenizer (``CodaVQModel`` / ``VQGANModel`` interface) or a diffusers
            ``AutoencoderKL``. Put in eval mode here.
        feature_extractors: ``{metric name: (B, 3, H, W) -> (B, D) network with .dim}``; default
            :func:`~coda_hf.metrics.features.default_feature_extractors` (``fd_effnet`` only).
            ``{}`` skips Fréchet distances.
        num_grid_images: originals/reconstructions kept (on rank 0) for the comparison grid.
        max_pca_points: latent vectors kept (on rank 0) for the PCA figure.
    """

    def __init__(
        self,
        model,
        feature_extractors: Mapping[str, PooledFeatures] | None = None,
        num_grid_images: int = 8,
        max_pca_points: int = 4096,
    ):
        self.model = model.eval()
        self.device, self.dtype = _model_device_dtype(model)
        if feature_extractors is None:
            feature_extractors = default_feature_extractors()
        self.feature_extractors = {k: v.to(self.device).eval() for k, v in feature_extractors.items()}
        self.fd_stats = {
            k: (FrechetStatistics(v.dim, self.device), FrechetStatistics(v.dim, self.device))
            for k, v in self.feature_extractors.items()
        }
        self.continuous = is_continuous_autoencoder(model)
        self.codebook = None if self.continuous else CodebookStatistics(int(model.quantizer.codebook_size), self.device)
        # [sum PSNR, sum SSIM, sum MSE (8-bit), number of images, number of pixels], float64
        self.sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        self.num_grid_images = int(num_grid_images)
        self.max_pca_points = int(max_pca_points)
        self.grid: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.pca: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._synced: dict | None = None

    # ------------------------------------------------------------------ model round trip
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, object]:
        """``(B, 3, H, W)`` -> ``(reconstruction (B, 3, H, W), encoder output)``."""
        x = images.to(self.device, self.dtype)
        if self.continuous:
            latents = self.model.encode(x).latent_dist.mode()
            return self.model.decode(latents).sample.float(), None
        enc = self.model.encode(x)
        return self.model.decode(enc.indices).float(), enc

    @torch.no_grad()
    def _quant_error(self, enc) -> torch.Tensor | None:
        """``(L,)`` per-level error: the ``stats["quant_error"]`` that ``encode`` returns with the indices
        (the batch is quantized once), else the MSE between the encoder's quantized and continuous latents."""
        stats = getattr(enc, "stats", None) or {}
        if "quant_error" in stats:
            return stats["quant_error"].reshape(-1)
        latents = getattr(enc, "latents", None)
        if latents is None:
            return None
        return (enc.quantized.float() - latents.float()).pow(2).mean().reshape(1)

    # ------------------------------------------------------------------ accumulation
    @torch.no_grad()
    def update(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluate one batch; returns its reconstruction in ``[-1, 1]``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor in [-1, 1]; got {shape}")
        if self._synced is not None:
            raise RuntimeError("compute() already reduced this evaluator across processes; start a new TokenizerEvaluator")
        images = images.to(self.device)
        recon, enc = self.reconstruct(images)
        # Metrics on 8-bit images, as if both had been saved as PNG.
        ref8, rec8 = to_uint8_range(images), to_uint8_range(recon)
        mse = (ref8 - rec8).pow(2).flatten(1).mean(dim=1)
        counts = torch.tensor([float(images.shape[0]), float(images.shape[0] * images.shape[2] * images.shape[3])],
                              dtype=torch.float64, device=self.device)  # fmt: skip
        self.sums += torch.cat([torch.stack([psnr(rec8, ref8).sum(), ssim(rec8, ref8).sum(), mse.sum()]), counts])
        ref_in, rec_in = ref8 / 127.5 - 1.0, rec8 / 127.5 - 1.0
        for name, net in self.feature_extractors.items():
            real, fake = self.fd_stats[name]
            real.update(net(ref_in.float()))
            fake.update(net(rec_in.float()))
        if enc is not None:
            self.codebook.update(list(enc.indices), self._quant_error(enc))
        if rank() == 0:
            self._keep_samples(images, recon, enc)
        return recon

    def _keep_samples(self, images: torch.Tensor, recon: torch.Tensor, enc) -> None:
        kept = sum(o.shape[0] for o, _ in self.grid)
        if kept < self.num_grid_images:
            take = self.num_grid_images - kept
            self.grid.append((images[:take].float().cpu(), recon[:take].clamp(-1, 1).cpu()))
        latents = getattr(enc, "latents", None) if enc is not None else None
        have = sum(c.shape[0] for c, _ in self.pca)
        if latents is not None and have < self.max_pca_points:
            # (B, C, h, w) -> (B*h*w, C): one point per latent position
            flat = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            qflat = enc.quantized.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            take = self.max_pca_points - have
            self.pca.append((flat[:take].cpu(), qflat[:take].cpu()))

    # ------------------------------------------------------------------ results
    @torch.no_grad()
    def compute(self) -> dict:
        """Reduce across processes (call on every rank) and return JSON-safe metrics.

        This ends the accumulation: later calls return the same numbers, :meth:`update` raises.
        """
        if self._synced is not None:
            return dict(self._synced)
        all_reduce_(self.sums, "sum")
        for real, fake in self.fd_stats.values():
            real.sync()
            fake.sync()
        if self.codebook is not None:
            self.codebook.sync()
        n = float(self.sums[3])
        if n == 0:
            raise ValueError("no images were evaluated: the image iterable was empty")
        metrics: dict = {
            "num_images": int(n),
            "continuous": self.continuous,
            "psnr": float(self.sums[0]) / n,
            "ssim": float(self.sums[1]) / n,
            "mse_uint8": float(self.sums[2]) / n,
        }
        for name, (real, fake) in self.fd_stats.items():
            if n < 2:
                logger.warning("%s needs at least 2 images; skipped", name)
                continue
            metrics[name] = real.distance(fake)
        if "fd_effnet" in metrics:
            metrics["fd_effnet_note"] = FD_EFFNET_NOTE
        if self.codebook is not None:
            metrics.update(self.codebook.compute())
            # the rate: tokens x log2(codebook) bits over the image's pixels (what equal-bit comparisons match)
            metrics["bits_per_pixel"] = metrics["tokens_per_image"] * math.log2(self.codebook.codebook_size) / (
                float(self.sums[4]) / n
            )
        self._synced = metrics
        return dict(metrics)

    def save_plots(self, output_dir: str | Path) -> dict[str, Path]:
        """Write the figures available for this model to ``output_dir`` (call on rank 0)."""
        from . import plots

        out = Path(output_dir)
        written = {}
        if self.grid:
            originals = torch.cat([o for o, _ in self.grid])
            recons = torch.cat([r for _, r in self.grid])
            written["reconstructions"] = plots.plot_reconstructions(originals, recons, out / "reconstructions.png")
        if self.codebook is not None:
            written["code_usage"] = plots.plot_code_usage(self.codebook.counter.counts, out / "code_usage.png")
            if self.codebook.quant_error_sum is not None:
                qe = (self.codebook.quant_error_sum / self.codebook.num_images).tolist()
                written["quant_error"] = plots.plot_quant_error(qe, out / "quant_error.png")
        if self.pca:
            cont = torch.cat([c for c, _ in self.pca])
            quant = torch.cat([q for _, q in self.pca])
            if cont.shape[0] >= 2 and cont.shape[1] >= 2:
                written["latent_pca"] = plots.plot_latent_pca(cont, quant, out / "latent_pca.png")
        return written


def _batch_images(batch) -> torch.Tensor:
    if isinstance(batch, Mapping):
        for key in ("pixel_values", "images", "image"):
            if key in batch:
                return batch[key]
        raise ValueError(f"batch dict has no 'pixel_values' / 'images' / 'image' entry; keys: {sorted(batch)}")
    return batch


def evaluate_tokenizer(
    model,
    images_iterable: Iterable,
    *,
    feature_extractors: Mapping[str, PooledFeatures] | None = None,
    num_images: int | None = None,
    output_dir: str | Path | None = None,
    num_grid_images: int = 8,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` on batches of ``(B, 3, H, W)`` images in ``[-1, 1]`` (tensors, or dicts with
    ``"pixel_values"``); returns the metrics of :meth:`TokenizerEvaluator.compute`.

    ``num_images`` caps the images THIS process evaluates (shard the data per process beforehand).
    With ``output_dir``, rank 0 writes the figures there. Under ``torch.distributed`` every rank
    must call this; all of them get the same reduced metrics. The model runs in eval mode and gets
    its train/eval mode back afterwards.
    """
    from tqdm.auto import tqdm

    was_training = bool(getattr(model, "training", False))
    evaluator = TokenizerEvaluator(model, feature_extractors=feature_extractors, num_grid_images=num_grid_images)
    seen = 0
    bar = tqdm(total=num_images, desc="evaluate", unit="img", disable=not progress or rank() != 0)
    for batch in images_iterable:
        images = _batch_images(batch)
        if num_images is not None:
            images = images[: num_images - seen]
        if images.shape[0] == 0:
            break
        evaluator.update(images)
        seen += images.shape[0]
        bar.update(images.shape[0])
        if num_images is not None and seen >= num_images:
            break
    bar.close()
    metrics = evaluator.compute()
    if output_dir is not None and rank() == 0:
        evaluator.save_plots(output_dir)
    model.train(was_training)  # usable inside a training loop
    return metrics


MARKDOWN_HEADER = (
    "| model | tokens/img | codebook | rFID | FD-EffNet | PSNR | SSIM (x100) | util % | perplexity | images |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def metrics_markdown_row(metrics: Mapping, name: str) -> str:
    """One markdown table row (paper Table 2 style) for :data:`MARKDOWN_HEADER`; '-' where not applicable."""

    def fmt(key: str, scale: float = 1.0, digits: int = 2) -> str:
        value = metrics.get(key)
        return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value * scale:.{digits}f}"

    codebook = metrics.get("codebook_size", "-")
    tokens = metrics.get("tokens_per_image")
    tokens = "-" if tokens is None else f"{tokens:g}"
    cells = [name, tokens, str(codebook), fmt("rfid"), fmt("fd_effnet"), fmt("psnr"), fmt("ssim", 100.0, 1),
             fmt("utilization", 100.0, 1), fmt("perplexity", 1.0, 1), str(metrics.get("num_images", "-"))]  # fmt: skip
    return "| " + " | ".join(cells) + " |"
