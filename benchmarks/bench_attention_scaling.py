"""Cost of the attention quantizer's kernels against codebook size and token count (should be linear in both).

Two sweeps on random RMS-normalised queries / keys (hidden 16) and values (16 channels):

* codebook sizes ``--codebook-sizes`` at ``--tokens`` tokens;
* token counts ``--token-counts`` at ``--codes`` codes.

Per point: the fused training kernel (:func:`~coda_hf.quantizers.attention_fused.fused_soft_assign`, forward +
backward of the IBQ outputs and the entropy penalty at the paper's temperature 0.01) and the eval search
(:func:`~coda_hf.quantizers.attention_fused.attention_argmax`), best of ``--repeats`` (``--clock``). Prints a
table with the time per million (token, code) scores and the R^2 of a straight-line fit per sweep, and
writes a PNG of both sweeps with the fits (``--plot``) and the numbers as JSON (``--output``).

    OMP_NUM_THREADS=1 python benchmarks/bench_attention_scaling.py --clock cpu --plot benchmarks/results/deploy/attention_scaling.png
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizers import best_times, save_report  # noqa: E402

from coda_hf.quantizers.attention import entropy_penalty  # noqa: E402
from coda_hf.quantizers.attention_fused import attention_argmax, fused_soft_assign  # noqa: E402

HIDDEN, CHANNELS, SCALE, TEMPERATURE = 16, 16, 0.25, 0.01


def inputs(tokens: int, codes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = F.rms_norm(torch.randn(tokens, HIDDEN, generator=gen), (HIDDEN,)).requires_grad_(True)
    k = F.rms_norm(torch.randn(codes, HIDDEN, generator=gen), (HIDDEN,)).requires_grad_(True)
    v = torch.randn(codes, CHANNELS, generator=gen).requires_grad_(True)
    return q, k, v, torch.randn(tokens, CHANNELS, generator=gen)


def train_step(q, k, v, g) -> None:
    _, soft, st, ent, probs = fused_soft_assign(q, k, v, SCALE, TEMPERATURE)
    ((soft * g).sum() + (st * g).sum() + 0.05 * entropy_penalty(ent, probs, q.shape[0])).backward()


def measure(tokens: int, codes: int, args) -> dict:
    q, k, v, g = inputs(tokens, codes)
    chunk = max(1, 2**20 // codes)  # the eval search's automatic token chunk
    times = best_times({"train": lambda: train_step(q, k, v, g),
                        "search": lambda: attention_argmax(q.detach(), k.detach(), chunk)},
                       repeats=args.repeats, clock=args.clock)  # fmt: skip
    return {"tokens": tokens, "codes": codes, "train_s": times["train"], "search_s": times["search"]}


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a x + b``: ``(a, b, R^2)``."""
    a, b = np.polyfit(x, y, 1)
    pred = np.polyval([a, b], x)
    ss_res, ss_tot = float(((np.asarray(y) - pred) ** 2).sum()), float(((np.asarray(y) - np.mean(y)) ** 2).sum())
    return float(a), float(b), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def plot(sweeps: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (axis, rows) in zip(axes, sweeps.items()):
        x = [r[axis] for r in rows]
        for key, label in (("train_s", "fused training (fwd+bwd)"), ("search_s", "eval search")):
            y = [r[key] for r in rows]
            a, b, r2 = linear_fit(x, y)
            ax.plot(x, y, "o", label=f"{label}")
            ax.plot(x, np.polyval([a, b], x), "-", alpha=0.6, label=f"linear fit, R^2={r2:.4f}")
        fixed = "tokens" if axis == "codes" else "codes"
        ax.set(xlabel=f"{axis}", ylabel="seconds", title=f"{axis} sweep ({fixed} = {rows[0][fixed]})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    p.add_argument("--tokens", type=int, default=2048, help="tokens of the codebook-size sweep")
    p.add_argument("--token-counts", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--codes", type=int, default=16384, help="codes of the token-count sweep")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--plot", default=None, help="PNG of both sweeps")
    p.add_argument("--output", default=None, help="JSON of the measurements")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sweeps = {"codes": [measure(args.tokens, c, args) for c in args.codebook_sizes],
              "tokens": [measure(n, args.codes, args) for n in args.token_counts]}  # fmt: skip
    print(f"# torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, best of {args.repeats}")
    print("| sweep | tokens | codes | fused train s | train us / M scores | search s | search us / M scores |")
    print("|---|---|---|---|---|---|---|")
    fits = {}
    for axis, rows in sweeps.items():
        for r in rows:
            m = r["tokens"] * r["codes"] / 1e6
            print(f"| {axis} | {r['tokens']} | {r['codes']} | {r['train_s']:.3f} | {1e6 * r['train_s'] / m:.0f} "
                  f"| {r['search_s']:.4f} | {1e6 * r['search_s'] / m:.0f} |")  # fmt: skip
        x = [r[axis] for r in rows]
        fits[axis] = {key: linear_fit(x, [r[key] for r in rows])[2] for key in ("train_s", "search_s")}
        print(f"# {axis} sweep: R^2 of a linear fit: training {fits[axis]['train_s']:.4f}, search {fits[axis]['search_s']:.4f}")
    if args.plot:
        plot(sweeps, args.plot)
    report = {"config": vars(args), "sweeps": sweeps, "r2": fits}
    return save_report(report, args.output)


if __name__ == "__main__":
    main()
