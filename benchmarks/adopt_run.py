"""``reproduce.py --adopt RUN=DIR``: a training stage's model, trained by another command with the stage's
recipe, copied into ``WORK/runs/RUN`` instead of trained again (e.g. the 4x VAE: the bundled ``photos-vae``
is the reproduction's stage 0 at 9,600 steps on the same wallpaper photos).

The copy is checked against the stage's ``model_kwargs``, keeps a ``provenance.json`` (source, SHA-256 of the
weights, note) that the fair report shows, and writes the stage's done marker last. Runs that stages after it
(latent statistics, evaluation) then treat as their own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bundled_stages import copy_model_files, write_json
from reproduce import shown_path

WEIGHTS = "diffusion_pytorch_model.safetensors"


def check_recipe(run: str, stage_config: dict, source: Path) -> None:
    """Raise ValueError unless ``source`` holds a saved model whose config.json agrees with every
    ``model_kwargs`` entry of the stage's training config."""
    config_file = source / "config.json"
    if not config_file.is_file() or not (source / WEIGHTS).is_file():
        raise ValueError(f"--adopt {run}={source}: no saved model there (config.json and {WEIGHTS} expected)")
    if "model_kwargs" not in stage_config:
        raise ValueError(f"--adopt {run}: not a training stage of this plan (no model_kwargs in its config)")
    saved = json.loads(config_file.read_text())
    wrong = {k: (v, saved.get(k)) for k, v in stage_config["model_kwargs"].items() if saved.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: stage {want!r}, {config_file} {got!r}" for k, (want, got) in sorted(wrong.items()))
        raise ValueError(f"--adopt {run}={source}: another architecture than the stage's ({details})")


def adopt(run: str, stage_config: dict, done_marker: Path, source: Path) -> bool:
    """Copy the model in ``source`` into ``done_marker.parent`` (``WORK/runs/RUN``); False if the run is already
    complete (trained or adopted). Refuses to overwrite a run that has started training (its checkpoints)."""
    check_recipe(run, stage_config, source)
    dst = done_marker.parent
    if done_marker.is_file():
        return False
    if dst.is_dir() and any(dst.iterdir()):
        raise ValueError(f"--adopt {run}: {dst} already holds a run that has not finished; move it away first")
    shown = shown_path(source)
    digest = hashlib.sha256((source / WEIGHTS).read_bytes()).hexdigest()
    has_summary = (source / done_marker.name).is_file()
    copy_model_files(source, dst, last=done_marker.name if has_summary else None)
    write_json(dst / "provenance.json", {"copied_from": shown, "weights_sha256": digest,
                                         "note": f"reproduce.py --adopt, weights SHA-256 {digest[:12]}"})
    if not has_summary:  # the done marker, last: says what it is, claims no step count
        write_json(done_marker, {"adopted_from": shown, "global_step": None})
    return True
