#!/usr/bin/env python
"""Train a small dense (beta-)VAE on Fashion-MNIST, evaluate it on the test split and write its model card.

    coda-hf data prepare-fashion-mnist --out data/fashion-mnist
    OMP_NUM_THREADS=1 python examples/train_dense_vae.py --data data/fashion-mnist --latent-dim 2 --beta 1 \\
        --name fashion-vae-2d --output-dir src/coda_hf/bundled/models/fashion-vae-2d \\
        --card model_cards/fashion-vae-2d.md

Data: the train split's first ``--train-images`` images train, the rest of it is the validation split that
picks the kept epoch (best validation objective); the metrics of the card are measured on the 10,000-image
test split by :func:`evaluate` (a test recomputes them from the saved model and compares them with the card).
``--write-test-sample PATH`` instead writes the class-balanced test-split sample the app scatters.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coda_hf.data import load_image_shards
from coda_hf.metrics.image_quality import psnr, to_uint8_range
from coda_hf.models.dense_vae import DenseVAE

EVAL_SEED = 0  # the posterior samples of the one-sample ELBO estimate
EVAL_BATCH = 500
ACTIVE_VARIANCE = 0.01  # "active units": Var_x E_q[z_j] above this (Burda et al. 2016, arXiv 1509.00519)


def load_split(data: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``coda-hf data prepare-fashion-mnist`` shards -> ``(N, 28, 28)`` uint8 images and ``(N,)`` labels."""
    table = load_image_shards(data, split=split, streaming=False)
    if limit is not None:
        table = table.select(range(min(limit, len(table))))
    images = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in table["image"]])
    return images, np.asarray(table["label"], dtype=np.int64)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` uint8 -> ``(N, 1, H, W)`` float in ``[0, 1]`` (the model's input)."""
    return torch.from_numpy(images).float().div(255.0)[:, None]


@torch.no_grad()
def evaluate(model: DenseVAE, images: torch.Tensor, seed: int = EVAL_SEED, batch_size: int = EVAL_BATCH) -> dict:
    """Held-out metrics of ``model`` on ``(N, 1, H, W)`` images in ``[0, 1]`` (nats per image unless named).

    ELBO terms: one posterior sample per image (seeded); PSNR: the posterior-mean reconstruction, 8-bit.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    nll, kl, means, peaks = [], [], [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        out = model(x, sample_posterior=True, generator=gen)
        nll.append(out.reconstruction_nll)
        kl.append(out.kl)
        means.append(out.posterior.mean.flatten(1))
        recon = model.decode(out.posterior.mean).sample
        peaks.append(psnr(to_uint8_range(recon * 2 - 1), to_uint8_range(x * 2 - 1)))
    nll, kl, means = torch.cat(nll), torch.cat(kl), torch.cat(means)  # (N,), (N, L), (N, L)
    elbo = -(nll + kl.sum(1))
    pixels = images[0].numel()
    return {
        "images": len(images),
        "elbo": float(elbo.mean()),
        "reconstruction_nll": float(nll.mean()),
        "kl": float(kl.sum(1).mean()),
        "kl_per_dim": [round(float(v), 6) for v in kl.mean(0)],
        "bits_per_dim": float(-elbo.mean() / (pixels * math.log(2))),
        "active_dims": int((means.var(0) > ACTIVE_VARIANCE).sum()),
        "psnr_mean_reconstruction": float(torch.cat(peaks).mean()),
    }


def objective(model: DenseVAE, x: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return model(x, sample_posterior=True, generator=generator).loss(beta)


@torch.no_grad()
def validation_loss(model: DenseVAE, images: torch.Tensor, beta: float) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(EVAL_SEED)
    total = sum(float(objective(model, images[s : s + EVAL_BATCH], beta, gen)) * len(images[s : s + EVAL_BATCH])
                for s in range(0, len(images), EVAL_BATCH))  # fmt: skip
    return total / len(images)


def train(model: DenseVAE, train_x: torch.Tensor, val_x: torch.Tensor, args) -> tuple[DenseVAE, list[dict]]:
    """Adam on the beta-VAE objective; returns the model of the epoch with the best validation objective."""
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    history, best, step = [], None, 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), args.batch_size):
            loss = objective(model, train_x[order[start : start + args.batch_size]], args.beta, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        val = validation_loss(model, val_x, args.beta)
        history.append({"epoch": epoch + 1, "steps": step, "train_objective": float(loss.detach()), "val_objective": val})
        print(json.dumps(history[-1]), flush=True)
        if best is None or val < best[0]:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
        if args.max_steps and step >= args.max_steps:
            break
    model.load_state_dict(best[2])
    return model.eval(), history


def render_card(args, metrics: dict, settings: dict) -> str:
    """The model card, every number from ``metrics`` / ``settings`` (the measured run)."""
    latent = f"{args.latent_dim}-D latent" if args.latent_dim == 2 else f"{args.latent_dim} latent dimensions"
    rows = [("ELBO (nats / image, higher is better)", f"{metrics['elbo']:.2f}"),
            ("reconstruction term -log p(x\\|z) (nats)", f"{metrics['reconstruction_nll']:.2f}"),
            ("KL(q(z\\|x) \\|\\| N(0, I)) (nats)", f"{metrics['kl']:.2f}"),
            ("bits per dimension (-ELBO / (784 ln 2))", f"{metrics['bits_per_dim']:.4f}"),
            (f"active latent dimensions (Var E_q[z_j] > {ACTIVE_VARIANCE})", f"{metrics['active_dims']} / {args.latent_dim}"),
            ("PSNR of the posterior-mean reconstruction (dB)", f"{metrics['psnr_mean_reconstruction']:.2f}")]  # fmt: skip
    table = "\n".join(["| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])
    data = settings["data"]
    return f"""---
library_name: coda_hf
license: apache-2.0
datasets:
- fashion_mnist
tags:
- vae
- beta-vae
- fashion-mnist
- coda_hf
---

# {args.name}

{args.description}

A `coda_hf.models.DenseVAE` ({latent}, hidden layers {settings['hidden_sizes']}, {args.act_fn} activations,
Bernoulli pixel likelihood, {settings['parameters']:,} parameters) trained with the beta-VAE objective
`-log p(x|z) + beta * KL`, beta = {args.beta:g} (Kingma & Welling 2013, arXiv 1312.6114; Higgins et al. 2017).
It ships inside the package for the latent-space and ELBO views of `coda-hf app`.

## Usage

```python
import coda_hf
from coda_hf.models import DenseVAE

vae = DenseVAE.from_pretrained(coda_hf.bundled_model("{args.name}"))
```

## Training

- Command: `{settings['command']}`
- Data: Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747; licence {data['license']}) from the Debian package
  `dataset-fashion-mnist` {data['package_version']}, prepared by `coda-hf data prepare-fashion-mnist`: the first
  {data['train_images']:,} train-split images train, the last {data['val_images']:,} are the validation split that
  picked the kept epoch ({settings['best_epoch']} of {settings['epochs_run']}, lowest validation objective).
- Settings: batch {args.batch_size}, Adam at {args.learning_rate:g}, seed {args.seed}.
- Wall time: {settings['wall_time_s']:.0f} s for training and evaluation, one torch thread on a shared 2-core CPU.

## Held-out metrics (Fashion-MNIST test split, {metrics['images']:,} images)

{table}

Values written by `examples/train_dense_vae.py` from its own evaluation (one seeded posterior sample per
image); `tests/test_bundled.py` recomputes them from the bundled weights and compares.

```json
{json.dumps(metrics, indent=1)}
```
"""


def write_test_sample(data: str, path: str, per_class: int, seed: int) -> None:
    """A class-balanced random sample of the test split as ``.npz`` (images, labels, test_index)."""
    images, labels = load_split(data, "test")
    rng = np.random.default_rng(seed)
    picks = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                    for c in np.unique(labels)]))  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images[picks], labels=labels[picks].astype(np.uint8), test_index=picks)
    print(f"wrote {len(picks)} test images to {path}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder written by `coda-hf data prepare-fashion-mnist` (28 px)")
    p.add_argument("--output-dir", help="where the model is saved (save_pretrained + bundle.json)")
    p.add_argument("--name", default="fashion-vae", help="the model's name (bundled name, card title)")
    p.add_argument("--description", default="A dense VAE trained on Fashion-MNIST.", help="one line for `coda-hf models`")
    p.add_argument("--card", default=None, help="write the model card here (e.g. model_cards/NAME.md)")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden-sizes", type=int, nargs="+", default=[96, 48])
    p.add_argument("--act-fn", default="silu")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight of the training objective")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=55_000, help="the rest of the train split validates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests); 0: no limit")
    p.add_argument("--limit", type=int, default=None, help="use the first N images of each split (smoke tests)")
    p.add_argument("--write-test-sample", default=None, help="only write the app's test-split sample (.npz) here")
    p.add_argument("--sample-per-class", type=int, default=100)
    args = p.parse_args(argv)
    if args.write_test_sample is None and args.output_dir is None:
        p.error("--output-dir is required unless --write-test-sample is given")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.write_test_sample:
        write_test_sample(args.data, args.write_test_sample, args.sample_per_class, args.seed)
        return {}
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    train_images, _ = load_split(args.data, "train", args.limit)
    test_images, _ = load_split(args.data, "test", args.limit)
    n_train = min(args.train_images, len(train_images) - 1)
    train_x, val_x = to_tensor(train_images[:n_train]), to_tensor(train_images[n_train:])
    model = DenseVAE(image_size=train_x.shape[-1], in_channels=1, hidden_sizes=args.hidden_sizes,
                     latent_dim=args.latent_dim, act_fn=args.act_fn)  # fmt: skip
    model, history = train(model, train_x, val_x, args)
    metrics = evaluate(model, to_tensor(test_images))
    settings = {
        "command": shlex.join(["python", "examples/train_dense_vae.py", *(sys.argv[1:] if argv is None else argv)]),
        "beta": args.beta, "hidden_sizes": list(args.hidden_sizes), "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": args.epochs, "epochs_run": len(history), "best_epoch": min(history, key=lambda h: h["val_objective"])["epoch"],
        "batch_size": args.batch_size, "learning_rate": args.learning_rate, "seed": args.seed, "history": history,
        "data": {"package_version": manifest.get("package_version"), "license": manifest.get("license"),
                 "train_images": len(train_x), "val_images": len(val_x), "test_images": len(test_images)},
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "wall_time_s": time.perf_counter() - start,
    }  # fmt: skip
    out = Path(args.output_dir)
    model.save_pretrained(out)
    card_name = Path(args.card).name if args.card else None
    (out / "bundle.json").write_text(json.dumps({"description": args.description, "card": card_name}, indent=1) + "\n")
    (out / "training_config.json").write_text(json.dumps(settings, indent=1) + "\n")
    if args.card:
        Path(args.card).write_text(render_card(args, metrics, settings))
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
