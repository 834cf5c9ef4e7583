"""ONNX Runtime (CPU) against PyTorch eager for the FLUX-architecture tokenizer: token ids, images, speed.

Model: ``bench_half_precision.data_initialised_model`` (FLUX-VAE architecture with random weights, LoRA
merged, CODA's quantizer with a codebook data-initialised on photo latents, so near-ties are as common as
in a trained codebook; with fewer initialisation features than codes, some codes are exact duplicates,
whose ties the exported graph must break as PyTorch does). :func:`coda_hf.onnx_export.export_onnx` writes
both graphs (time reported); evaluation images: ``--eval-crops`` crops per photo of scikit-image's photos,
in batches of ``--batch``.

Reported: the share of token positions whose ONNX Runtime id equals PyTorch's (target: all), the largest
absolute difference of the decoder graph's images from ``model.decode`` (both from PyTorch's ids) and, with
``--float64``, the share of each float32 implementation's token ids equal to a float64 eager encode's and
the distance of each decoder from a float64 eager decode (which of the two is nearer to exact arithmetic);
encode / decode time of both (best of ``--repeats``, interleaved, ``--clock``, ONNX Runtime with as many
intra-op threads as PyTorch) and their ratio.

``--model photos-coda`` (a bundled model's name, or a saved tokenizer directory) measures a TRAINED tokenizer
instead, as ``coda-hf export onnx`` loads it, on the package's four held-out 256 px demo photos.

    OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py --clock cpu --float64
    OMP_NUM_THREADS=1 python benchmarks/bench_onnx.py --clock cpu --float64 --model photos-coda
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_half_precision import data_initialised_model, photo_crops  # noqa: E402
from bench_quantizers import best_times, save_report  # noqa: E402

from coda_hf.onnx_export import export_onnx, onnx_sessions, verify_onnx  # noqa: E402


def run(args, output_dir: str) -> dict:
    torch.set_num_threads(args.threads)
    if args.model:
        model, x = trained_model_and_photos(args.model)
    else:
        model = data_initialised_model(args.codebook_size, args.resolution, args.init_crops, merged=not args.unmerged)
        x = photo_crops(args.resolution, args.eval_crops, 1)
    start = time.perf_counter()
    export_onnx(model, output_dir)
    export_s = time.perf_counter() - start
    report = measure(model, output_dir, x, args)
    return {"config": vars(args), "export_s": export_s, **report}


def trained_model_and_photos(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A saved tokenizer (a bundled model's name, e.g. ``photos-coda``, or a directory) as loaded by
    ``coda-hf export onnx``, and the package's held-out demo photos ``(4, 3, 256, 256)`` in ``[-1, 1]``."""
    from coda_hf.bundled import bundled_model, bundled_models, bundled_photos
    from coda_hf.image_io import load_image, pil_to_tensor
    from coda_hf.models.loading import load_tokenizer

    path = bundled_model(name) if name in bundled_models() else name
    images = torch.stack([pil_to_tensor(load_image(str(p))) for p in bundled_photos()])
    return load_tokenizer(path).eval(), images


def measure(model, output_dir: str, x: torch.Tensor, args) -> dict:
    """Agreement, image differences and timings of an exported ``model`` on images ``x`` (``args``: batch,
    threads, float64, repeats, clock)."""
    encoder, decoder = onnx_sessions(output_dir, threads=args.threads)
    checks = [verify_onnx(model, output_dir, b, sessions=(encoder, decoder)) for b in x.split(args.batch)]
    report = {"images": x.shape[0], "token_agreement": sum(c.token_agreement for c in checks) / len(checks),
              "max_abs_image_diff": max(c.max_abs_image_diff for c in checks)}  # fmt: skip
    batch = x[: args.batch]
    with torch.no_grad():
        enc = model.encode(batch)
        feeds = {f"indices_{i}": idx.numpy() for i, idx in enumerate(enc.indices)}
        if args.float64:  # which float32 implementation is nearer to float64: ids of all images, one batch's images
            double = copy.deepcopy(model).double()
            ids64 = torch.cat([double.encode(b.double()).token_ids for b in x.split(args.batch)])
            ids32 = torch.cat([model.encode(b).token_ids for b in x.split(args.batch)])
            ids_onnx = torch.cat([torch.from_numpy(encoder.run(None, {"pixel_values": b.numpy()})[0])
                                  for b in x.split(args.batch)])  # fmt: skip
            report["torch_ids_vs_float64"] = float((ids32 == ids64).float().mean())
            report["onnx_ids_vs_float64"] = float((ids_onnx == ids64).float().mean())
            reference = double.decode(enc.indices).float()
            report["torch_vs_float64"] = float((model.decode(enc.indices) - reference).abs().max())
            onnx_images = torch.from_numpy(decoder.run(None, feeds)[0])
            report["onnx_vs_float64"] = float((onnx_images - reference).abs().max())
        times = best_times({
            "torch_encode": lambda: model.encode(batch),
            "onnx_encode": lambda: encoder.run(None, {"pixel_values": batch.numpy()}),
            "torch_decode": lambda: model.decode(enc.indices),
            "onnx_decode": lambda: decoder.run(None, feeds),
        }, repeats=args.repeats, clock=args.clock)  # fmt: skip
    report.update({f"{k}_s": v for k, v in times.items()})
    return report


def format_report(r: dict) -> str:
    cfg = r["config"]
    what = (f"model {cfg['model']}" if cfg.get("model") else f"{cfg['codebook_size']} codes, LoRA "
            f"{'unmerged' if cfg['unmerged'] else 'merged'}")  # fmt: skip
    lines = [
        f"# {r['images']} photos at {cfg['resolution'] if not cfg.get('model') else 256} px, {what}, torch {torch.__version__}, {cfg['threads']} thread(s), "
        f"{cfg['clock']} clock, best of {cfg['repeats']}; export took {r['export_s']:.0f} s (wall)",
        f"# token ids equal: {100 * r['token_agreement']:.3f}% of positions; images: max |ONNX - eager| = "
        f"{r['max_abs_image_diff']:.2e}",
    ]
    if "torch_vs_float64" in r:
        lines.append(f"# against float64 eager: token ids equal eager float32 {100 * r['torch_ids_vs_float64']:.3f}%, "
                     f"ONNX Runtime {100 * r['onnx_ids_vs_float64']:.3f}%; decoded images max |diff| eager float32 "
                     f"{r['torch_vs_float64']:.2e}, ONNX Runtime {r['onnx_vs_float64']:.2e}")  # fmt: skip
    lines += ["| batch | part | PyTorch eager s | ONNX Runtime s | eager / ONNX Runtime |", "|---|---|---|---|---|"]
    for part in ("encode", "decode"):
        t, o = r[f"torch_{part}_s"], r[f"onnx_{part}_s"]
        lines.append(f"| {cfg['batch']} | {part} | {t:.3f} | {o:.3f} | {t / o:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None,
                   help="a trained tokenizer instead of the random-weight FLUX architecture: a bundled model's name "
                        "(e.g. photos-coda) or a saved directory; compared on the bundled held-out photos")  # fmt: skip
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--init-crops", type=int, default=4, help="crops per photo for the codebook initialisation")
    p.add_argument("--eval-crops", type=int, default=2, help="crops per photo compared")
    p.add_argument("--batch", type=int, default=1, help="images per call (and per timed call)")
    p.add_argument("--unmerged", action="store_true", help="keep LoRA unfused")
    p.add_argument("--float64", action="store_true", help="also compare both decoders with a float64 eager decode")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--output-dir", default=None, help="keep the ONNX files here (default: a temporary folder)")
    p.add_argument("--output", default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args, args.output_dir or tmp)
    print(format_report(report), flush=True)
    return save_report(report, args.output)


if __name__ == "__main__":
    main()
