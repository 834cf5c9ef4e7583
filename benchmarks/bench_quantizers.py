"""Benchmark every quantizer (vq, gumbel, fsq, lfq, residual, attention, multiscale) against ``vector-quantize-pytorch``.

Times the forward pass in train mode (grad enabled, input requires grad, codebook updates included) and
eval mode (``torch.no_grad``) for 16x16 and 32x32 latent grids, batch 8, 16 latent channels and
codebooks of ~1k / ~16k / ~64k codes, and prints a markdown table.

* time: best of at least ``--repeats`` calls (fast cases: as many as fit in 0.2 s) after one warm-up call;
  best-of is the least noisy statistic on a shared CPU.
* peak memory: peak of allocated CPU tensor memory during one call, measured with
  ``torch.profiler`` (``profile_memory=True``; allocations and frees replayed in time order), relative
  to the memory live before the call.
* speedup: ``vector-quantize-pytorch time / our time`` for the same config in the same run (> 1: ours
  is faster). Gumbel, attention and multiscale have no counterpart there; ``residual`` (4 levels of VQ)
  is compared with its ``ResidualVQ``.
* ``attention``: CODA's quantizer, eval chunked automatically; training takes the fused kernel for calls of at
  least ``fused_threshold`` (2^22) token-code scores, smaller calls train in token chunks of 1,024
  (``train_chunk_size``). ``benchmarks/bench_attention_training.py`` compares the two training paths. ``multiscale``: the attention quantizer on CODA's levels (MAR scales 1..16 on 16x16
  latents, FLUX scales 1..32 on 32x32: 680 / 2,240 tokens per image).

Cases that materialise a dense ``(tokens, codes)`` float matrix larger than ``--max-dense-gib`` are
skipped and reported as such (our Gumbel logits; their VQ distances and LFQ training entropy).

Other benchmarks reuse :func:`run_case` and :func:`format_table` to add rows::

    from benchmarks.bench_quantizers import run_case
    row = run_case("residual", quantizer, torch.randn(8, 16, 16, 16), mode="eval")
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from coda_hf.quantizers import build_quantizer
from coda_hf.quantizers.multiscale import FLUX_SCALES

# nominal size -> (vq/gumbel codebook_size, fsq levels, lfq bits)
SIZES: dict[str, tuple[int, list[int], int]] = {
    "1k": (1024, [8, 5, 5, 5], 10),
    "16k": (16384, [8, 8, 8, 6, 5], 14),
    "64k": (65536, [8, 8, 8, 5, 5, 5], 16),
}


def _call(module: nn.Module, z: torch.Tensor, mode: str):
    if mode == "train":
        zz = z.detach().requires_grad_(True)
        with torch.enable_grad():
            return module(zz)
    with torch.no_grad():
        return module(z)


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak of allocated CPU tensor memory (MiB) during ``fn()``, from the torch profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage
    )
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak / 2**20


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def save_report(report: dict, path: str | None) -> dict:
    """Write ``report`` as indented JSON to ``path`` (nothing when ``path`` is empty); returns ``report``."""
    if path:
        with open(path, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


def best_times(
    fns: dict[str, Callable[[], object]], repeats: int = 3, clock: str = "wall", warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Best time (s) of each ``name -> fn`` over ``repeats`` interleaved rounds, after ``warmup`` rounds.

    Interleaving (``a, b, a, b, ...``) exposes every function to the same background load, so ratios
    measured in one run are fair on a shared machine. ``clock``: ``"wall"`` (``time.perf_counter``) or
    ``"cpu"`` (``time.process_time``: CPU seconds of this process, all threads; with one thread it
    leaves out the time other processes hold the core). ``sync``: called before reading the clock
    (``torch.cuda.synchronize`` on a GPU).
    """
    now, sync = CLOCKS[clock], sync or (lambda: None)
    best = {name: float("inf") for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = now()
            fn()
            sync()
            if round_ >= warmup:
                best[name] = min(best[name], now() - start)
    return best


def run_case(
    label: str,
    module: nn.Module,
    z: torch.Tensor,
    mode: str = "eval",
    repeats: int = 3,
    warmup: int = 1,
    measure_memory: bool = True,
    min_total_s: float = 0.2,
) -> dict[str, object]:
    """Time (best of >= ``repeats`` calls) and peak memory of ``module(z)`` in ``mode`` ("train"/"eval")."""
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval'; got {mode!r}")
    module.train(mode == "train")
    for _ in range(warmup):
        _call(module, z, mode)
    times: list[float] = []
    # at least `repeats` calls; fast cases repeat until `min_total_s` has passed (at most 200 calls)
    while len(times) < max(1, repeats) or (sum(times) < min_total_s and len(times) < 200):
        start = time.perf_counter()
        _call(module, z, mode)
        times.append(time.perf_counter() - start)
    peak = peak_memory_mib(lambda: _call(module, z, mode)) if measure_memory else float("nan")
    b, _, h, w = z.shape
    return {"label": label, "mode": mode, "grid": f"{h}x{w}", "batch": b, "time_s": min(times), "peak_mib": peak}


def ours(kind: str, size: str, dim: int) -> nn.Module:
    k, levels, bits = SIZES[size]
    if kind == "vq":
        return build_quantizer("vq", dim=dim, codebook_size=k, use_ema=True, ema_decay=0.99)
    if kind == "gumbel":
        return build_quantizer("gumbel", dim=dim, codebook_size=k)
    if kind == "fsq":
        return build_quantizer("fsq", dim=dim, levels=levels)
    if kind == "lfq":
        return build_quantizer("lfq", dim=dim, codebook_size=2**bits)
    if kind == "residual":
        return build_quantizer("residual", dim=dim, num_levels=4, quantizer="vq",
                               quantizer_kwargs={"codebook_size": k, "use_ema": True, "ema_decay": 0.99})
    if kind == "attention":
        return build_quantizer("attention", dim=dim, codebook_size=k, train_chunk_size=1024)
    if kind == "multiscale":  # scales for a 16x16 latent; 32x32 latents use FLUX_SCALES (see main)
        return build_quantizer("multiscale", dim=dim, quantizer="attention",
                               quantizer_kwargs={"codebook_size": k, "train_chunk_size": 1024})
    raise ValueError(f"unknown quantizer kind {kind!r}")


def theirs(kind: str, size: str, dim: int) -> nn.Module | None:
    """The matching ``vector-quantize-pytorch`` module (None when there is none or it is not installed:
    ``pip install -e ".[bench]"`` adds it)."""
    try:
        import vector_quantize_pytorch as vqp
    except ImportError:
        return None

    k, levels, bits = SIZES[size]
    if kind == "vq":
        return vqp.VectorQuantize(dim=dim, codebook_size=k, decay=0.99, commitment_weight=0.25, accept_image_fmap=True)
    if kind == "fsq":
        return vqp.FSQ(levels=levels, dim=dim, channel_first=True)
    if kind == "lfq":
        return vqp.LFQ(dim=dim, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                       channel_first=True)
    if kind == "residual":
        # its accept_image_fmap path fails on 32x32 maps (vqp 1.x); give it (B, H*W, C) tokens instead
        return _ChannelsLastTokens(vqp.ResidualVQ(dim=dim, num_quantizers=4, codebook_size=k, decay=0.99,
                                                  commitment_weight=0.25))
    return None


class _ChannelsLastTokens(nn.Module):
    """``(B, C, H, W)`` -> ``(B, H*W, C)`` before the wrapped module (a strided view)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, z: torch.Tensor):
        return self.module(z.flatten(2).transpose(1, 2))


def dense_gib(impl: str, kind: str, mode: str, tokens: int, codes: int) -> float:
    """Size of the dense (tokens, codes) float32 matrix a case materialises (0 when it does not)."""
    dense = (impl == "ours" and kind == "gumbel") or (
        impl == "theirs" and (kind in ("vq", "residual") or (kind == "lfq" and mode == "train"))
    )
    return tokens * codes * 4 / 2**30 if dense else 0.0


def format_table(rows: list[dict[str, object]]) -> str:
    """Markdown table of benchmark rows (from :func:`main` / :func:`run_case`)."""
    head = "| quantizer | codes | grid | mode | ours (ms) | ours peak MiB | vqp (ms) | vqp peak MiB | speedup |"
    lines = [head, "|" + "---|" * 9]

    def fmt(v, spec, scale=1.0):
        return v if isinstance(v, str) else format(v * scale, spec)

    for r in rows:
        lines.append(
            f"| {r['quantizer']} | {r['codes']} | {r['grid']} | {r['mode']} | {fmt(r['ours_s'], '.3f', 1e3)} | "
            f"{fmt(r['ours_mib'], '.1f')} | {fmt(r['theirs_s'], '.3f', 1e3)} | {fmt(r['theirs_mib'], '.1f')} | "
            f"{fmt(r['speedup'], '.2f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run: 16x16 grid, 1k/16k codes, 1 repeat")
    parser.add_argument("--quantizers", default="vq,gumbel,fsq,lfq", help="comma-separated subset")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=16, help="latent channels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="fast cases repeat until this many seconds have passed (at most 200 calls)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: robust on a shared CPU)")
    parser.add_argument("--max-dense-gib", type=float, default=1.0,
                        help="skip cases that materialise a dense (tokens, codes) matrix larger than this")
    parser.add_argument("--no-compare", action="store_true", help="do not run vector-quantize-pytorch")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    grids = [16] if args.quick else [16, 32]
    sizes = ["1k", "16k"] if args.quick else ["1k", "16k", "64k"]
    repeats = 1 if args.quick else args.repeats
    rows = []
    for kind in args.quantizers.split(","):
        for size in sizes:
            for grid in grids:
                torch.manual_seed(0)
                z = torch.randn(args.batch, args.dim, grid, grid)
                tokens = args.batch * grid * grid
                mine = ours(kind, size, args.dim)
                if kind == "multiscale" and grid == 32:
                    mine = build_quantizer("multiscale", **{**mine.config, "scales": list(FLUX_SCALES)})
                other = None if args.no_compare else theirs(kind, size, args.dim)
                for mode in ("train", "eval"):
                    row = {"quantizer": kind, "codes": mine.codebook_size, "grid": f"{grid}x{grid}", "mode": mode}
                    for impl, module, key in (("ours", mine, "ours"), ("theirs", other, "theirs")):
                        gib = dense_gib(impl, kind, mode, tokens, mine.codebook_size)
                        if module is None:
                            row[key + "_s"] = row[key + "_mib"] = "n/a"
                        elif gib > args.max_dense_gib:
                            row[key + "_s"] = row[key + "_mib"] = f"skipped ({gib:.0f} GiB dense)"
                        else:
                            res = run_case(f"{impl}-{kind}-{size}", module, z, mode, repeats=repeats,
                                           min_total_s=args.min_time)
                            row[key + "_s"], row[key + "_mib"] = res["time_s"], res["peak_mib"]
                    ok = all(isinstance(row[k], float) for k in ("ours_s", "theirs_s"))
                    row["speedup"] = row["theirs_s"] / row["ours_s"] if ok else "n/a"
                    rows.append(row)
                    print(format_table([row]).splitlines()[-1], flush=True)
    print()
    print(f"batch {args.batch}, {args.dim} latent channels, {args.threads} threads, best of >= {repeats} calls; "
          "peak = allocated CPU tensor memory (torch.profiler profile_memory); "
          "speedup = vector-quantize-pytorch time / ours; vqp = vector-quantize-pytorch "
          f"{_vqp_version()}.")
    print()
    print(format_table(rows))
    return 0


def _vqp_version() -> str:
    try:
        from importlib.metadata import version

        return version("vector-quantize-pytorch")
    except Exception:  # noqa: BLE001 - version string only
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())
