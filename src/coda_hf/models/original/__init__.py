"""Load the authors' released CODA checkpoints (LeapLabTHU/CODA, arXiv 2503.17760) into ``CodaVQModel``.

``load_original(vae_pth, quantizer_pth, preset)`` returns the model; ``convert_original(..., output)``
writes a normal safetensors ``CodaVQModel`` directory (``coda-hf convert-original`` on the command line).
"""

from .architectures import ORIGINAL_SPECS, OriginalSpec, original_spec
from .convert import build_original_model, convert_original, load_original
from .reading import OriginalCheckpointError, read_state_dict

__all__ = [
    "ORIGINAL_SPECS", "OriginalCheckpointError", "OriginalSpec", "build_original_model", "convert_original",
    "load_original", "original_spec", "read_state_dict",
]  # fmt: skip
