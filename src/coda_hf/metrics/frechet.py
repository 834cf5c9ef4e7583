"""Fréchet distance between Gaussians fitted to feature sets (FID, FD-EffNet, ...): the one implementation.

``d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})`` (Dowson & Landau 1982; Heusel et al. 2017).

The trace term never forms the non-symmetric product ``S1 S2``: its eigenvalues equal those of
the symmetric PSD matrix ``M = S1^{1/2} S2 S1^{1/2}``, so ``Tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(M))``,
computed with ``torch.linalg.eigh`` in float64. Unlike ``scipy.linalg.sqrtm`` this needs no
``eps * I`` offset and returns no spurious imaginary part for rank-deficient covariances
(fewer images than feature dimensions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..distributed import all_reduce_

ArrayLike = torch.Tensor | np.ndarray


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float64)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, numpy array or nested list; got {type(x).__name__}")
    return x.detach().to(torch.float64)


def _sqrt_eigenvalues(eigvals: torch.Tensor) -> torch.Tensor:
    """Square roots of a PSD matrix's eigenvalues, with those below its numerical rank set to zero.

    Round-off leaves eigenvalues of size ``~ D * eps * lambda_max`` (of either sign) where the true
    value is zero (rank-deficient covariances: fewer samples than dimensions); their square roots
    would add ``~1e-8 * lambda_max`` each. The threshold is numpy's ``matrix_rank`` tolerance.
    """
    tol = eigvals.abs().max() * eigvals.numel() * torch.finfo(eigvals.dtype).eps
    return torch.where(eigvals > tol, eigvals, torch.zeros_like(eigvals)).sqrt()


def sqrtm_psd(matrix: ArrayLike) -> torch.Tensor:
    """Principal square root of a symmetric positive semi-definite ``(D, D)`` matrix (float64).

    ``V diag(sqrt(lambda)) V^T`` from ``eigh``; eigenvalues below the numerical rank (round-off,
    including tiny negative ones) count as zero. Equals ``scipy.linalg.sqrtm`` on covariance matrices.
    """
    m = _as_float64(matrix, "matrix")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"sqrtm_psd expects a square (D, D) matrix; got shape {tuple(m.shape)}")
    m = 0.5 * (m + m.T)  # symmetrize away round-off
    eigvals, eigvecs = torch.linalg.eigh(m)
    return (eigvecs * _sqrt_eigenvalues(eigvals)) @ eigvecs.T


def trace_sqrtm_product(sigma1: ArrayLike, sigma2: ArrayLike) -> torch.Tensor:
    """``Tr((S1 S2)^{1/2})`` for symmetric PSD ``S1, S2`` via the eigenvalues of ``S1^{1/2} S2 S1^{1/2}``."""
    s1 = _as_float64(sigma1, "sigma1")
    s2 = _as_float64(sigma2, "sigma2")
    root1 = sqrtm_psd(s1)
    m = root1 @ s2 @ root1
    eigvals = torch.linalg.eigvalsh(0.5 * (m + m.T))
    return _sqrt_eigenvalues(eigvals).sum()


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``mu``: ``(D,)`` means; ``sigma``: ``(D, D)`` covariances. Returns a Python float (>= 0 up to round-off).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    s1, s2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be (D,) vectors of the same size; got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means; got {tuple(s.shape)}")
    s2 = s2.to(s1.device)
    diff = mu1 - mu2.to(mu1.device)
    value = diff.dot(diff) + s1.trace() + s2.trace() - 2.0 * trace_sqrtm_product(s1, s2)
    return float(value)


class FrechetStatistics:
    """Running Gaussian statistics of a feature stream, reducible across processes.

    Keeps ``n``, ``sum(x)`` ``(D,)`` and ``sum(x x^T)`` ``(D, D)`` in float64 on ``device``. Call
    :meth:`update` with ``(B, D)`` features on every process, :meth:`sync` once on every process
    (``all_reduce`` SUM when ``torch.distributed`` is initialised), then :meth:`mean` /
    :meth:`covariance` / :meth:`distance`.

    >>> a, b = FrechetStatistics(4), FrechetStatistics(4)
    >>> a.update(torch.randn(64, 4)); b.update(torch.randn(64, 4) + 1)
    >>> a.distance(b) > 0
    True
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.outer_sum = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)

    @property
    def num_samples(self) -> int:
        return int(self.count.item())

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a ``(B, D)`` batch of features."""
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[1] != self.dim:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"features must be (B, {self.dim}); got {shape}")
        x = features.detach().to(device=self.sum.device, dtype=torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(dim=0)
        self.outer_sum += x.T @ x

    @torch.no_grad()
    def sync(self) -> None:
        """Sum the statistics of all processes (call on every rank, once)."""
        for t in (self.count, self.sum, self.outer_sum):
            all_reduce_(t, "sum")

    def mean(self) -> torch.Tensor:
        """``(D,)`` float64 mean."""
        if self.count < 1:
            raise ValueError("FrechetStatistics is empty: call update() with features first")
        return self.sum / self.count

    def covariance(self) -> torch.Tensor:
        """``(D, D)`` float64 unbiased covariance (``numpy.cov(x, rowvar=False)``)."""
        n = self.count
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 samples; FrechetStatistics has {int(n)}")
        mu = self.sum / n
        cov = (self.outer_sum - n * torch.outer(mu, mu)) / (n - 1)
        return 0.5 * (cov + cov.T)

    def distance(self, other: FrechetStatistics) -> float:
        """Fréchet distance between the Gaussians fitted to ``self`` and ``other``."""
        if other.dim != self.dim:
            raise ValueError(f"feature sizes differ: {self.dim} vs {other.dim}")
        return frechet_distance(self.mean(), self.covariance(), other.mean(), other.covariance())

    # Reference statistics (e.g. of a validation set) can be stored once and reused.
    def save(self, path: str | Path) -> None:
        """Write ``count``, ``sum`` and ``outer_sum`` to a safetensors file."""
        from safetensors.torch import save_file

        save_file(
            {"count": self.count.reshape(1).cpu(), "sum": self.sum.cpu(), "outer_sum": self.outer_sum.cpu()},
            str(path),
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> FrechetStatistics:
        from safetensors.torch import load_file

        state = load_file(str(path))
        missing = {"count", "sum", "outer_sum"} - set(state)
        if missing:
            raise ValueError(f"{path} is not a FrechetStatistics file: missing {sorted(missing)}")
        stats = cls(state["sum"].shape[0], device=device)
        stats.count += state["count"].reshape(()).to(stats.count)
        stats.sum += state["sum"].to(stats.sum)
        stats.outer_sum += state["outer_sum"].to(stats.outer_sum)
        return stats

    @classmethod
    def from_features(cls, features: ArrayLike) -> FrechetStatistics:
        """Statistics of a whole ``(N, D)`` feature matrix."""
        x = _as_float64(features, "features")
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D); got shape {tuple(x.shape)}")
        stats = cls(x.shape[1])
        stats.update(x)
        return stats
