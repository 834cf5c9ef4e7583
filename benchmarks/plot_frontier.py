#!/usr/bin/env python
"""Rate-distortion frontier of an equal-bits reproduction: PSNR and FD-EffNet against bits per pixel, from the
``results.json`` that ``benchmarks/reproduce.py --config cpu-latent16-fair`` writes (nothing else is read).

    python benchmarks/plot_frontier.py --results runs/fair/results.json --output frontier.png

One curve per method and stage-0 VAE (CODA, the training-free quantile quantizer, the multi-scale VQGAN),
through the main rows (mean +- std over seeds, error bars) and the frontier points (one seed); the single-scale
VQGAN and the quantile quantizer + LoRA as single points; each continuous VAE as a dashed line (its ceiling).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STYLE = {"coda": ("CODA", "tab:blue", "o"), "ptq": ("quantile bins (training-free)", "tab:orange", "s"),
         "ptqlora": ("quantile bins + LoRA", "tab:red", "P"), "msvqgan": ("multi-scale VQGAN (6N)", "tab:green", "^"),
         "vqgan-f2": ("single-scale VQGAN f2 (6N)", "tab:purple", "v"), "vae": ("continuous VAE", "black", None)}  # fmt: skip
PANELS = (("psnr", "PSNR (dB), higher is better"), ("fd_effnet", "FD-EffNet, lower is better"))


def curves(results: dict) -> dict[tuple[str, str | None], list[dict]]:
    """``{(method, vae): [rows sorted by bits per pixel]}`` over the main and frontier rows with figures."""
    out: dict[tuple[str, str | None], list[dict]] = {}
    for row in [*results["rows"].values(), *results["frontier"].values()]:
        if "bits_per_pixel" in row or row["method"] == "vae" and "psnr" in row:
            out.setdefault((row["method"], row["vae"]), []).append(row)
    return {k: sorted(v, key=lambda r: r.get("bits_per_pixel", 0.0)) for k, v in out.items()}


def plot(results: dict, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vaes = sorted({row["vae"] for row in results["rows"].values() if row["vae"]})
    dashes = {v: ls for v, ls in zip(vaes, ("-", "--", ":", "-."))}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (key, title) in zip(axes, PANELS):
        for (method, vae), rows in curves(results).items():
            label, color, marker = STYLE[method]
            name = f"{label}, VAE {vae}" if vae else label
            if method == "vae":
                ax.axhline(rows[0][key], color=color, ls=dashes.get(vae, "-"), lw=1, label=f"{name} (ceiling)")
                continue
            xs = [r["bits_per_pixel"] for r in rows]
            ys = [r[key] for r in rows]
            errs = [r.get(f"{key}_std", 0.0) for r in rows]
            ax.errorbar(xs, ys, yerr=errs, color=color, marker=marker, ls=dashes.get(vae, "-") if len(rows) > 1 else "none",
                        capsize=3, label=name)  # fmt: skip
        ax.set_xlabel("bits per pixel (tokens x log2(codebook) / pixels)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", required=True, help="results.json of a cpu-latent16-fair workdir (the report stage)")
    p.add_argument("--output", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        p.error(f"--results {path}: no such file (run the report stage first)")
    results = json.loads(path.read_text())
    if "frontier" not in results:
        p.error(f"--results {path}: not the report of an equal-bits configuration (no 'frontier' rows)")
    print(plot(results, Path(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
