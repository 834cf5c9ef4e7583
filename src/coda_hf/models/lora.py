"""LoRA on the Conv2d layers of a VAE encoder or decoder (peft), and fusing it back.

The adapter structure is rebuilt from the model config in ``CodaVQModel.__init__``, before any weights
are loaded, so an unfused checkpoint (``...conv1.base_layer.weight`` + ``...conv1.lora_A.default.weight``)
loads every key and nothing stays random.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

ADAPTER_NAME = "default"


def add_conv_lora(module: nn.Module, rank: int, alpha: float, target_modules: list[str]) -> nn.Module:
    """Wrap the Conv2d layers of ``module`` whose names end with one of ``target_modules`` in LoRA.

    ``lora_B`` starts at zero, so the wrapped module computes exactly what it did before.
    Raises ``ValueError`` when no layer matches.
    """
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive to add an adapter; got {rank}")
    if not target_modules:
        raise ValueError("LoRA target_modules must name at least one Conv2d layer (e.g. ['conv1', 'conv2'])")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=list(target_modules), lora_dropout=0.0)
    try:
        inject_adapter_in_model(config, module, adapter_name=ADAPTER_NAME)
    except ValueError as e:
        raise ValueError(f"LoRA target_modules {list(target_modules)} match no layer of {type(module).__name__}: {e}") from e
    bad = [n for n, m in module.named_modules() if isinstance(m, LoraLayer) and not isinstance(m.get_base_layer(), nn.Conv2d)]
    if bad:
        raise ValueError(f"LoRA target_modules must select Conv2d layers only; these are not: {bad[:5]}")
    return module


def lora_layers(module: nn.Module) -> dict[str, LoraLayer]:
    """Name -> peft LoRA layer, for every adapted layer inside ``module``."""
    return {n: m for n, m in module.named_modules() if isinstance(m, LoraLayer)}


def merge_conv_lora(module: nn.Module) -> int:
    """Fuse every LoRA layer of ``module`` into its base conv and put the plain conv back. Returns the count."""
    layers = lora_layers(module)
    for name, layer in layers.items():
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return len(layers)
