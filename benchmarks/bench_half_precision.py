"""Token ids under bf16 / fp16 autocast against float32, on real photographs (scikit-image's bundled photos).

Model: the FLUX-VAE architecture of ``bench_coda_model.py`` (random weights: no pretrained VAE weights are
available offline) with LoRA merged and CODA's quantizer (FLUX scales, ``--codebook-size`` codes) whose
codebook is data-initialised (``init="data"``) on the float32 latents of ``--init-crops`` crops per photo,
so that codes lie where the data is and near-ties are as frequent as in a trained codebook.
Evaluation images: ``--eval-crops`` other crops per photo (``--resolution`` px).

Reported per autocast dtype, as the share of token positions whose id differs from the float32 encoding:

* ``quantizer, search in float32``: the library's quantizer under autocast on the float32 latents (it runs
  with autocast off, :func:`coda_hf.quantizers.base.autocast_off`): the target is 0;
* ``quantizer, search in half precision``: a copy of the quantizer cast to the half dtype on the latents
  cast to it (projections, scores and argmax in half precision, as in a model converted with ``.to()``);
* ``encode`` (bf16 only by default): the whole ``CodaVQModel.encode`` under autocast, VAE encoder in half
  precision, search in float32 (differences come from the VAE's latents); fp16 convolutions have no fast
  CPU kernel (add ``--encode-fp16`` on a GPU).

    OMP_NUM_THREADS=1 python benchmarks/bench_half_precision.py
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_coda_model import build_model  # noqa: E402  (the FLUX-architecture model)
from bench_quantizers import save_report  # noqa: E402

from coda_hf.models.presets import coda_quantizer  # noqa: E402
from coda_hf.quantizers import build_quantizer  # noqa: E402
from coda_hf.quantizers.multiscale import FLUX_SCALES  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "stereo_motorcycle")  # skimage.data
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def photo_crops(size: int, crops: int, offset: int) -> torch.Tensor:
    """``(len(PHOTOS) * crops, 3, size, size)`` crops in ``[-1, 1]``: each photo's shorter side resized to
    ``2 size``, crops at evenly spaced positions (``offset`` shifts them, so two calls can differ)."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()
        img = Image.fromarray(photo[0] if name == "stereo_motorcycle" else photo).convert("RGB")  # its left view
        scale = 2 * size / min(img.size)
        img = img.resize((max(2 * size, round(img.width * scale)), max(2 * size, round(img.height * scale))), Image.BICUBIC)
        arr = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1
        h, w = arr.shape[-2:]
        for i in range(crops):
            t = (i + offset / 2) / max(crops, 1)
            y, x = int(t * (h - size)), int(((i * 7 + offset) % max(crops, 1)) / max(crops, 1) * (w - size))
            out.append(arr[:, y : y + size, x : x + size])
    return torch.stack(out)


def ids(out) -> torch.Tensor:
    return torch.cat([i.reshape(i.shape[0], -1) for i in out.indices], dim=1)


def differs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a != b).float().mean())


def data_initialised_model(codebook_size: int, resolution: int, init_crops: int, merged: bool = True):
    """The FLUX-architecture model with a codebook data-initialised on photo crops' latents (see above)."""
    model = build_model(codebook_size, 32, merged=merged)
    config = coda_quantizer(FLUX_SCALES, codebook_size, init="data")
    model.quantizer = build_quantizer(config.pop("name"), dim=16, **config).eval()
    with torch.no_grad():
        init = torch.cat([model.encode_latents(b) for b in photo_crops(resolution, init_crops, 0).split(4)])
        model.quantizer.initialize(init, torch.Generator().manual_seed(0))
    return model


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model = data_initialised_model(args.codebook_size, args.resolution, args.init_crops)
    with torch.no_grad():
        x = photo_crops(args.resolution, args.eval_crops, 1)
        latents = torch.cat([model.encode_latents(b) for b in x.split(4)])
        reference = ids(model.quantize(latents, with_losses=False))
    rows = {}
    for name in args.dtypes:
        dtype, row = DTYPES[name], {}
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            row["quantizer_search_float32"] = differs(ids(model.quantize(latents, with_losses=False)), reference)
        half = copy.deepcopy(model.quantizer).to(dtype)  # the quantizer itself in half precision
        with torch.no_grad():  # indices only, as encode
            row["quantizer_search_half"] = differs(ids(half(latents.to(dtype), with_losses=False)), reference)
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            if name == "bf16" or args.encode_fp16:
                enc = torch.cat([model.encode(b).token_ids for b in x.split(4)])
                row["encode"] = differs(enc, reference)
        rows[name] = row
    return {"config": vars(args), "images": x.shape[0], "positions": int(reference.numel()), "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codebook-size", type=int, default=65536)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--init-crops", type=int, default=8, help="crops per photo for the codebook initialisation")
    p.add_argument("--eval-crops", type=int, default=2, help="crops per photo that are encoded")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"])
    p.add_argument("--encode-fp16", action="store_true", help="also encode whole images under fp16 (slow on CPU)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=None, help="also write the report as JSON")
    args = p.parse_args(argv)
    report = run(args)
    print(f"# {report['images']} crops of {len(PHOTOS)} photos, {report['positions']} token positions, "
          f"{args.codebook_size} codes, torch {torch.__version__}")  # fmt: skip
    print("| autocast | quantizer, search in float32 | quantizer, search in half precision | encode (VAE in half) |")
    print("|---|---|---|---|")
    for name, r in report["rows"].items():
        enc = f"{100 * r['encode']:.3f}%" if "encode" in r else "not run"
        print(f"| {name} | {100 * r['quantizer_search_float32']:.3f}% | {100 * r['quantizer_search_half']:.3f}% | {enc} |")
    return save_report(report, args.output)


if __name__ == "__main__":
    main()
