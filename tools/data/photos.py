"""A small real-photo tile dataset built offline from Debian packages and the photos bundled in Python packages.

``prepare_photo_dataset`` collects the allowlisted photographs (:mod:`.photo_allowlist`), splits them BY
SCENE into train / eval (and validation, with ``validation_fraction``), cuts multi-scale tiles and writes
parquet shards plus a ``manifest.json``:

    out_dir/manifest.json
    out_dir/tiles64/train-00000-of-00008.parquet ... eval-00000-of-00004.parquet (validation-*.parquet)
    out_dir/tiles128/...
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from coda_hf.data.shards import encode_png, write_parquet_shards

from .debian import ExtractedPackage, fetch_debian_package
from .photo_allowlist import DEBIAN_SOURCES, SKIMAGE_PHOTOS, SKLEARN_PHOTOS, DebianPhotoSource, PhotoSpec
from .tiling import DEFAULT_LEVELS, iter_multiscale_tiles, split_photo_groups

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SOURCES",
    "PHOTO_FEATURES",
    "PhotoRecord",
    "collect_photos",
    "photo_shard_dir",
    "prepare_photo_dataset",
]

DEFAULT_SOURCES = tuple(s.package for s in DEBIAN_SOURCES) + ("skimage", "sklearn")
MANIFEST_VERSION = 1

PHOTO_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "source": datasets.Value("string"),
        "photo_id": datasets.Value("string"),
        "level": datasets.Value("int32"),  # the photo's short side was resized to level * tile_size
        "x": datasets.Value("int32"),  # tile position in the resized photo, pixels
        "y": datasets.Value("int32"),
    }
)


@dataclass(frozen=True)
class PhotoRecord:
    """One source photograph and its provenance (what ``manifest.json`` records)."""

    photo_id: str  # "{source}:{path}", unique
    source: str  # Debian package name, "skimage" or "sklearn"
    group: str  # scene id; a group is never split across train / validation / eval
    file: str  # absolute path of the image file
    path: str  # path inside the package tree / data folder
    package: str
    package_version: str
    license: str
    license_file: str | None
    reason: str
    upstream_license: str | None = None


def photo_shard_dir(out_dir: str | os.PathLike, tile_size: int) -> Path:
    """Folder that holds the shards of one tile size (pass it to ``load_image_shards``)."""
    return Path(out_dir) / f"tiles{tile_size}"


def _kde_metadata_license(file: Path) -> str | None:
    """Licence from a KDE wallpaper's ``metadata.json`` (``Name/contents/images/x.jpg``), if there is one."""
    for parent in list(file.parents)[:3]:
        meta = parent / "metadata.json"
        if meta.is_file():
            try:
                return json.loads(meta.read_text(encoding="utf-8"))["KPlugin"].get("License")
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _debian_records(source: DebianPhotoSource, package: ExtractedPackage) -> list[PhotoRecord]:
    copyright_file = package.copyright()
    records = []
    for spec in source.photos:
        file = package.root / spec.path
        if not file.is_file():
            raise FileNotFoundError(
                f"allowlisted photo {spec.path!r} is missing from {source.package} {package.version} ({package.root})"
            )
        records.append(
            PhotoRecord(
                photo_id=f"{source.package}:{spec.path}", source=source.package, group=spec.group, file=str(file),
                path=spec.path, package=source.package, package_version=package.version,
                license=copyright_file.license_for(source.upstream_path(spec.path)),
                license_file=str(package.copyright_path.relative_to(package.root)), reason=spec.reason,
                upstream_license=_kde_metadata_license(file),
            )
        )
    return records


def _python_package_records(
    source: str, specs: Sequence[PhotoSpec], folder: Path, version: str, license_file: str | None
) -> list[PhotoRecord]:
    records = []
    for spec in specs:
        file = folder / spec.path
        if not file.is_file():
            logger.warning("%s photo %s is not bundled in this install (%s); skipped", source, spec.path, folder)
            continue
        records.append(
            PhotoRecord(
                photo_id=f"{source}:{spec.path}", source=source, group=spec.group, file=str(file), path=spec.path,
                package=source if source != "sklearn" else "scikit-learn", package_version=version,
                license=spec.license or "unknown", license_file=license_file, reason=spec.reason,
            )
        )
    return records


def collect_photos(
    cache_dir: str | os.PathLike,
    sources: Sequence[str] = DEFAULT_SOURCES,
    debian_sources: Sequence[DebianPhotoSource] = DEBIAN_SOURCES,
    fetch: Callable[[str, str | os.PathLike], ExtractedPackage] | None = None,
) -> list[PhotoRecord]:
    """The allowlisted photographs of ``sources``, fetching Debian packages into ``cache_dir`` as needed.

    ``debian_sources`` / ``fetch`` (default :func:`fetch_debian_package`) can be replaced, e.g. by a fake
    extracted package tree in tests.
    """
    fetch = fetch or fetch_debian_package
    known = {s.package: s for s in debian_sources}
    unknown = sorted(set(sources) - set(known) - {"skimage", "sklearn"})
    if unknown:
        raise ValueError(f"unknown photo sources {unknown}; known: {sorted(known) + ['skimage', 'sklearn']}")
    records: list[PhotoRecord] = []
    for name in sources:
        if name in known:
            records += _debian_records(known[name], fetch(name, cache_dir))
        elif name == "skimage":
            import skimage
            import skimage.data

            folder = Path(skimage.data.__file__).parent
            records += _python_package_records("skimage", SKIMAGE_PHOTOS, folder, skimage.__version__, None)
        elif name == "sklearn":
            try:
                import sklearn
                import sklearn.datasets
            except ImportError:
                logger.warning("scikit-learn is not installed: its sample photos (china, flower) are skipped")
                continue
            folder = Path(sklearn.datasets.__file__).parent / "images"
            readme = folder / "README.txt"
            records += _python_package_records(
                "sklearn", SKLEARN_PHOTOS, folder, sklearn.__version__, str(readme) if readme.is_file() else None
            )
    ids = [r.photo_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate photo ids in the sources: {sorted({i for i in ids if ids.count(i) > 1})}")
    return records


def _allowlist_digest(records: Sequence[PhotoRecord]) -> str:
    text = json.dumps([(r.photo_id, r.group, r.package_version) for r in records], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_photo(file: str) -> Image.Image:
    with Image.open(file) as image:
        image.load()
        return image.convert("RGB")


def _shards_present(out_dir: Path, manifest: dict) -> bool:
    for size, splits in manifest.get("splits", {}).items():
        for info in splits.values():
            if not all((photo_shard_dir(out_dir, int(size)) / name).is_file() for name in info["shards"]):
                return False
    return True


def prepare_photo_dataset(
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    tile_sizes: Sequence[int] = (64, 128),
    eval_fraction: float = 0.2,
    seed: int = 0,
    levels: Sequence[int] = DEFAULT_LEVELS,
    stride: int | None = None,
    train_shards: int = 8,
    eval_shards: int = 4,
    sources: Sequence[str] = DEFAULT_SOURCES,
    overwrite: bool = False,
    debian_sources: Sequence[DebianPhotoSource] = DEBIAN_SOURCES,
    fetch: Callable[[str, str | os.PathLike], ExtractedPackage] | None = None,
    validation_fraction: float = 0.0,
    validation_shards: int = 2,
) -> dict:
    """Build (or reuse) the photo tile dataset in ``out_dir``; return the manifest (also ``manifest.json``).

    Photos are split by scene group (stratified per source, ``eval_fraction`` of the groups held out,
    deterministic in ``seed``; :func:`~.tiling.split_photo_groups`). ``validation_fraction > 0`` also holds
    out a validation split (``validation-*`` shards, ``validation_shards`` of them) for choosing
    hyperparameters, taken from the train groups: the eval groups stay those of the same seed without it.
    Each photo is cut into ``tile_size`` tiles at zoom ``levels`` (see :func:`~.tiling.iter_multiscale_tiles`;
    ``stride`` defaults to non-overlapping); tiles are
    shuffled with ``seed`` and written as ``train_shards`` / ``eval_shards`` parquet files per tile size.
    An existing ``manifest.json`` with the same configuration and all its shards is returned as is
    unless ``overwrite``. Downloaded / extracted packages are kept in ``cache_dir``.
    """
    out_dir = Path(out_dir)
    tile_sizes = sorted({int(s) for s in tile_sizes})
    if not tile_sizes or tile_sizes[0] < 8:
        raise ValueError(f"tile_sizes must be integers >= 8, got {tile_sizes}")
    records = collect_photos(cache_dir, sources, debian_sources, fetch)
    if not records:
        raise ValueError(f"no photographs found in sources {list(sources)}")
    config = {
        "tile_sizes": tile_sizes, "eval_fraction": eval_fraction, "seed": seed, "levels": sorted(set(levels)),
        "stride": stride, "train_shards": train_shards, "eval_shards": eval_shards, "sources": list(sources),
        "allowlist_digest": _allowlist_digest(records),
    }
    if validation_fraction > 0:  # absent otherwise, so manifests written before the option stay up to date
        config |= {"validation_fraction": validation_fraction, "validation_shards": validation_shards}
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        old = json.loads(manifest_path.read_text())
        if old.get("config") == config and _shards_present(out_dir, old):
            logger.info("photo dataset in %s is up to date; reusing it", out_dir)
            return old

    groups = split_photo_groups({r.group: r.source for r in records}, eval_fraction, seed, validation_fraction)
    split_of = {g: split for split, names in groups.items() for g in names}
    shard_counts = {"train": train_shards, "eval": eval_shards}
    if validation_fraction > 0:
        shard_counts["validation"] = validation_shards
    else:
        del groups["validation"]  # empty
    rows = {(size, split): [] for size in tile_sizes for split in shard_counts}
    photos = []
    for record in sorted(records, key=lambda r: r.photo_id):
        image = _load_photo(record.file)
        split = split_of[record.group]
        tile_counts = {}
        for size in tile_sizes:
            tiles = list(iter_multiscale_tiles(image, size, levels, None if stride is None else stride))
            rows[(size, split)] += [
                (encode_png(t.image), record.source, record.photo_id, t.level, t.x, t.y) for t in tiles
            ]
            tile_counts[str(size)] = len(tiles)
        photos.append(asdict(record) | {
            "split": split, "width": image.width, "height": image.height, "tiles": tile_counts,
        })
        logger.info("%s (%s): %s tiles", record.photo_id, split, tile_counts)

    splits: dict[str, dict] = {}
    for size in tile_sizes:
        splits[str(size)] = {}
        for split, n_shards in shard_counts.items():
            split_rows = rows[(size, split)]
            if not split_rows:
                raise ValueError(
                    f"split {split!r} of tile size {size} is empty; lower the tile size or change eval_fraction / "
                    "validation_fraction"
                )
            # Shuffle tiles so that every shard mixes photos (seeded: the same seed gives identical shards).
            stream = {"train": 0, "eval": 1, "validation": 2}[split]
            order = np.random.default_rng([seed, size, stream]).permutation(len(split_rows))
            columns = {
                name: [split_rows[i][k] for i in order] for k, name in enumerate(PHOTO_FEATURES)
            }
            names = write_parquet_shards(columns, PHOTO_FEATURES, photo_shard_dir(out_dir, size), split, n_shards)
            splits[str(size)][split] = {
                "tiles": len(split_rows),
                "photos": len({r[2] for r in split_rows}),
                "shards": names,
            }
    per_source: dict[str, dict] = {}
    for photo in photos:
        entry = per_source.setdefault(photo["source"], {"photos": 0, "package_version": photo["package_version"]})
        entry["photos"] += 1
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "config": config,
        "sources": per_source,
        "splits": splits,
        "groups": groups,
        "photos": photos,
    }
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return manifest
