"""The single-level quantizers actually learn: a few hundred Adam steps on a 2-D Gaussian mixture.

Data: 16 Gaussians (std 0.05) on a 4x4 grid in [-1.5, 1.5]^2, fed as ``(1, 2, N, 1)`` latents. Predicting
the mean gives a per-element MSE of ~1.25; the within-cluster floor is 0.0025. Bounds below are about
1.5x the errors measured with these seeds (stated next to each), so a real regression fails them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coda_hf.quantizers import BaseQuantizer, build_quantizer

DATA_VARIANCE = 1.25


def mixture(n: int, seed: int, std: float = 0.05) -> torch.Tensor:
    """``(1, 2, n, 1)`` samples of the 16-component grid mixture."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-1.5, 1.5, 4)
    centres = torch.cartesian_prod(grid, grid)  # (16, 2)
    pts = centres[torch.randint(0, 16, (n,), generator=g)] + std * torch.randn(n, 2, generator=g)
    return pts.t().reshape(1, 2, n, 1).contiguous()


def fit(q: BaseQuantizer, steps: int = 300, lr: float = 0.05, anneal: tuple[float, float] | None = None):
    """Adam on ``out.loss + mse(quantized, z)``; returns eval (quant_error, fraction of codes used)."""
    params = [p for p in q.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if params else None  # EMA VQ has no trainable parameter
    q.train()
    for step in range(steps):
        if anneal is not None:  # geometric temperature schedule (Gumbel)
            q.temperature = anneal[0] * (anneal[1] / anneal[0]) ** (step / steps)
        z = mixture(256, seed=step)
        out = q(z)
        loss = out.loss + F.mse_loss(out.quantized, z)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    q.eval()
    with torch.no_grad():
        out = q(mixture(4096, seed=10_000))
    return float(out.stats["quant_error"][0]), out.indices[0].unique().numel() / q.codebook_size


@pytest.mark.parametrize(
    "name, kw, steps, lr, anneal, bound",
    [
        # measured: 0.019
        ("vq", dict(dim=2, codebook_size=16, init_std=0.5, restart_after=5), 300, 0.05, None, 0.03),
        # measured: 0.033
        ("vq", dict(dim=2, codebook_size=16, use_ema=True, ema_decay=0.9), 300, 0.05, None, 0.05),
        # measured: 0.018
        ("vq", dict(dim=2, codebook_size=16, use_ema=True, ema_decay=0.9, restart_threshold=0.5), 300, 0.05, None,
         0.03),
        # measured: 0.037 (projection 2 -> 3 channels, 125 implicit codes)
        ("fsq", dict(dim=2, levels=[5, 5, 5]), 400, 0.03, None, 0.06),
        # measured: 0.085
        ("gumbel", dict(dim=2, codebook_size=16), 400, 0.1, (2.0, 0.2), 0.13),
        # measured: 0.175 (4 sign bits of a linear projection: at most 11 regions of the plane)
        ("lfq", dict(dim=2, codebook_size=16), 400, 0.1, None, 0.25),
    ],
)
def test_quantizer_fits_gaussian_mixture(name, kw, steps, lr, anneal, bound):
    torch.manual_seed(0)
    q = build_quantizer(name, **kw)
    err, _ = fit(q, steps=steps, lr=lr, anneal=anneal)
    assert err < bound, f"{name} {kw}: quantization error {err:.4f} >= {bound}"
    assert err < 0.2 * DATA_VARIANCE


def test_dead_code_restart_rescues_a_collapsed_codebook():
    """Codebook initialised collapsed and far from the data: plain VQ uses one code, restart uses all."""
    results = {}
    for restart_after in (0, 5):
        torch.manual_seed(0)
        q = build_quantizer("vq", dim=2, codebook_size=16, init_std=0.01, restart_after=restart_after)
        with torch.no_grad():
            q.embedding.add_(5.0)
        results[restart_after] = fit(q, steps=300, lr=0.05)
    plain_err, plain_util = results[0]
    restart_err, restart_util = results[5]
    # measured: plain 1/16 utilization and error 1.25; restart 16/16 and 0.019
    assert plain_util < 0.2 and plain_err > 0.5
    assert restart_util >= 0.95
    assert restart_err < 0.03
