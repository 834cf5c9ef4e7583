"""The built wheel ships every bundled model, photo and model card, and stays within the 30 MB budget."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEEL_BUDGET = 30_000_000  # bytes


@pytest.mark.slow
def test_wheel_contains_the_bundled_weights_within_budget(tmp_path):
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("coda_hf-*.whl")
    assert wheel.stat().st_size <= WHEEL_BUDGET, f"wheel: {wheel.stat().st_size:,} bytes"
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "coda_hf"
    shipped = [f for folder in ("bundled", "model_cards") for f in (package / folder).rglob("*")
               if f.is_file() and "__pycache__" not in f.parts]  # fmt: skip
    missing = [str(f.relative_to(package)) for f in shipped if f"coda_hf/{f.relative_to(package).as_posix()}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    weights = [n for n in names if n.endswith(".safetensors")]
    for model in ("photos-vae", "photos-prior/tokenizer", "photos-prior/transformer", "photos-vqgan", "fashion-vae-2d"):
        assert any(f"bundled/models/{model}/" in n for n in weights), model
