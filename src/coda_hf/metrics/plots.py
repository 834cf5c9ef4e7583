"""The evaluation figures, as PNG files (matplotlib's Agg backend; no display needed).

* :func:`plot_reconstructions`: originals (top row) over reconstructions (bottom row).
* :func:`plot_code_usage`: codes sorted by count (rank-frequency, log scale): a collapsed
  codebook shows as a short head and a long run of zeros.
* :func:`plot_quant_error`: quantization error after each residual level (paper Figure 4).
* :func:`plot_latent_pca`: continuous latents vs their quantized versions projected on the
  continuous latents' first two principal components (paper Figure 3).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .image_quality import to_uint8_range


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no-op when a non-interactive backend is already set
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    from ..output_files import atomic_output

    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        _pyplot().close(fig)
    return path


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path) -> Path:
    """``(N, 3, H, W)`` originals and reconstructions in ``[-1, 1]`` -> a 2 x N grid PNG."""
    if originals.shape != reconstructions.shape or originals.ndim != 4:
        raise ValueError(
            f"originals {tuple(originals.shape)} and reconstructions {tuple(reconstructions.shape)} must be equal (N, 3, H, W)"
        )
    plt = _pyplot()
    n = originals.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for row, (title, images) in enumerate((("original", originals), ("reconstruction", reconstructions))):
        pixels = to_uint8_range(images.cpu()).byte().permute(0, 2, 3, 1)  # (N, H, W, 3)
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(pixels[i].numpy())
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title)
    return _save(fig, path)


def plot_code_usage(counts: torch.Tensor, path: str | Path) -> Path:
    """``(K,)`` code counts -> rank-frequency plot (codes sorted by usage, log y)."""
    plt = _pyplot()
    counts = counts.detach().cpu().double()
    total = counts.sum().clamp_min(1)
    freq = (counts / total).sort(descending=True).values.numpy()
    used = int((counts > 0).sum())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(freq)), freq, width=1.0)
    if used:
        ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("fraction of tokens")
    ax.set_title(f"code usage: {used}/{len(freq)} codes used ({100.0 * used / max(len(freq), 1):.1f}%)")
    return _save(fig, path)


def plot_quant_error(quant_error: list[float], path: str | Path) -> Path:
    """Per-level quantization error (``[L]``) -> line plot over levels 1..L (paper Figure 4)."""
    if not len(quant_error):
        raise ValueError("quant_error is empty")
    plt = _pyplot()
    levels = list(range(1, len(quant_error) + 1))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(levels, list(quant_error), marker="o")
    ax.set_xlabel("quantization level")
    ax.set_ylabel("quantization error (MSE)")
    ax.set_xticks(levels)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pca_project(continuous: torch.Tensor, quantized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``(N, C)`` continuous and ``(M, C)`` quantized (or any other) vectors on the continuous set's
    top-2 principal axes."""
    if continuous.ndim != 2 or quantized.ndim != 2 or continuous.shape[1] != quantized.shape[1]:
        raise ValueError(f"continuous {tuple(continuous.shape)} and quantized {tuple(quantized.shape)} must be (N, C) and (M, C)")
    if continuous.shape[1] < 2 or continuous.shape[0] < 2:
        raise ValueError(f"PCA to 2-D needs at least 2 vectors of at least 2 channels; got {tuple(continuous.shape)}")
    x = continuous.detach().double().cpu()
    mean = x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    axes = vh[:2].T  # (C, 2)
    return (x - mean) @ axes, (quantized.detach().double().cpu() - mean) @ axes


def plot_latent_pca(continuous: torch.Tensor, quantized: torch.Tensor, path: str | Path) -> Path:
    """``(N, C)`` latent vectors (one per spatial position) -> side-by-side 2-D PCA scatter (paper Figure 3)."""
    plt = _pyplot()
    pc, pq = pca_project(continuous, quantized)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, points, title in ((axes[0], pc, "continuous latents"), (axes[1], pq, "quantized latents")):
        ax.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=2, alpha=0.4)
        ax.set_title(title)
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    return _save(fig, path)
