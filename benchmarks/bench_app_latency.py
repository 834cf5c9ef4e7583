"""Latency of every interaction of ``coda-hf app``: the compute each event handler runs, on this CPU.

The bundled models are used where the package ships them; a missing photo model (``photos-vae``, ``-coda``,
``-vqgan``, ``-prior``) is replaced by a random stand-in of the same kind (:mod:`coda_hf.testing.app_models`;
``tiny``: 32 px, the test models; ``medium``: 256 px images through an 8x VAE of widths 32-64, 2,240 CODA
tokens), one table column per ``--standin-size``.
Each figure is the median of ``--repeats`` runs after one warm-up; the browser round trip is not included.

    OMP_NUM_THREADS=1 python benchmarks/bench_app_latency.py --repeats 5 --standin-size tiny medium
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from coda_hf.app import (
    BUNDLED_NAMES,
    AppModels,
    architecture_view,
    codebook_view,
    elbo_view,
    generate_view,
    latent_view,
    tokenize_view,
)
from coda_hf.app.images import image_tensor, to_pil
from coda_hf.bundled import bundled_models
from coda_hf.data.transforms import pil_to_tensor
from coda_hf.testing.app_models import STANDIN_SIZES, save_standin_models

TARGET_S = 2.0


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (first-call allocations, key caches)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def load_models(size: str, workdir: Path) -> tuple[AppModels, list[str]]:
    missing = [s for s in ("vae", "coda", "vqgan", "prior") if BUNDLED_NAMES[s] not in bundled_models()]
    dirs = save_standin_models(workdir / "standins", size=size) if missing else {}
    photo = workdir / "photo.png"
    rng = np.random.default_rng(0)  # a smooth synthetic photo: latency does not depend on the content
    low = rng.random((8, 8, 3))
    to_pil(torch.nn.functional.interpolate(torch.from_numpy(low).permute(2, 0, 1)[None].float() * 2 - 1,
                                           size=(512, 640), mode="bicubic")).save(photo)  # fmt: skip
    return AppModels.load(**{s: dirs[s] for s in missing}, photos=[photo]), missing


def _cold(cache, fn):
    """``fn`` with the view's cache emptied first: what the first call (a new photo or model) costs."""

    def run():
        cache.clear()
        return fn()

    return run


def interactions(models: AppModels) -> dict:
    """Interaction name -> the computation its handler runs (the app's own view functions)."""
    from coda_hf.image_io import load_image

    photo = to_pil(image_tensor(load_image(models.photos[0]), models.resolution))
    x = pil_to_tensor(photo)[None]
    lmap = latent_view.latent_map(models.latent_vae, models.fashion["images"], models.fashion["labels"])
    image = models.fashion["images"][0]
    arch = lambda: architecture_view.render(models, "CODA tokenizer", x)  # noqa: E731
    found = {
        "pick a photo: load + square": lambda: image_tensor(load_image(models.photos[0]), models.resolution),
        "tokenize: first answer (the first model's reconstruction, token maps)": lambda: next(tokenize_view.tokenize_steps(models, photo, x)),
        "tokenize: complete (every level decoded)": lambda: tokenize_view.tokenize(models, photo, x),
        "architecture: new model (forward with hooks)": _cold(architecture_view._TRACES, arch),
        "architecture: new photo (same shapes, cached trace)": arch,
        "latent space: click (decode)": lambda: latent_view.click(models.latent_vae, lmap, [], 100, 200),
        "latent space: second click (interpolate)": lambda: latent_view.click(models.latent_vae, lmap, [(0.0, 0.0)], 300, 100),
        "ELBO: beta slider / new image": lambda: elbo_view.elbo_view(models.beta_vaes, image, 0.0),
    }  # fmt: skip
    for name, model in models.tokenizers().items():
        click = lambda m=model: codebook_view.click_view(m, photo, x, 120, 200)  # noqa: E731
        found[f"codebook lookup ({name}): new photo (encode)"] = _cold(codebook_view._ENCODED, click)
        found[f"codebook lookup ({name}): click"] = click
    return found


def measure(size: str, repeats: int, generate_steps: int) -> dict:
    """Seconds per interaction with the missing photo models replaced by ``size`` stand-ins."""
    with tempfile.TemporaryDirectory() as tmp:
        models, standins = load_models(size, Path(tmp))
        rows = {name: timed(fn, repeats) for name, fn in interactions(models).items()}
        rows[f"generate, {generate_steps} steps (progress shown; no target)"] = timed(
            lambda: generate_view.generate(models.prior, generate_steps, 0, 1.0, 0), max(1, repeats // 2))
    return {"seconds": rows, "resolution": models.resolution, "standins": standins}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--standin-size", nargs="+", choices=sorted(STANDIN_SIZES), default=["tiny", "medium"],
                   help="one column per size of the stand-ins for photo models the package does not ship")
    p.add_argument("--generate-steps", type=int, default=8)
    p.add_argument("--output", default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    runs = {size: measure(size, args.repeats, args.generate_steps) for size in args.standin_size}
    heads = [f"{size} stand-ins, {r['resolution']} px" if r["standins"] else f"bundled, {r['resolution']} px"
             for size, r in runs.items()]  # fmt: skip
    print("| interaction | " + " | ".join(heads) + " |\n|---|" + "---|" * len(runs))
    for name in next(iter(runs.values()))["seconds"]:
        cells = [f"{r['seconds'][name]:.3f} s" + ("" if r["seconds"][name] < TARGET_S or "generate" in name else " (over 2 s)")
                 for r in runs.values()]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(runs.values()))
    print(f"\nstand-ins for: {', '.join(first['standins']) or 'none (all bundled)'}; Fashion-MNIST views: bundled "
          f"models; {torch.get_num_threads()} torch thread(s); median of {args.repeats}")  # fmt: skip
    result = {"runs": runs, "torch_threads": torch.get_num_threads(), "repeats": args.repeats, "target_s": TARGET_S}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
