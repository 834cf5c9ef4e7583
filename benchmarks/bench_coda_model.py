"""Encode / decode throughput of CodaVQModel with the FLUX-VAE architecture (random weights).

Builds ``AutoencoderKL`` with the FLUX.1 VAE config (widths 128-256-512-512, 2 layers per block, 16 latent
channels, no quant convs) and :meth:`CodaVQModel.from_vae` with the ``flux-vae`` preset (10 levels,
scales 1..32, one shared codebook of ``--codebook-size`` codes, LoRA rank 32 on encoder and decoder).
At 256x256 that is 32x32 latents and 2,240 tokens per image.

Reports, per batch size, the best of ``--repeats`` timed rounds after one warm-up round (eval, ``no_grad``;
the calls of a round are interleaved, so every column sees the same background load): ``encode`` (whole
:meth:`CodaVQModel.encode`), its two parts ``vae_encoder`` (:meth:`encode_latents`) and ``quantizer``
(:meth:`CodaVQModel.quantize` on those latents, without eval losses, as in ``encode``), ``decode``
(:meth:`CodaVQModel.decode` from indices), images/s, tokens/s and the quantizer's share of encode time
``quantizer / (vae_encoder + quantizer)`` (both also over ``--share-repeats`` extra rounds of the two alone).

Options: ``--merged`` (LoRA fused, the inference checkpoint), ``--clock cpu`` (process CPU time: with one
thread it leaves out the time other processes hold the core), ``--compile`` (adds ``torch.compile``-d encode
and decode, inductor, and their speed-up over eager in the same rounds), ``--train-step`` (adds a training
step: forward, L1 + quantizer losses, backward, AdamW step; with ``--compile`` also compiled),
``--autocast bf16|fp16`` and ``--device cuda`` (the GPU configuration).

    OMP_NUM_THREADS=1 python benchmarks/bench_coda_model.py --threads 1 --clock cpu --batch-sizes 1
    python benchmarks/bench_coda_model.py --device cuda --batch-sizes 12 --train-step --autocast bf16   # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizers import best_times, save_report  # noqa: E402  (the one interleaved timing implementation)

from coda_hf.models import CodaVQModel  # noqa: E402
from coda_hf.models.presets import coda_quantizer  # noqa: E402
from coda_hf.quantizers.multiscale import FLUX_SCALES  # noqa: E402

FLUX_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False,
    scaling_factor=0.3611, shift_factor=0.1159,
)  # fmt: skip
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(codebook_size: int, lora_rank: int, merged: bool) -> CodaVQModel:
    torch.manual_seed(0)
    vae = AutoencoderKL(**FLUX_VAE_CONFIG)
    lora = {"rank": lora_rank, "alpha": lora_rank, "target_modules": ["conv1", "conv2"]}
    model = CodaVQModel.from_vae(vae, preset="flux-vae", quantizer=coda_quantizer(FLUX_SCALES, codebook_size), lora=lora)
    if merged:
        model.merge_lora()
    return model.eval()


def _train_step(model: CodaVQModel, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    """One training step: forward, L1 reconstruction + quantizer losses, backward, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    out = model(x)
    loss = (out.sample - x).abs().mean() + out.loss
    loss.backward()
    optimizer.step()
    return loss.detach()


def time_batch(model: CodaVQModel, batch: int, resolution: int, repeats: int, clock: str = "wall",
               device: str = "cpu", compile_model: bool = False, autocast: str = "none",
               share_repeats: int = 0) -> dict:  # fmt: skip
    """Timings of one batch size (eval, no_grad), interleaved rounds; ``share_repeats`` more rounds of the
    two parts of encode only (VAE encoder, quantizer: cheap next to decode) for a steadier share."""
    x = (torch.rand(batch, 3, resolution, resolution) * 2 - 1).to(device)
    cast = AUTOCAST[autocast]
    amp = (lambda: torch.autocast(torch.device(device).type, dtype=cast)) if cast else contextlib.nullcontext
    with torch.no_grad(), amp():
        z = model.encode_latents(x)
        enc = model.encode(x)
        fns = {
            "vae_encoder": lambda: model.encode_latents(x),
            "quantizer": lambda: model.quantize(z, with_losses=False),  # what encode runs
            "encode": lambda: model.encode(x),
            "decode": lambda: model.decode(enc.indices),
        }
        row = {"batch": batch, "tokens": enc.token_ids.shape[1]}
        if compile_model:
            # dynamic=False: a shape-generic decode graph hits an inductor lowering error in the bicubic resize
            compiled = {"encode": torch.compile(model.encode, dynamic=False), "decode": torch.compile(model.decode, dynamic=False)}
            for name, fn in compiled.items():  # the first call compiles: timed on its own
                start = time.perf_counter()
                fn(x if name == "encode" else enc.indices)
                row[f"{name}_compile_s"] = time.perf_counter() - start
            fns["encode_compiled"] = lambda: compiled["encode"](x)
            fns["decode_compiled"] = lambda: compiled["decode"](enc.indices)
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        times = best_times(fns, repeats=repeats, clock=clock, sync=sync)
        if share_repeats:
            parts = {k: fns[k] for k in ("vae_encoder", "quantizer")}
            more = best_times(parts, repeats=share_repeats, clock=clock, warmup=0, sync=sync)
            times.update({k: min(times[k], v) for k, v in more.items()})
    row.update({f"{k}_s": v for k, v in times.items()})
    row.update(encode_img_s=batch / times["encode"], decode_img_s=batch / times["decode"],
               encode_tokens_s=batch * row["tokens"] / times["encode"],
               quantizer_share=times["quantizer"] / (times["vae_encoder"] + times["quantizer"]))  # fmt: skip
    if compile_model:
        row.update(encode_speedup=times["encode"] / times["encode_compiled"],
                   decode_speedup=times["decode"] / times["decode_compiled"])  # fmt: skip
    return row


def time_train_step(model: CodaVQModel, batch: int, resolution: int, repeats: int, clock: str = "wall",
                    device: str = "cpu", compile_model: bool = False, autocast: str = "none") -> dict:  # fmt: skip
    """Training-step throughput (images/s), eager and (``compile_model``) compiled, and peak GPU memory."""
    x = (torch.rand(batch, 3, resolution, resolution) * 2 - 1).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    cast = AUTOCAST[autocast]
    amp = (lambda: torch.autocast(torch.device(device).type, dtype=cast)) if cast else contextlib.nullcontext

    def step(fn):
        with amp():
            return fn(model, optimizer, x)

    fns = {"train_step": lambda: step(_train_step)}
    if compile_model:
        compiled = torch.compile(_train_step, dynamic=False)
        fns["train_step_compiled"] = lambda: step(compiled)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = best_times(fns, repeats=repeats, clock=clock, sync=sync)
    model.eval()
    row = {"batch": batch, **{f"{k}_s": v for k, v in times.items()}, "train_img_s": batch / times["train_step"]}
    if compile_model:
        row["train_speedup"] = times["train_step"] / times["train_step_compiled"]
    if device.startswith("cuda"):
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def format_table(rows: list[dict]) -> str:
    head = ("| batch | tokens/img | encode s | VAE encoder s | quantizer s | quantizer share | decode s "
            "| encode img/s | decode img/s | encode tokens/s |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [
        f"| {r['batch']} | {r['tokens']} | {r['encode_s']:.3f} | {r['vae_encoder_s']:.3f} | {r['quantizer_s']:.3f} "
        f"| {100 * r['quantizer_share']:.1f}% | {r['decode_s']:.3f} | {r['encode_img_s']:.2f} | {r['decode_img_s']:.2f} "
        f"| {r['encode_tokens_s']:.0f} |"
        for r in rows
    ]
    compiled = [r for r in rows if "encode_speedup" in r]
    if compiled:
        lines += ["", "| batch | encode s (eager / compiled) | decode s (eager / compiled) | speed-up encode / decode "
                      "| compile s (encode / decode) |", "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['batch']} | {r['encode_s']:.3f} / {r['encode_compiled_s']:.3f} | {r['decode_s']:.3f} / "
                  f"{r['decode_compiled_s']:.3f} | {r['encode_speedup']:.2f}x / {r['decode_speedup']:.2f}x | "
                  f"{r['encode_compile_s']:.0f} / {r['decode_compile_s']:.0f} |" for r in compiled]  # fmt: skip
    return "\n".join([head, *lines])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--merged", action="store_true", help="fuse LoRA into the convs first (inference checkpoint)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--share-repeats", type=int, default=10,
                   help="extra interleaved rounds of the VAE encoder and the quantizer alone (quantizer share)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--compile", action="store_true", help="also time torch.compile-d encode / decode (inductor)")
    p.add_argument("--train-step", action="store_true", help="also time a training step (images/s)")
    p.add_argument("--autocast", choices=sorted(AUTOCAST), default="none")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU configuration)")
    p.add_argument("--output", default=None, help="also write the configuration and rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(args.codebook_size, args.lora_rank, args.merged).to(args.device)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} thread(s), {args.clock} clock, "
          f"{args.resolution}x{args.resolution}, codebook {args.codebook_size}, LoRA rank {args.lora_rank}"
          f"{' (merged)' if args.merged else ''}, autocast {args.autocast}, best of {args.repeats}", flush=True)  # fmt: skip
    kw = dict(clock=args.clock, device=args.device, compile_model=args.compile, autocast=args.autocast)
    rows = [time_batch(model, b, args.resolution, args.repeats, share_repeats=args.share_repeats, **kw)
            for b in args.batch_sizes]
    print(format_table(rows), flush=True)
    if args.train_step:
        for b in args.batch_sizes:
            r = time_train_step(model, b, args.resolution, args.repeats, **kw)
            extra = "".join(f", {k} {v:.3f}" for k, v in r.items() if k not in ("batch", "train_img_s"))
            print(f"training step, batch {b}: {r['train_img_s']:.3f} images/s{extra}", flush=True)
            rows.append(r)
    save_report({"config": vars(args), "torch": torch.__version__, "rows": rows}, args.output)
    return rows


if __name__ == "__main__":
    main()
