"""Turn the authors' released CODA state dicts into a ``CodaVQModel`` (and a saved directory).

Forward pass of the authors' code (``train_flux.py`` / ``train_mar.py`` ``eval()``) and ours, step by step:
posterior (we use its mean) -> ``(z - shift) * scale`` -> ``CODAQuantizer`` (multi-scale residual: area
down, attention argmax over one shared codebook, the value ``to_v(E)[idx]``, bicubic up, ``f_hat`` summed
from zero) -> ``f_hat / scale + shift`` -> LoRA-adapted decoder. The converted model computes the same
(``tests/test_convert_original.py`` checks it against golden outputs of the authors' code).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..coda_vq import CodaVQModel
from ..presets import coda_quantizer
from .architectures import ORIGINAL_RMS_NORM_EPS, ORIGINAL_SPECS, OriginalSpec, original_spec
from .card import render_card
from .keys import expected_keys
from .reading import OriginalCheckpointError, key_report, read_state_dict

logger = logging.getLogger(__name__)


def build_original_model(spec: OriginalSpec) -> CodaVQModel:
    """An (untrained) ``CodaVQModel`` with the architecture of ``spec``: the authors' quantizer settings
    (RMSNorm eps 1e-5, query/key width ``attn_dim``, one shared codebook) and LoRA with ``alpha = rank``
    (the authors' LoRA scale is 1)."""
    quantizer = coda_quantizer(
        spec.scales, spec.codebook_size, hidden_dim=spec.attn_dim, rms_norm_eps=ORIGINAL_RMS_NORM_EPS
    )
    lora = {"rank": spec.lora_rank, "alpha": float(spec.lora_rank), "target_modules": list(spec.lora_targets)}
    return CodaVQModel(
        vae_config=spec.vae_config, shift_factor=float(spec.shift_factor), scaling_factor=float(spec.scaling_factor),
        quantizer=quantizer, **{f"{part}_lora_{k}": v for part in ("encoder", "decoder") for k, v in lora.items()},
    )  # fmt: skip


def _layout_of(state: dict[str, torch.Tensor]) -> str | None:
    if any(k.startswith("encoder.down_blocks.") for k in state):
        return "diffusers"
    if any(k.startswith("encoder.down.") for k in state):
        return "ldm"
    return None


def _vae_hint(state: dict[str, torch.Tensor], spec: OriginalSpec) -> str:
    layout = _layout_of(state)
    others = [s.preset for s in ORIGINAL_SPECS.values() if s.vae_layout == layout and s.preset != spec.preset]
    if layout and layout != spec.vae_layout and others:
        return f"hint: its key names are those of the {others[0]} preset's VAE; try --preset {others[0]}"
    return ""


def _quantizer_hint(state: dict[str, torch.Tensor], spec: OriginalSpec) -> str:
    codebook = state.get("codebooks.weight")
    if codebook is None or codebook.ndim != 2 or codebook.shape[0] == spec.codebook_size:
        return ""
    for other in ORIGINAL_SPECS.values():
        if other.preset != spec.preset and other.codebook_size == codebook.shape[0]:
            return (f"hint: {codebook.shape[0]} codes is the {other.title} quantizer ({other.preset}); "
                    f"{spec.title} has {spec.codebook_size} codes")  # fmt: skip
    return f"hint: the checkpoint has {codebook.shape[0]} codes, {spec.title} has {spec.codebook_size}"


def _load_into(
    model: torch.nn.Module, state: dict[str, torch.Tensor], expected: dict[str, tuple[str, Any]]
) -> None:
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(
        {ours: state[key].reshape(shapes[ours]) for key, (ours, _) in expected.items()}, strict=True
    )


def load_original(
    vae: str | os.PathLike,
    quantizer: str | os.PathLike,
    preset: str,
    architecture: dict[str, Any] | None = None,
) -> CodaVQModel:
    """Load the authors' ``vae(_ema).pth`` and ``quantizer(_ema).pth`` into a ``CodaVQModel`` (eval mode).

    Every key is mapped (:mod:`.keys`); a missing, unexpected or mis-shaped key raises
    :class:`~.reading.OriginalCheckpointError` listing them and naming the file. ``architecture``: see
    :func:`~.architectures.original_spec`.
    """
    spec = original_spec(preset, architecture)
    vae_state, quantizer_state = read_state_dict(vae), read_state_dict(quantizer)
    model = build_original_model(spec)
    expected = expected_keys(model, spec.vae_layout)
    what = f"the {spec.title} ({spec.preset}) "
    problems = [
        key_report(vae_state, expected["vae"], vae, what + "VAE", _vae_hint(vae_state, spec)),
        key_report(quantizer_state, expected["quantizer"], quantizer, what + "quantizer", _quantizer_hint(quantizer_state, spec)),
    ]  # fmt: skip
    if any(problems):
        raise OriginalCheckpointError("\n".join(p for p in problems if p))
    _load_into(model.vae, vae_state, expected["vae"])
    _load_into(model.quantizer, quantizer_state, expected["quantizer"])
    return model.eval()


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(output: Path, write) -> None:
    """``write(tmp_dir)`` into a temporary folder next to ``output``, renamed to ``output`` when complete.

    On any error the temporary folder and any parent folders created for it are removed again.
    """
    created = [p for p in [output.parent, *output.parent.parents] if not p.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        write(tmp)
        if output.exists():
            raise FileExistsError(f"output directory {output} appeared while converting; not overwriting it")
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in created:  # innermost first; rmdir only removes what is still empty
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def convert_original(
    vae: str | os.PathLike, quantizer: str | os.PathLike, preset: str, output: str | os.PathLike, *,
    merge_lora: bool = False, architecture: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Convert the authors' files to a saved ``CodaVQModel`` directory ``output`` (must not exist yet).

    Writes ``config.json``, the safetensors weights, ``preprocessor_config.json`` and a model card
    (``README.md``: provenance, licence, the authors' reported figures). ``merge_lora``: fuse the LoRA
    weights into the VAE convs (a plain inference checkpoint). Nothing is written unless every key
    converts; the directory appears complete or not at all. Returns ``output``.
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"output directory {output} already exists; choose a new path")
    model = load_original(vae, quantizer, preset, architecture)
    if merge_lora:
        model.merge_lora()
    spec = original_spec(preset, architecture)
    sources = {
        "vae": (Path(vae).name, sha256_of(vae)),
        "quantizer": (Path(quantizer).name, sha256_of(quantizer)),
    }
    tokens = model.num_tokens(256, 256)
    card = render_card(spec, sources, tokens, merged=merge_lora, released=not architecture)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")

    _write_atomically(output, write)
    logger.info("converted %s + %s (%s) to %s", vae, quantizer, preset, output)
    return output


__all__ = ["OriginalCheckpointError", "build_original_model", "convert_original", "load_original"]
