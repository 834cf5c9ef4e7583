"""The python stages of ``benchmarks/generation.py``: the class-accuracy classifier, the held-out FD-EffNet
reference, the measures of one prior, and the report."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from fair_report import MATCHED_BPP, mean_std, verdict
from prior_metrics import effnet_statistics, masked_token_metrics, sample, shard_batches
from reproduce import write_json_atomic
from torch import nn


def classifier_net(num_classes: int = 10) -> nn.Module:
    """A small CNN (three conv + max-pool stages, dropout) on ``(B, 3, 32, 32)`` images in ``[-1, 1]`` -> ``(B, num_classes)`` logits."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 16
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8 x 8
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),  # 128 x 4 x 4
        nn.Dropout(0.3), nn.Linear(128 * 16, num_classes),
    )  # fmt: skip


def _load_split(shards: Path, split: str, label_column: str, limit: int | None = None):
    batches = list(shard_batches(shards, split, 256, label_column, limit))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def device_of(hw: dict) -> torch.device:
    """Where the python stages run: CUDA when the config allows it (``"cpu": False``) and a GPU is there."""
    return torch.device("cuda" if not hw["cpu"] and torch.cuda.is_available() else "cpu")


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    device = next(net.parameters()).device
    with torch.no_grad():
        predicted = torch.cat([net(b.to(device)).argmax(-1).cpu() for b in images.split(512)])
    return float((predicted == labels).float().mean())


def train_classifier(shards: Path, out: Path, hw: dict) -> None:
    """Stage ``classifier``: the CNN trained once on the train split (Adam, seeded); ``metrics.json`` holds its
    test-split accuracy, ``model.safetensors`` its weights."""
    from safetensors.torch import save_file

    c = hw["classifier"]
    images, labels = _load_split(shards, "train", hw["label_column"], c.get("max_images"))
    test_images, test_labels = _load_split(shards, hw["eval_split"], hw["label_column"])
    torch.manual_seed(0)
    device = device_of(hw)
    net = classifier_net(hw["num_classes"]).to(device)
    images, labels = images.to(device), labels.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=c["learning_rate"])
    for _ in range(c["epochs"]):
        net.train()
        for idx in torch.randperm(images.shape[0]).to(device).split(c["batch_size"]):
            loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_file(net.state_dict(), str(out / "model.safetensors"))
    write_json_atomic(out / "metrics.json", {"test_accuracy": accuracy(net, test_images, test_labels),
                                             "train_images": images.shape[0], "test_images": test_images.shape[0], **c})  # fmt: skip


def load_classifier(folder: Path, num_classes: int) -> nn.Module:
    from safetensors.torch import load_file

    net = classifier_net(num_classes)
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval()


def reference_statistics(shards: Path, out: Path, hw: dict) -> None:
    """Stage ``fd-reference``: FD-EffNet statistics of the first ``fd_reference_images`` held-out images."""
    from coda_hf.metrics import effnet_features

    batches = (b for b, _ in shard_batches(shards, hw["eval_split"], 100, None, hw["fd_reference_images"]))
    out.mkdir(parents=True, exist_ok=True)
    effnet_statistics(batches, effnet_features().to(device_of(hw))).save(out / "reference.safetensors")


def measure_prior(work: Path, run: str, shards: Path, hw: dict) -> None:
    """Stage ``gen-<run>``: ``samples`` images per step count (class ``i % 10`` for image ``i``): FD-EffNet
    against the held-out reference, class accuracy, seconds per image, a sample grid; the masked-token
    cross-entropy on held-out tokens."""
    from coda_hf.metrics import FrechetStatistics, effnet_features
    from coda_hf.pipelines.maskgit import CodaMaskGitPipeline

    out = work / "generation" / run
    out.mkdir(parents=True, exist_ok=True)
    device = device_of(hw)
    pipe = CodaMaskGitPipeline.from_pretrained(work / "runs" / f"prior-{run}" / "pipeline").to(device)
    pipe.set_progress_bar_config(disable=True)
    classes = pipe.transformer.config.num_classes
    reference = FrechetStatistics.load(work / "generation" / "reference.safetensors")
    features = effnet_features().to(device)
    classifier = load_classifier(work / "classifier", classes).to(device) if classes > 1 else None
    result = {"samples": hw["samples"], "guidance_scale": hw["guidance_scale"], "device": str(device), "steps": {}}
    for steps in hw["step_counts"]:
        images, labels, seconds = sample(pipe, hw["samples"], steps, classes, hw["guidance_scale"])
        row = {"fd_effnet": effnet_statistics(images.split(100), features).distance(reference), "seconds_per_image": seconds}
        if classifier is not None:
            row["class_accuracy"] = accuracy(classifier, images, labels)
        result["steps"][str(steps)] = row
        save_grid(images, labels, classes, out / f"samples-{steps}steps.png")
    batches = shard_batches(shards, hw["eval_split"], 64, hw["label_column"] if classes > 1 else None, hw["masked_token_images"])
    result["masked_token"] = masked_token_metrics(pipe, batches)
    write_json_atomic(out / "metrics.json", result)


def save_grid(images: torch.Tensor, labels: torch.Tensor, classes: int, path: Path, per_row: int = 10) -> None:
    """The first ``per_row`` images of each class as one row (unconditional: the first rows of images)."""
    from PIL import Image

    from coda_hf.image_io import tensor_to_pil

    rows = [images[labels == c][:per_row] for c in range(classes)] if classes > 1 else list(images[: per_row * 4].split(per_row))
    h, w = images.shape[-2:]
    grid = Image.new("RGB", (per_row * w, len(rows) * h), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(tensor_to_pil(row)):
            grid.paste(image, (c * w, r * h))
    grid.save(path)


NAMES = {"coda": "CODA (off-the-shelf VAE + attention quantizer + decoder LoRA, N steps)",
         "msvqgan": "multi-scale VQGAN from scratch (CODA's scales and codebook, restarts, 6N)",
         "vqgan": "single-scale VQGAN from scratch (same bits, restarts, 6N)"}  # fmt: skip


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def tokenizer_row(work: Path, name: str, hw: dict) -> dict:
    """One tokenizer: its bits and reconstruction, and per step count the mean +- std over the prior seeds."""
    import generation

    row = {"bits_per_image": generation.bits_per_image(hw, name), "reconstruction": _read(work / "eval" / f"tok-{name}" / "metrics.json"),
           "seeds": [], "missing": [], "steps": {}}  # fmt: skip
    runs = {}
    for seed in hw["prior_seeds"]:
        metrics = _read(work / "generation" / f"{name}-s{seed}" / "metrics.json")
        (row["seeds"] if metrics else row["missing"]).append(seed)
        if metrics:
            runs[seed] = metrics
    if runs:
        row["devices"] = sorted({m.get("device", "cpu") for m in runs.values()})  # where the priors were sampled
        row["masked_token_cross_entropy"] = mean_std([m["masked_token"]["cross_entropy"] for m in runs.values()])
        for steps in map(str, hw["step_counts"]):
            keys = runs[next(iter(runs))]["steps"][steps]
            row["steps"][steps] = {k: mean_std([m["steps"][steps][k] for m in runs.values()]) for k in keys}
    return row


def comparisons(rows: dict, hw: dict) -> list[dict]:
    """CODA against each baseline at each step count, and 32 against 8 steps per tokenizer (beyond the noise)."""
    out = []
    for other in [n for n in rows if n != "coda"]:
        for steps in rows.get("coda", {}).get("steps", {}):
            a, b = rows["coda"]["steps"][steps], rows[other]["steps"].get(steps)
            if b is None:
                continue
            matched = abs(rows["coda"]["bits_per_image"] / rows[other]["bits_per_image"] - 1) <= MATCHED_BPP
            for key, higher in (("fd_effnet", False), ("class_accuracy", True)):
                if key in a and key in b:
                    out.append({"a": "coda", "b": other, "steps": steps, "metric": key, "matched_bits": matched,
                                **verdict(*a[key], *b[key], higher)})  # fmt: skip
    for name, row in rows.items():
        s = [str(x) for x in hw["step_counts"]]
        if len(s) > 1 and s[0] in row["steps"] and s[-1] in row["steps"]:
            out.append({"a": f"{name} @ {s[-1]}", "b": f"{name} @ {s[0]}", "steps": f"{s[-1]} vs {s[0]}", "metric": "fd_effnet",
                        **verdict(*row["steps"][s[-1]]["fd_effnet"], *row["steps"][s[0]]["fd_effnet"], False)})  # fmt: skip
    return out


def write_report(work: Path, hw: dict) -> dict:
    """``results.json`` and ``results.md`` from whatever has finished; ``report-complete.json`` once nothing is missing."""
    rows = {name: tokenizer_row(work, name, hw) for name in hw["tokenizers"]}
    results = {"rows": rows, "comparisons": comparisons(rows, hw), "classifier": _read(work / "classifier" / "metrics.json"),
               "config": {k: hw[k] for k in ("samples", "step_counts", "guidance_scale", "prior", "prior_seeds")},
               "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}}  # fmt: skip
    write_json_atomic(work / "results.json", results)
    (work / "results.md").write_text(markdown(results))
    if not any(r["missing"] for r in rows.values()):
        write_json_atomic(work / "report-complete.json", {"rows": len(rows)})
    return results


def _cell(pair) -> str:
    mean, std = pair
    return f"{mean:.3g}" + (f" +- {std:.2g}" if std is not None else "")


def markdown(results: dict) -> str:
    lines = ["| tokenizer | bits / image | recon PSNR | recon FD-EffNet | steps | FD-EffNet | class accuracy | s / image | "
             "prior CE (nats/token) | seeds | sampled on |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in results["rows"].items():
        rec = row["reconstruction"] or {}
        for steps, m in row["steps"].items():
            lines.append(f"| {name} | {row['bits_per_image']:.0f} | {rec.get('psnr', float('nan')):.2f} | "
                         f"{rec.get('fd_effnet', float('nan')):.1f} | {steps} | {_cell(m['fd_effnet'])} | "
                         f"{_cell(m['class_accuracy']) if 'class_accuracy' in m else '-'} | {m['seconds_per_image'][0]:.3f} | "
                         f"{_cell(row['masked_token_cross_entropy'])} | {len(row['seeds'])} | {', '.join(row['devices'])} |")  # fmt: skip
    lines += ["", "| A | B | steps | metric | bits matched (5%) | A - B | combined std | verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        matched = {True: "yes", False: "NO"}.get(c.get("matched_bits"), "-")
        lines.append(f"| {c['a']} | {c['b']} | {c['steps']} | {c['metric']} | {matched} | {c['difference']:+.3g} | "
                     f"{c['combined_std']:.2g} | {c['verdict']} |")  # fmt: skip
    if results["classifier"]:
        lines += ["", f"Classifier test accuracy: {results['classifier']['test_accuracy']:.4f}"]
    return "\n".join(lines) + "\n"
