"""Hugging Face Space entry point: the coda_hf app on the package's bundled models.

Locally: ``python app.py`` (or ``coda-hf app``). As a Space (SDK gradio) this file is the app; it imports the
installed package (``pip install ".[app]"``) or, in a plain checkout, the one in ``src/``.
"""

import sys
from pathlib import Path

try:
    import coda_hf.app  # noqa: F401
except ImportError:  # a checkout without an install: use the package in src/
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from coda_hf.app import build_app, launch  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    launch(demo)
