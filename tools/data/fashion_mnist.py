"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files parsed with numpy).

Output: ``out_dir/{train,test}-XXXXX-of-XXXXX.parquet`` (columns ``image``, ``label``) and ``manifest.json``.
The package's own train (60k) / test (10k) split is kept.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from coda_hf.data.fashion_mnist import FASHION_MNIST_LABELS
from coda_hf.data.shards import encode_png, write_parquet_shards

from .debian import ExtractedPackage, fetch_debian_package

__all__ = ["FASHION_MNIST_LABELS", "prepare_fashion_mnist", "read_idx", "write_idx"]

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# IDX element type codes (http://yann.lecun.com/exdb/mnist/): all multi-byte types are big-endian.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally ``.gz``): magic ``00 00 type ndim``, ``ndim`` big-endian uint32 dims, data."""
    path = Path(path)
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4].hex()})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    dtype = _IDX_DTYPES[type_code]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends with ``.gz``)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = codes[dtype]
    data = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data += np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(data)


def _find(root: Path, stem: str) -> Path:
    found = sorted(p for p in root.rglob(stem + "*") if p.is_file())
    if not found:
        raise FileNotFoundError(f"no {stem}[.gz] file under {root}")
    return found[0]


def _to_image(pixels: np.ndarray, image_size: int, resize_mode: str, rgb: bool) -> Image.Image:
    image = Image.fromarray(pixels, mode="L")  # (28, 28) uint8
    if image_size != pixels.shape[0]:
        if resize_mode == "pad":
            pad = image_size - pixels.shape[0]
            canvas = Image.new("L", (image_size, image_size), 0)
            canvas.paste(image, (pad // 2, pad // 2))
            image = canvas
        else:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return image.convert("RGB") if rgb else image


def prepare_fashion_mnist(
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    image_size: int = 28,
    resize_mode: str = "pad",
    rgb: bool = False,
    train_shards: int = 8,
    test_shards: int = 2,
    limit: int | None = None,
    overwrite: bool = False,
    fetch: Callable[[str, str | os.PathLike], ExtractedPackage] | None = None,
) -> dict:
    """Write Fashion-MNIST as parquet shards; return the manifest (also ``out_dir/manifest.json``).

    ``image_size`` > 28 either zero-pads (``resize_mode="pad"``, e.g. 32 px with a 2 px border) or
    bicubic-upscales (``"resize"``); ``rgb`` repeats the gray channel. ``limit`` keeps the first N images of
    each split (for smoke tests). An up-to-date manifest is reused unless ``overwrite``. ``fetch`` (default
    :func:`fetch_debian_package`) provides the unpacked package.
    """
    if resize_mode not in ("pad", "resize"):
        raise ValueError(f"resize_mode must be 'pad' or 'resize', got {resize_mode!r}")
    if image_size < 28:
        raise ValueError(f"image_size must be >= 28 (the native size), got {image_size}")
    out_dir = Path(out_dir)
    package = (fetch or fetch_debian_package)(FASHION_MNIST_PACKAGE, cache_dir)
    config = {"image_size": image_size, "resize_mode": resize_mode, "rgb": rgb, "train_shards": train_shards,
              "test_shards": test_shards, "limit": limit, "package_version": package.version}
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        old = json.loads(manifest_path.read_text())
        if old.get("config") == config and all(
            (out_dir / name).is_file() for info in old["splits"].values() for name in info["shards"]
        ):
            return old
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_LABELS))}
    )
    splits = {}
    for split, n_shards in (("train", train_shards), ("test", test_shards)):
        image_file, label_file = (_find(package.root, stem) for stem in _IDX_FILES[split])
        images, labels = read_idx(image_file), read_idx(label_file)  # (N, 28, 28) uint8, (N,) uint8
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{image_file} / {label_file}: shapes {images.shape} and {labels.shape} do not match")
        if labels.max(initial=0) >= len(FASHION_MNIST_LABELS):
            raise ValueError(f"{label_file}: label {labels.max()} out of range 0..9")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        columns = {
            "image": [encode_png(_to_image(img, image_size, resize_mode, rgb)) for img in images],
            "label": labels.astype(np.int64).tolist(),
        }
        names = write_parquet_shards(columns, features, out_dir, split, n_shards)
        splits[split] = {
            "images": len(labels), "shards": names,
            "label_counts": np.bincount(labels, minlength=len(FASHION_MNIST_LABELS)).tolist(),
            "files": [str(image_file.relative_to(package.root)), str(label_file.relative_to(package.root))],
        }
    copyright_file = package.copyright()
    manifest = {
        "config": config,
        "package": FASHION_MNIST_PACKAGE,
        "package_version": package.version,
        "license": copyright_file.default_license,
        "license_file": str(package.copyright_path.relative_to(package.root)),
        "labels": list(FASHION_MNIST_LABELS),
        "splits": splits,
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return manifest
