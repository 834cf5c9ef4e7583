"""The attention quantizer's eval search: the float32 search against the bf16-screened exact one.

Per codebook size ``--codebook-sizes`` and token count ``--token-counts``, on the queries and keys of an
:class:`~coda_hf.quantizers.AttentionQuantizer` with 16 latent channels, as CODA-FLUX: ``--init aligned``
(untrained, hidden 16) or ``--init data`` (the ``"data"`` layout, values sampled with replacement from
0.8 x K Gaussian features, so duplicate codes and the layout's cancelling score terms occur, as after a
data initialisation):
the float32 search (:func:`~coda_hf.quantizers.attention_fused.attention_argmax`, the automatic token chunk)
and the screen (:func:`~coda_hf.quantizers.attention_screen.screened_argmax`, keys prepared once, as the
quantizer caches them), best of ``--repeats`` interleaved rounds (``--clock``), their ratio, the share
of tokens where each one's index equals the argmax of float64 scores (one float64 matrix product: it can
itself break a float64 tie either way) and the share where the two agree. The library uses the screen
from ``SCREEN_MIN_CODES`` codes on CPUs with native bf16 products; this script times both anywhere.

    OMP_NUM_THREADS=1 python benchmarks/bench_attention_screen.py --clock cpu --output benchmarks/results/deploy/attention_screen.json
    OMP_NUM_THREADS=1 python benchmarks/bench_attention_screen.py --clock cpu --init data --output benchmarks/results/deploy/attention_screen_data.json
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizers import best_times, save_report  # noqa: E402

from coda_hf.quantizers import AttentionQuantizer  # noqa: E402
from coda_hf.quantizers.attention import ATTENTION_CHUNK_ELEMENTS  # noqa: E402
from coda_hf.quantizers.attention_fused import attention_argmax  # noqa: E402
from coda_hf.quantizers.attention_screen import ScreenKeys, native_bf16, screened_argmax  # noqa: E402


def make_quantizer(codes: int, init: str) -> AttentionQuantizer:
    torch.manual_seed(0)
    if init == "aligned":
        return AttentionQuantizer(dim=16, codebook_size=codes).eval()
    quantizer = AttentionQuantizer(dim=16, codebook_size=codes, init="data", init_kmeans_iters=0).train()
    quantizer.initialize(torch.randn(1, 16, 1, int(0.8 * codes)), torch.Generator().manual_seed(0))
    return quantizer.eval()


def measure(tokens: int, codes: int, args) -> dict:
    quantizer = make_quantizer(codes, args.init)
    with torch.no_grad():
        queries, keys = quantizer.queries(torch.randn(tokens, 16)), quantizer.keys()
        screen, chunk = ScreenKeys.build(keys), max(1, ATTENTION_CHUNK_ELEMENTS // codes)
        times = best_times({"float32": lambda: attention_argmax(queries, keys, chunk),
                            "screen": lambda: screened_argmax(queries, screen)},
                           repeats=args.repeats, clock=args.clock)  # fmt: skip
        exact = (queries.double() @ keys.double().t()).argmax(-1)
        found = {"float32": attention_argmax(queries, keys, chunk), "screen": screened_argmax(queries, screen)}
    share = {name: float((ids == exact).float().mean()) for name, ids in found.items()}
    return {"tokens": tokens, "codes": codes, "float32_s": times["float32"], "screen_s": times["screen"],
            "speedup": times["float32"] / times["screen"], "float32_exact": share["float32"],
            "screen_exact": share["screen"], "screen_float32": float((found["screen"] == found["float32"]).float().mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook-sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    p.add_argument("--token-counts", type=int, nargs="+", default=[680, 2240])
    p.add_argument("--init", choices=["aligned", "data"], default="aligned", help="the codebook (see above)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--output", default=None, help="JSON of the measurements")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(n, k, args) for n in args.token_counts for k in args.codebook_sizes]
    print(f"# init {args.init}, torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, best of {args.repeats}, "
          f"native bf16: {native_bf16()}")  # fmt: skip
    print("| tokens | codes | float32 search s | screened s | speed-up | float32 = float64 | screened = float64 "
          "| screened = float32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['codes']} | {r['float32_s']:.4f} | {r['screen_s']:.4f} | {r['speedup']:.2f}x "
              f"| {100 * r['float32_exact']:.2f}% | {100 * r['screen_exact']:.2f}% | {100 * r['screen_float32']:.2f}% |")  # fmt: skip
    report = {"config": vars(args), "torch": torch.__version__, "rows": rows}
    return save_report(report, args.output)


if __name__ == "__main__":
    main()
