"""Peak memory and time of the attention quantizer's eval search at CODA-FLUX size (script, not a test).

CODA-FLUX: 65,536 codes, 16 latent channels, 2,240 tokens per image (10 multi-scale levels of a 32x32
latent). A naive eval computes the full ``(2240, 65536)`` softmax: 0.55 GiB per float32 matrix, > 1 GiB with
the logits. :class:`~coda_hf.quantizers.AttentionQuantizer` searches in token chunks instead.

Cases (all ``torch.no_grad``, eval mode, batch ``--batch``):

* ``attention``: one AttentionQuantizer call on the 2,240 tokens laid out as a ``(B, 16, 1, 2240)`` latent;
* ``multiscale``: MultiScaleResidualQuantizer with FLUX scales on a ``(B, 16, 32, 32)`` latent (same 2,240
  tokens, plus the area / bicubic resampling), shared codebook;

each with ``eval_losses`` on (default: chunked losses too) and off (indices only); plus, for contrast, the
unchunked search (``chunk_size=0``, the whole ``(tokens, codes)`` score matrix at once; skip: ``--no-unchunked-row``).

Memory, two methods, both relative to what is live before the call:

* ``profiler``: peak of allocated CPU tensor memory during the call, replaying ``torch.profiler`` memory
  events (``profile_memory=True``) in time order (:func:`bench_quantizers.peak_memory_mib`);
* ``rss``: Linux peak resident set size (``VmHWM`` after resetting it through ``/proc/self/clear_refs``)
  minus the RSS before the call; includes allocator and library overhead, may under-count reused pages.

Correctness: after the measured calls, the same quantizer is run unchunked (``chunk_size=0``) and its indices
must be identical. Time: best of ``--repeats`` calls after one warm-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_attention_memory.py
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizers import peak_memory_mib  # noqa: E402  (the one profiler-replay implementation)

from coda_hf.quantizers import AttentionQuantizer, MultiScaleResidualQuantizer  # noqa: E402
from coda_hf.quantizers.multiscale import FLUX_SCALES  # noqa: E402


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_peak_mib(fn) -> float | None:
    """Peak RSS growth (MiB) during ``fn()``; ``None`` where ``/proc/self/clear_refs`` is unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    out = fn()
    del out
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return (peak - before) / 1024


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--codebook-dim", type=int, default=16)
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: automatic)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="target peak extra memory")
    p.add_argument("--no-unchunked-row", action="store_true", help="skip measuring the unchunked search (> 1 GiB)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    inner = dict(
        codebook_size=args.codebook_size,
        codebook_dim=args.codebook_dim,
        hidden_dim=args.hidden_dim,
        chunk_size=args.chunk_size,
    )
    side = FLUX_SCALES[-1]
    tokens = sum(s * s for s in FLUX_SCALES)
    gen = torch.Generator().manual_seed(1)
    cases = {
        "attention": (
            lambda losses: AttentionQuantizer(dim=args.dim, eval_losses=losses, **inner),
            torch.randn(args.batch, args.dim, 1, tokens, generator=gen),
        ),
        "multiscale": (
            lambda losses: MultiScaleResidualQuantizer(
                dim=args.dim, scales=list(FLUX_SCALES), quantizer_kwargs={**inner, "eval_losses": losses}
            ),
            torch.randn(args.batch, args.dim, side, side, generator=gen),
        ),
    }
    naive_gib = args.batch * tokens * args.codebook_size * 4 / 2**30
    print(
        f"# AttentionQuantizer eval, {args.codebook_size} codes, dim {args.dim}, codebook_dim {args.codebook_dim}, "
        f"hidden {args.hidden_dim}, batch {args.batch} x {tokens} tokens, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(f"# one dense (tokens, codes) float32 matrix would take {naive_gib:.2f} GiB")
    print("| case | eval_losses | chunk (tokens) | peak MiB (profiler) | peak MiB (rss) | time s | indices == unchunked |")
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for name, (build, z) in cases.items():
        for losses in (True, False):
            torch.manual_seed(0)
            q = build(losses).eval()
            attn = q if isinstance(q, AttentionQuantizer) else q.quantizers[0]
            with torch.no_grad():
                call = functools.partial(q, z)
                call()  # warm-up outside the measured region
                prof = peak_memory_mib(call)
                rss = rss_peak_mib(call)
                seconds = best_time(call, args.repeats)
                chunked = q(z).indices
                chunk = attn._eval_chunk(z.shape[0] * z.shape[2] * z.shape[3])
                # Reference: the unchunked search (whole score matrix at once), outside the measured region.
                attn.chunk_size, attn.eval_losses = 0, False
                reference = q(z).indices
            same = all(torch.equal(a, b) for a, b in zip(chunked, reference))
            ok = same and prof < args.budget_mib
            failures += not ok
            rss_txt = "n/a" if rss is None else f"{rss:.1f}"
            print(f"| {name} | {losses} | {chunk} | {prof:.1f} | {rss_txt} | {seconds:.3f} | {same} |")
    if not args.no_unchunked_row:  # for contrast: the same search with the whole score matrix at once
        torch.manual_seed(0)
        build, z = cases["attention"]
        q = build(False).eval()
        q.chunk_size = 0
        with torch.no_grad():
            call = functools.partial(q, z)
            prof = peak_memory_mib(call)
            seconds = best_time(call, 1)
        print(f"| attention, unchunked (chunk_size=0) | False | {tokens * args.batch} | {prof:.1f} | - | {seconds:.3f} | - |")
    print(f"# target: profiler peak < {args.budget_mib:g} MiB and identical indices; {failures} case(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
