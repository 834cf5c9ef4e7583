"""Key names of the authors' CODA state dicts, derived from ours (``CodaVQModel.state_dict()``).

Every key of our model gets the name and shape it has in the authors' files, so the expected key set of a
released checkpoint is exactly what our model needs (nothing is left unmapped):

* LoRA (the authors' ``LoRACompatibleConv`` + ``LoRAConv2dLayer``; peft here):
  ``X.base_layer.weight`` <- ``X.weight``, ``X.lora_A.default.weight`` <- ``X.lora_layer.down.weight``
  ``(r, C_in, k, k)``, ``X.lora_B.default.weight`` <- ``X.lora_layer.up.weight`` ``(C_out, r, 1, 1)``;
* the FLUX VAE: diffusers names on both sides;
* the MAR VAE (LDM names): ``down_blocks.{i}.resnets.{j}`` <- ``down.{i}.block.{j}``, ``attentions.{j}`` <-
  ``attn.{j}``, ``downsamplers.0`` <- ``downsample``, ``mid_block.resnets.0/1`` <- ``mid.block_1/2``,
  ``mid_block.attentions.0`` <- ``mid.attn_1``, decoder ``up_blocks.{i}`` <- ``up.{L-1-i}`` (LDM indexes
  the decoder levels from the finest), ``conv_shortcut`` <- ``nin_shortcut``, ``conv_norm_out`` <-
  ``norm_out``, ``upsamplers.0`` <- ``upsample``; attention ``group_norm/to_q/to_k/to_v/to_out.0`` <-
  ``norm/q/k/v/proj_out``, whose 1x1-conv weights ``(C, C, 1, 1)`` become ``Linear`` weights ``(C, C)``;
* the quantizer (the authors' ``CODAQuantizer``): ``embedding`` <- ``codebooks.weight``,
  ``q_proj/k_proj/v_proj`` <- ``attn.to_q/to_k/to_v``, ``q_norm/k_norm`` <- ``attn.norm_q/norm_k``.
"""

from __future__ import annotations

import re

import torch

# our quantizer key (inside the shared inner quantizer) -> the authors' CODAQuantizer key
QUANTIZER_KEYS = {
    "embedding": "codebooks.weight",
    "q_proj.weight": "attn.to_q.weight", "q_proj.bias": "attn.to_q.bias",
    "k_proj.weight": "attn.to_k.weight", "k_proj.bias": "attn.to_k.bias",
    "v_proj.weight": "attn.to_v.weight", "v_proj.bias": "attn.to_v.bias",
    "q_norm.weight": "attn.norm_q.weight", "k_norm.weight": "attn.norm_k.weight",
}  # fmt: skip
SHARED_QUANTIZER_PREFIX = "quantizers.0."

# (pattern, replacement) applied in order to a diffusers AutoencoderKL key to get the LDM (MAR) key.
LDM_RENAMES = (
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.attentions\.(\d+)\.", r"encoder.down.\1.attn.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
    (r"\.resnets\.(\d+)\.", r".block.\1."),  # decoder up blocks (the level index is mapped separately)
    (r"\.upsamplers\.0\.", r".upsample."),
    (r"\.conv_shortcut\.", r".nin_shortcut."),
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"\.group_norm\.", r".norm."),
    (r"\.to_q\.", r".q."), (r"\.to_k\.", r".k."), (r"\.to_v\.", r".v."), (r"\.to_out\.0\.", r".proj_out."),
)  # fmt: skip
LDM_ATTENTION_WEIGHT = re.compile(r"\.(attn\.\d+|attn_1)\.(q|k|v|proj_out)\.weight$")


def _strip_peft(key: str) -> str:
    """peft names -> the authors' LoRA names (``base_layer`` dropped, ``lora_A/B`` -> ``lora_layer.down/up``)."""
    key = key.replace(".base_layer.", ".")
    key = key.replace(".lora_A.default.weight", ".lora_layer.down.weight")
    return key.replace(".lora_B.default.weight", ".lora_layer.up.weight")


def ldm_key(key: str, num_up_blocks: int) -> str:
    """A diffusers ``AutoencoderKL`` key (no peft names) -> the LDM / MAR ``MARAutoencoderKL`` key."""
    up = re.match(r"^decoder\.up_blocks\.(\d+)\.", key)
    if up:  # diffusers counts decoder levels from the coarsest, LDM from the finest
        key = f"decoder.up.{num_up_blocks - 1 - int(up.group(1))}." + key[up.end() :]
    for pattern, replacement in LDM_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def original_vae_key(key: str, layout: str, num_up_blocks: int) -> str:
    """Our ``model.vae`` state-dict key -> the key in the authors' ``vae.pth``."""
    key = _strip_peft(key)
    if layout == "diffusers":
        return key
    if layout == "ldm":
        return ldm_key(key, num_up_blocks)
    raise ValueError(f"unknown VAE layout {layout!r}; expected 'diffusers' or 'ldm'")


def original_vae_shape(original_key: str, shape: torch.Size, layout: str) -> tuple[int, ...]:
    """The shape a tensor has in the authors' file: LDM attention projections are 1x1 convs."""
    if layout == "ldm" and LDM_ATTENTION_WEIGHT.search(original_key):
        return (*shape, 1, 1)
    return tuple(shape)


def original_quantizer_key(key: str) -> str:
    """Our ``model.quantizer`` state-dict key (shared codebook) -> the key in the authors' ``quantizer.pth``."""
    if (
        not key.startswith(SHARED_QUANTIZER_PREFIX)
        or key[len(SHARED_QUANTIZER_PREFIX) :] not in QUANTIZER_KEYS
    ):
        raise ValueError(f"quantizer key {key!r} has no counterpart in the authors' CODAQuantizer")
    return QUANTIZER_KEYS[key[len(SHARED_QUANTIZER_PREFIX) :]]


def expected_keys(model: torch.nn.Module, layout: str) -> dict[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """``{"vae": {original key: (our key, original shape)}, "quantizer": {...}}`` for a CodaVQModel.

    Our keys are relative to ``model.vae`` / ``model.quantizer``.
    """
    num_up = len(model.vae.decoder.up_blocks)
    vae: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, tensor in model.vae.state_dict().items():
        original = original_vae_key(key, layout, num_up)
        vae[original] = (key, original_vae_shape(original, tensor.shape, layout))
    quantizer = {
        original_quantizer_key(key): (key, tuple(tensor.shape))
        for key, tensor in model.quantizer.state_dict().items()
    }
    if len(vae) != len(model.vae.state_dict()):  # two of our keys may never share one original name
        raise RuntimeError("internal error: the VAE key mapping is not one-to-one")
    return {"vae": vae, "quantizer": quantizer}
