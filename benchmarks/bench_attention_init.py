"""Data initialisation of the multi-scale attention codebook: eval utilization before any training (script).

The reproduction's attention rows (``benchmarks/reproduce.py``) start from ``init="data"``: the codebook is
drawn from the level inputs of ``data_init_images`` training images. This script builds exactly that
initialisation (``quantizer.initialize``, the path the training loop takes, on posterior-mean latents of
the SAME augmented training crops the loop draws: ``TrainBatches`` + ``build_transform``) for each
``init_kmeans_iters`` x ``init_min_usage`` value, and reports on the held-out eval latents: utilization (fraction of the codes
used over the whole eval set), perplexity, the latent MSE and the PSNR of the decoded eval tiles.

    python benchmarks/bench_attention_init.py --vae runs/repro/runs/vae \\
        --data runs/repro/data/photos/tiles64 --kmeans-iters 0 5 --min-usage 0 0.05 --seeds 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
from bench_attention_codebook_lr import encode, evaluate

from coda_hf.metrics.image_quality import psnr, to_uint8_range
from coda_hf.models.coda_vq import CodaVQModel
from coda_hf.quantizers import build_quantizer
from coda_hf.training.config import TrainingConfig
from coda_hf.training.data import TrainBatches, build_transform
from coda_hf.training.models import data_initialize


@torch.no_grad()
def eval_psnr(model: CodaVQModel, quantizer, images: torch.Tensor, batch_size: int = 64) -> float:
    """Mean per-image PSNR of the decoded quantized eval latents (``images`` in ``[-1, 1]``)."""
    values = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        q = quantizer(model.encode_latents(x)).quantized
        values.append(psnr(to_uint8_range(model.decode_latents(q)), to_uint8_range(x)))  # as coda-hf evaluate
    return float(torch.cat(values).mean())


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vae", required=True, help="a saved AutoencoderKL (its config's shift/scale normalise the latents)")
    p.add_argument("--data", required=True, help="image data with train and eval splits (e.g. prepare-photos tiles)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--init-images", type=int, default=1024, help="training images the codebook is drawn from")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size the crops are drawn in")
    p.add_argument("--crop-scale-min", type=float, default=0.8, help="the training crops (1.0: centre crops)")
    p.add_argument("--eval-images", type=int, default=None, help="default: all")
    p.add_argument("--kmeans-iters", type=int, nargs="+", default=[0, 5])
    p.add_argument("--min-usage", type=float, nargs="+", default=[0.0], help="init_min_usage values")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--codebook-size", type=int, default=4096)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 11, 16])
    p.add_argument("--init-sharpness", type=float, default=100.0)
    p.add_argument("--no-psnr", action="store_true", help="skip decoding the eval tiles")
    p.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    model = CodaVQModel.from_vae(args.vae, quantizer={"name": "vq", "codebook_size": 2}, lora={"rank": 0}).eval()
    eval_latents = encode(model, args.data, "eval", args.resolution, args.eval_images)
    images = None
    if not args.no_psnr:
        from coda_hf.metrics.eval_data import image_batches, load_image_dataset

        dataset = load_image_dataset(args.data, split="eval")
        images = torch.cat(list(image_batches(dataset, args.resolution, 64, args.eval_images)))
    rows = []
    for seed in args.seeds:
        config = TrainingConfig(model="coda", pretrained_vae=args.vae, train_data_dir=args.data, resolution=args.resolution,
                                train_batch_size=args.batch_size, seed=seed, crop_scale_min=args.crop_scale_min)  # fmt: skip
        for iters, min_usage in itertools.product(args.kmeans_iters, args.min_usage):
            model.quantizer = build_quantizer(
                "multiscale", dim=eval_latents.shape[1], scales=args.scales, quantizer="attention",
                quantizer_kwargs={"codebook_size": args.codebook_size, "init": "data", "init_kmeans_iters": iters,
                                  "init_min_usage": min_usage, "init_sharpness": args.init_sharpness,
                                  "entropy_weight": 0.0},
            )  # fmt: skip
            batches = TrainBatches(config, build_transform(config))
            start = time.perf_counter()
            used = data_initialize(model, batches, args.init_images, seed=seed)
            seconds = time.perf_counter() - start
            row = {"seed": seed, "kmeans_iters": iters, "min_usage": min_usage, "init_images": used,
                   "init_s": round(seconds, 1),
                   **evaluate(model.quantizer, eval_latents)}  # fmt: skip
            if images is not None:
                model.quantizer.eval()
                row["psnr"] = eval_psnr(model, model.quantizer, images)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"# {len(eval_latents)} eval latents {tuple(eval_latents.shape[1:])}, {args.codebook_size} codes, "
          f"scales {args.scales}, init from {args.init_images} training crops (crop_scale_min "
          f"{args.crop_scale_min}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| init_kmeans_iters | init_min_usage | seed | utilization | perplexity | latent MSE | PSNR (dB) | init s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kmeans_iters']} | {r['min_usage']:g} | {r['seed']} | {r['utilization']:.2%} | {r['perplexity']:.0f} | "
              f"{r['latent_mse']:.5f} | {r.get('psnr', float('nan')):.2f} | {r['init_s']} |")  # fmt: skip
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
