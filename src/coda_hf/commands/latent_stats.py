"""``coda-hf latent-stats``: measure a VAE's latent shift / scale on images (and store them in its config)."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("latent-stats", help="measure a VAE's latent shift_factor / scaling_factor on images")
    p.add_argument("--vae", required=True, help="saved diffusers AutoencoderKL directory (or Hub id without --write)")
    p.add_argument("--subfolder", default=None, help="e.g. 'vae' inside a pipeline repository")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder of images (recursive), or .parquet / webdataset .tar shards")
    src.add_argument("--dataset_name", "--dataset-name", dest="dataset_name", help="Hub dataset id")
    p.add_argument("--split", default=None, help="dataset split (default 'train' for --data)")
    p.add_argument("--num-images", type=int, default=512, help="measure on the first N images")
    p.add_argument("--resolution", type=int, default=256, help="center-crop and resize to this size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--write", action="store_true", help="store the factors in the VAE directory's config.json")
    p.add_argument("--output", default=None, help="also write the measured numbers to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..metrics.eval_data import image_batches, load_image_dataset
    from ..models.latent_stats import estimate_latent_normalization, write_latent_normalization
    from ..models.loading import load_autoencoder_kl
    from ..output_files import check_output_file, write_text_atomic

    if args.output:
        check_output_file(args.output, overwrite=args.overwrite, option="--output")
    vae = load_autoencoder_kl(args.vae, subfolder=args.subfolder).eval()
    dataset = load_image_dataset(data=args.data, dataset_name=args.dataset_name, split=args.split)
    batches = image_batches(dataset, args.resolution, batch_size=args.batch_size, num_images=args.num_images)
    stats = estimate_latent_normalization(vae, batches)
    print(json.dumps(stats, indent=2))
    if args.write:
        target = args.vae if args.subfolder is None else f"{args.vae}/{args.subfolder}"
        logger.info("wrote shift_factor / scaling_factor to %s", write_latent_normalization(target, stats))
    if args.output:
        write_text_atomic(args.output, json.dumps(stats, indent=2) + "\n")
    return 0
