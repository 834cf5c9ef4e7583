"""``coda-hf evaluate``: reconstruction metrics, a table row and figures for a saved tokenizer.

Wires :func:`coda_hf.metrics.evaluate_tokenizer` to a saved model and an image source; runs on one
process or under ``accelerate launch`` (metrics are reduced across processes). Unreadable images are skipped
with a warning and counted (``skipped_images`` in metrics.json). The output folder is checked before the
work; existing results there are refused unless ``--overwrite``; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

OUTPUT_FILES = ("metrics.json", "metrics.md", "reconstructions.png", "code_usage.png", "quant_error.png",
                "latent_pca.png")  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="reconstruction metrics (PSNR, SSIM, FD, rFID, codebook usage) and plots")
    p.add_argument("--model", required=True, help="saved CodaVQModel / VQGANModel / AutoencoderKL directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of images (recursive), or .parquet / webdataset .tar shards")
    src.add_argument("--dataset_name", "--dataset-name", dest="dataset_name", help="Hub dataset id")
    p.add_argument("--split", default=None, help="dataset split (default 'train' for --data; required with --dataset_name)")
    p.add_argument("--num-images", type=int, default=None, help="evaluate the first N images (default: all)")
    p.add_argument("--output-dir", default="eval", help="where metrics.json, metrics.md and the PNG plots go")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch per process")
    p.add_argument("--resolution", type=int, default=256, help="images are center-cropped to a square and resized to this size")
    p.add_argument("--inception-weights", default=None,
                   help="pytorch-fid Inception weights (.pth/.safetensors file, folder or Hub id): adds rfid")  # fmt: skip
    p.add_argument("--num-grid-images", type=int, default=8, help="images in the original-vs-reconstruction grid")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --output-dir")
    p.add_argument("--cpu", action="store_true", help="force CPU (also for multi-process gloo runs)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from accelerate import Accelerator

    from ..distributed import owns_no_process_group_yet, release_distributed
    from ..metrics import default_feature_extractors, evaluate_tokenizer, metrics_markdown_row
    from ..metrics.eval_data import image_batches, load_image_dataset
    from ..metrics.evaluation import MARKDOWN_HEADER
    from ..models.loading import load_tokenizer
    from ..output_files import check_output_dir, write_text_atomic

    for option in ("num_images", "batch_size", "resolution"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1; got {value}")
    out = check_output_dir(args.output_dir, OUTPUT_FILES, overwrite=args.overwrite)
    model = load_tokenizer(args.model, allow_continuous=True)
    dataset = load_image_dataset(data=args.data, dataset_name=args.dataset_name, split=args.split)
    owns_process_group = owns_no_process_group_yet()
    accelerator = Accelerator(cpu=args.cpu)
    model = model.to(accelerator.device).eval()
    skipped: list[str] = []
    batches = image_batches(
        dataset, resolution=args.resolution, batch_size=args.batch_size, num_images=args.num_images,
        rank=accelerator.process_index, world_size=accelerator.num_processes, skipped=skipped,
    )  # fmt: skip
    metrics = evaluate_tokenizer(
        model, batches, feature_extractors=default_feature_extractors(args.inception_weights),
        output_dir=out, num_grid_images=args.num_grid_images, progress=not args.no_progress,
    )  # fmt: skip
    num_skipped = int(accelerator.reduce(torch.tensor([len(skipped)], device=accelerator.device), "sum").item())
    metrics.update(
        model=str(args.model), dataset=args.data or args.dataset_name, split=args.split, resolution=args.resolution,
        model_class=type(model).__name__, skipped_images=num_skipped,
    )  # fmt: skip
    if num_skipped:
        logger.warning("skipped %d unreadable image(s) (named above)", num_skipped)
    if accelerator.is_main_process:
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text_atomic(out / "metrics.md", MARKDOWN_HEADER + "\n" + metrics_markdown_row(metrics, Path(args.model).name) + "\n")
        logger.info("wrote %s: %s", out / "metrics.json", {k: v for k, v in metrics.items() if isinstance(v, float)})
    accelerator.wait_for_everyone()
    release_distributed(accelerator, owns_process_group)
    return 0
