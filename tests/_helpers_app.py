"""The app on real bundled models where the package ships them, tiny random stand-ins elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from coda_hf.app import BUNDLED_NAMES, AppModels
from coda_hf.bundled import bundled_models
from coda_hf.testing.app_models import save_standin_models

PHOTO_SLOTS = ("vae", "coda", "vqgan", "prior")


def demo_photos(folder: Path) -> Path:
    """Three real photos (scikit-image's, a dev dependency) or, without it, three smooth synthetic images."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import skimage.data

        arrays = {name: getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea")}
    except ImportError:  # pragma: no cover - scikit-image is in the dev extra
        rng = np.random.default_rng(0)
        arrays = {f"synthetic-{i}": (rng.random((8, 8, 3)) * 255).astype(np.uint8) for i in range(3)}
    for name, array in arrays.items():
        image = Image.fromarray(array)
        if image.width < 64:
            image = image.resize((256, 256), Image.BICUBIC)
        image.save(folder / f"{name}.png")
    return folder


def app_models(tmp: Path) -> AppModels:
    """:class:`AppModels` for tests: the bundled photo models when present, else stand-ins (32 px)."""
    shipped = bundled_models()
    missing = [slot for slot in PHOTO_SLOTS if BUNDLED_NAMES[slot] not in shipped]
    dirs = save_standin_models(tmp / "standins") if missing else {}
    return AppModels.load(**{slot: dirs[slot] for slot in missing}, photos=demo_photos(tmp / "photos"))
