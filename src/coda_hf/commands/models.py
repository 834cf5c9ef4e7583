"""``coda-hf models``: list the pretrained models shipped inside the package (``coda_hf.bundled_model``)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the bundled pretrained models (offline, inside the package)")
    p.add_argument("--json", action="store_true", help="print name -> {description, path} as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bundled import bundled_model, bundled_models

    models = bundled_models()
    if args.json:
        print(json.dumps({n: {"description": d, "path": bundled_model(n)} for n, d in models.items()}, indent=2))
        return 0
    if not models:
        print("this installation ships no bundled models")
        return 0
    width = max(len(n) for n in models)
    for name, description in models.items():
        print(f"{name:<{width}}  {description}")
    print("\nload one with <ModelClass>.from_pretrained(coda_hf.bundled_model(NAME))")
    return 0
