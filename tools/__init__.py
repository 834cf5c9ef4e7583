"""Repository tooling beside the ``coda_hf`` package, not installed with it (run from a checkout).

* :mod:`tools.data`: the offline real-image datasets (photo tiles from Debian packages and Python packages'
  bundled photos, Fashion-MNIST from its Debian package) that the reproduction trains and evaluates on;
  ``python tools/prepare_data.py --help`` builds them (needs ``pip install -e ".[data]"``).
* :mod:`tools.hub_server`: a local fake of the Hugging Face Hub's HTTP API for offline tests of
  ``push_to_hub`` / ``from_pretrained``.
"""
