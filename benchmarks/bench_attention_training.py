"""Training cost of CODA's attention quantizer at CODA-FLUX shape: fused kernel vs the reference chunked path.

CODA-FLUX: one shared codebook of 65,536 codes, 16 latent channels, FLUX scales 1..32 on 32x32 latents
(2,240 tokens per image), batch 8. One training call is the MultiScaleResidualQuantizer forward in train
mode (IBQ output, ``quant`` and ``entropy`` losses with per-sample and batch entropy) plus the backward of
``sum(quantized * g) + loss`` for a fixed random ``g``.

Paths (same seed, same parameters):

* ``reference``: ``fused_threshold=None``, ``train_chunk_size=--chunk-size`` (token chunks under activation
  checkpointing; the ``(chunk, codes)`` soft assignment is held per chunk);
* ``fused``: ``fused_threshold=0``, :mod:`coda_hf.quantizers.attention_fused` (tiles over tokens and codes,
  online softmax, only per-token statistics kept).

Per path: peak extra memory of forward + backward (CPU: ``torch.profiler`` replay,
:func:`bench_quantizers.peak_memory_mib`; GPU: ``torch.cuda.max_memory_allocated``), time of forward and of
forward + backward (best of ``--repeats``, interleaved, ``--clock``), and for fused against reference:
identical indices at every level, largest relative difference of each loss and of every gradient.

    OMP_NUM_THREADS=1 python benchmarks/bench_attention_training.py --clock cpu
    python benchmarks/bench_attention_training.py --device cuda --batch 12   # GPU configuration
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizers import best_times, peak_memory_mib, save_report  # noqa: E402  (the one timing / profiler implementation)

from coda_hf.quantizers import MultiScaleResidualQuantizer  # noqa: E402
from coda_hf.quantizers.multiscale import FLUX_SCALES  # noqa: E402


def build(args, fused: bool) -> MultiScaleResidualQuantizer:
    torch.manual_seed(0)
    inner = {"codebook_size": args.codebook_size, "fused_threshold": 0 if fused else None,
             "train_chunk_size": 0 if fused else args.chunk_size}  # fmt: skip
    return MultiScaleResidualQuantizer(dim=args.dim, scales=list(args.scales), quantizer_kwargs=inner).to(args.device).train()


def train_call(quantizer, z: torch.Tensor, g: torch.Tensor, backward: bool = True):
    """One forward (+ backward): ``(output, input gradient, {name: parameter gradient})``."""
    quantizer.zero_grad(set_to_none=True)
    x = z.detach().clone().requires_grad_(True)
    out = quantizer(x)
    if not backward:
        return out, None, {}
    ((out.quantized * g).sum() + out.loss).backward()
    return out, x.grad, {n: p.grad for n, p in quantizer.named_parameters() if p.grad is not None}


def peak_mib(fn, device: str) -> float:
    if device == "cpu":
        return peak_memory_mib(fn)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def compare(fused_result, reference_result) -> dict:
    (fo, fgz, fgp), (ro, rgz, rgp) = fused_result, reference_result
    return {
        "indices_identical": all(torch.equal(a, b) for a, b in zip(fo.indices, ro.indices)),
        "loss_rel_diff": max(rel_diff(fo.losses[k], ro.losses[k]) for k in ro.losses),
        "input_grad_rel_diff": rel_diff(fgz, rgz),
        "param_grad_rel_diff": max(rel_diff(fgp[k], rgp[k]) for k in rgp),
    }


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    side = args.scales[-1]
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(args.batch, args.dim, side, side, generator=gen).to(args.device)
    g = torch.randn(args.batch, args.dim, side, side, generator=gen).to(args.device)
    paths = ["fused"] if args.skip_reference else ["fused", "reference"]
    quantizers = {p: build(args, p == "fused") for p in paths}
    rows, results = {}, {}
    for path, q in quantizers.items():
        rows[path] = {"peak_mib": peak_mib(lambda q=q: train_call(q, z, g), args.device)}
        results[path] = train_call(q, z, g)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    fns = {f"{p} fwd": (lambda q=q: train_call(q, z, g, backward=False)) for p, q in quantizers.items()}
    fns.update({f"{p} fwd+bwd": (lambda q=q: train_call(q, z, g)) for p, q in quantizers.items()})
    times = best_times(fns, repeats=args.repeats, clock=args.clock, warmup=0, sync=sync)
    for path in paths:
        rows[path].update(forward_s=times[f"{path} fwd"], train_s=times[f"{path} fwd+bwd"])
        rows[path]["images_per_s"] = args.batch / rows[path]["train_s"]
    report = {"config": vars(args), "tokens_per_image": sum(s * s for s in args.scales), "rows": rows}
    if "reference" in results:
        report["fused_vs_reference"] = compare(results["fused"], results["reference"])
    return report


def format_report(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"# attention quantizer training, {cfg['codebook_size']} codes, dim {cfg['dim']}, batch {cfg['batch']} x "
        f"{report['tokens_per_image']} tokens, {cfg['device']}, torch {torch.__version__}, {cfg['threads']} thread(s), "
        f"{cfg['clock']} clock, best of {cfg['repeats']}",
        "| path | peak extra MiB (fwd+bwd) | forward s | forward+backward s | images/s |",
        "|---|---|---|---|---|",
    ]
    for path, r in report["rows"].items():
        lines.append(f"| {path} | {r['peak_mib']:.1f} | {r['forward_s']:.2f} | {r['train_s']:.2f} | {r['images_per_s']:.3f} |")
    if "fused_vs_reference" in report:
        c = report["fused_vs_reference"]
        lines.append(
            f"# fused vs reference: indices identical {c['indices_identical']}; largest relative difference: losses "
            f"{c['loss_rel_diff']:.1e}, input gradient {c['input_grad_rel_diff']:.1e}, parameter gradients "
            f"{c['param_grad_rel_diff']:.1e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--dim", type=int, default=16, help="latent channels")
    p.add_argument("--scales", type=int, nargs="+", default=list(FLUX_SCALES), help="level sides (last: latent side)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=1024, help="train_chunk_size of the reference path")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU configuration)")
    p.add_argument("--skip-reference", action="store_true", help="time the fused path only")
    p.add_argument("--output", default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    report = run(args)
    print(format_report(report), flush=True)
    return save_report(report, args.output)


if __name__ == "__main__":
    main()
