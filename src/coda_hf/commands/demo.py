"""``coda-hf demo``: tokenize and reconstruct the bundled photos with the bundled models, sample the bundled
prior, and write PNG grids, the tokens, ``metrics.json`` and an HTML report (:mod:`coda_hf.demo`). Offline.

Existing outputs in ``--output-dir`` are refused unless ``--overwrite`` (checked before any work); every file
is written atomically.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "coda-hf-demo"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the main job end to end on the bundled photos and models (offline, no options needed)"
    )
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                   help="folder for reconstructions.png, prior_samples.png, tokens.safetensors, metrics.json, index.html")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier demo in --output-dir")
    p.add_argument("--samples", type=int, default=16, help="prior samples in prior_samples.png")
    p.add_argument("--steps", type=int, default=8, help="MaskGIT unmasking steps of the prior samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo, summary_lines

    for option, value in (("--samples", args.samples), ("--steps", args.steps)):
        if value < 1:
            raise ValueError(f"{option} {value}: must be at least 1")
    report = run_demo(
        args.output_dir, overwrite=args.overwrite, progress=not args.no_progress, num_samples=args.samples,
        num_inference_steps=args.steps, seed=args.seed,
    )  # fmt: skip
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.output_dir}/index.html (and the PNG grids, tokens.safetensors, metrics.json) "
          f"in {report['wall_s']:.1f} s")  # fmt: skip
    return 0
