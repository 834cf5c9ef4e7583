"""Encode / decode throughput of CodaVQModel with the FLUX-VAE architecture (random weights) on CPU.

Builds ``AutoencoderKL`` with the FLUX.1 VAE config (widths 128-256-512-512, 2 layers per block, 16 latent
channels, no quant convs) and :meth:`CodaVQModel.from_vae` with the ``flux-vae`` preset (10 levels,
scales 1..32, one shared codebook of ``--codebook-size`` codes, LoRA rank 32 on encoder and decoder).
At 256x256 that is 32x32 latents and 2,240 tokens per image.

Reports, per batch size, the best of ``--repeats`` timed calls after one warm-up (eval, ``no_grad``):
``encode`` (whole :meth:`CodaVQModel.encode`), its two parts ``vae_encoder`` (:meth:`encode_latents`) and
``quantizer`` (:meth:`CodaVQModel.quantize` on those latents, without eval losses, as in ``encode``), ``decode`` (:meth:`CodaVQModel.decode` from indices),
images/s, and the quantizer's share of encode time (target: under 10%).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_coda_model.py --batch-sizes 1 2
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL

from coda_hf.models import CodaVQModel
from coda_hf.models.presets import coda_quantizer
from coda_hf.quantizers.multiscale import FLUX_SCALES

FLUX_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False,
    scaling_factor=0.3611, shift_factor=0.1159,
)  # fmt: skip


def best_time(fn, repeats: int) -> float:
    """Best wall time (s) of ``repeats`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_model(codebook_size: int, lora_rank: int, merged: bool) -> CodaVQModel:
    torch.manual_seed(0)
    vae = AutoencoderKL(**FLUX_VAE_CONFIG)
    lora = {"rank": lora_rank, "alpha": lora_rank, "target_modules": ["conv1", "conv2"]}
    model = CodaVQModel.from_vae(vae, preset="flux-vae", quantizer=coda_quantizer(FLUX_SCALES, codebook_size), lora=lora)
    if merged:
        model.merge_lora()
    return model.eval()


def time_batch(model: CodaVQModel, batch: int, resolution: int, repeats: int) -> dict:
    """Timings of one batch size (eval, no_grad)."""
    x = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    with torch.no_grad():
        z = model.encode_latents(x)
        enc = model.encode(x)
        t_vae = best_time(lambda: model.encode_latents(x), repeats)
        t_q = best_time(lambda: model.quantize(z, with_losses=False), repeats)  # what encode runs
        t_enc = best_time(lambda: model.encode(x), repeats)
        t_dec = best_time(lambda: model.decode(enc.indices), repeats)
    return {
        "batch": batch, "tokens": enc.token_ids.shape[1], "encode_s": t_enc, "vae_encoder_s": t_vae,
        "quantizer_s": t_q, "decode_s": t_dec, "encode_img_s": batch / t_enc, "decode_img_s": batch / t_dec,
        "quantizer_share": t_q / (t_vae + t_q),
    }  # fmt: skip


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    model = build_model(args.codebook_size, args.lora_rank, args.merged)
    return [time_batch(model, batch, args.resolution, args.repeats) for batch in args.batch_sizes]


def format_table(rows: list[dict]) -> str:
    head = ("| batch | tokens/img | encode s | VAE encoder s | quantizer s | quantizer share | decode s "
            "| encode img/s | decode img/s |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [
        f"| {r['batch']} | {r['tokens']} | {r['encode_s']:.3f} | {r['vae_encoder_s']:.3f} | {r['quantizer_s']:.3f} "
        f"| {100 * r['quantizer_share']:.1f}% | {r['decode_s']:.3f} | {r['encode_img_s']:.2f} | {r['decode_img_s']:.2f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--merged", action="store_true", help="fuse LoRA into the convs first (inference checkpoint)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.resolution}x{args.resolution}, "
          f"codebook {args.codebook_size}, LoRA rank {args.lora_rank}{' (merged)' if args.merged else ''}")  # fmt: skip
    print(format_table(run(args)))


if __name__ == "__main__":
    main()
