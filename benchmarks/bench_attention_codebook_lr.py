"""Learning rate of a data-initialised attention codebook (script, not a test).

The reproduction's attention rows (``benchmarks/reproduce.py``) start the multi-scale attention quantizer
with ``init="data"``: its argmax is exact nearest-neighbour search over codes sampled from the first
training batch. This script trains that quantizer ALONE on a frozen VAE's latents (loss: the quantizer's
own losses plus the latent MSE of the reconstruction, the reproduction's AdamW recipe: betas (0.5, 0.9),
weight decay 0.005, cosine schedule, gradient clipping at 10) at several learning rates, and reports, on
the held-out eval latents, before training (right after the data initialisation) and after it:
utilization (fraction of codes used over the whole eval set), perplexity and the latent MSE.

A ``frozen codebook`` row trains everything but the code rows (``embedding``) at the first rate, to
show which parameters the rate matters for.

    python benchmarks/bench_attention_codebook_lr.py --vae runs/repro/runs/vae \\
        --data runs/repro/data/photos/tiles64 --learning-rates 1e-3 1e-4 3e-5 1e-5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from coda_hf.metrics.eval_data import image_batches, load_image_dataset
from coda_hf.models.coda_vq import CodaVQModel
from coda_hf.quantizers import build_quantizer
from coda_hf.quantizers.stats import CodebookCounter
from coda_hf.training.optim import build_adamw, build_lr_scheduler


@torch.no_grad()
def encode(model: CodaVQModel, data: str, split: str, resolution: int, num_images: int | None) -> torch.Tensor:
    """``(N, C, h, w)`` normalised latents of the first ``num_images`` images of ``split``."""
    dataset = load_image_dataset(data, split=split)
    return torch.cat([model.encode_latents(x) for x in image_batches(dataset, resolution, 64, num_images)])


@torch.no_grad()
def evaluate(quantizer, latents: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    quantizer.eval()
    counter, sse = CodebookCounter(quantizer.codebook_size), 0.0
    for start in range(0, len(latents), batch_size):
        z = latents[start : start + batch_size]
        out = quantizer(z)
        counter.update(out.indices)
        sse += float((out.quantized - z).pow(2).sum())
    quantizer.train()
    return {"utilization": float(counter.utilization()), "perplexity": float(counter.perplexity()),
            "latent_mse": sse / latents.numel()}  # fmt: skip


def run_case(config: dict, train: torch.Tensor, eval_latents: torch.Tensor, lr: float, freeze_codebook: bool,
             steps: int, batch_size: int, seed: int) -> dict:  # fmt: skip
    torch.manual_seed(seed)
    quantizer = build_quantizer(**config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the first training forward samples the codes (init="data")
        quantizer.train()(train[torch.randint(len(train), (batch_size,), generator=generator)])
    before = evaluate(quantizer, eval_latents)
    params = [p for name, p in quantizer.named_parameters() if not (freeze_codebook and name.endswith("embedding"))]
    opt = build_adamw(params, lr)
    sched = build_lr_scheduler("cosine", opt, 0, steps)
    start = time.perf_counter()
    for _ in range(steps):
        z = train[torch.randint(len(train), (batch_size,), generator=generator)]
        out = quantizer(z)
        loss = sum(out.losses.values()) + F.mse_loss(out.quantized, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    return {"lr": lr, "freeze_codebook": freeze_codebook, "before": before, "after": evaluate(quantizer, eval_latents),
            "train_s": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vae", required=True, help="a saved AutoencoderKL (its config's shift/scale normalise the latents)")
    p.add_argument("--data", required=True, help="image data with train and eval splits (e.g. prepare-photos tiles)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--train-images", type=int, default=None, help="default: all")
    p.add_argument("--eval-images", type=int, default=None, help="default: all")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 1e-4, 3e-5, 1e-5])
    p.add_argument("--no-frozen-row", action="store_true", help="skip the frozen-codebook row")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--codebook-size", type=int, default=4096)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 11, 16])
    p.add_argument("--init-sharpness", type=float, default=100.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    model = CodaVQModel.from_vae(args.vae, quantizer={"name": "vq", "codebook_size": 2}, lora={"rank": 0}).eval()
    train = encode(model, args.data, "train", args.resolution, args.train_images)
    eval_latents = encode(model, args.data, "eval", args.resolution, args.eval_images)
    config = {"name": "multiscale", "dim": train.shape[1], "scales": args.scales, "quantizer": "attention",
              "quantizer_kwargs": {"codebook_size": args.codebook_size, "init": "data",
                                   "init_sharpness": args.init_sharpness, "entropy_weight": 0.0}}  # fmt: skip
    cases = [(lr, False) for lr in args.learning_rates] + ([] if args.no_frozen_row else [(args.learning_rates[0], True)])
    rows = [run_case(config, train, eval_latents, lr, frozen, args.steps, args.batch_size, args.seed)
            for lr, frozen in cases]  # fmt: skip
    print(f"# {len(train)} train / {len(eval_latents)} eval latents {tuple(train.shape[1:])}, {args.codebook_size} codes, "
          f"scales {args.scales}, {args.steps} steps at batch {args.batch_size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| lr | codebook | utilization before -> after | perplexity before -> after | latent MSE before -> after |")
    print("|---|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['lr']:g} | {'frozen' if r['freeze_codebook'] else 'trained'} | "
              f"{b['utilization']:.1%} -> {a['utilization']:.1%} | {b['perplexity']:.0f} -> {a['perplexity']:.0f} | "
              f"{b['latent_mse']:.4f} -> {a['latent_mse']:.4f} |")  # fmt: skip
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
