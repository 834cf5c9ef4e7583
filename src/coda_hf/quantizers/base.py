"""Base class and registry of quantizers.

Every quantizer:
  * takes ``(B, C, H, W)`` latents and returns :class:`QuantizerOutput`: ``forward(z, with_losses=None)``,
    where ``with_losses=False`` in eval mode returns no losses (quantizers whose eval losses cost a
    pass of their own skip it; ``None``: the quantizer's default, training always computes them);
  * maps ``indices`` back exactly with :meth:`BaseQuantizer.indices_to_codes`;
  * is built from plain JSON-safe keyword arguments, recorded in ``quantizer.config``
    so that a model config can store ``{"name": ..., **config}`` and rebuild it with
    :func:`build_quantizer`.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..settings import check_arguments
from .output import QuantizerOutput, flatten_indices, unflatten_indices
from .stats import UsageTracker, single_level_stats

QUANTIZER_REGISTRY: dict[str, type[BaseQuantizer]] = {}

# Most rounds of rare-code restarts (restart_rare_codes) that a data-dependent initialisation runs; each
# round re-encodes the initialisation data, so codes that a restart left rare can restart again.
INIT_RESTART_ROUNDS = 3


def autocast_off(forward):
    """Decorator of a quantizer's ``forward``: under autocast it runs with autocast off, on its input cast to
    the quantizer's parameter dtype (float32 for a float32 model under mixed precision).

    A half-precision code search flips near-tie argmaxes over a large codebook, and in a residual stack a
    flipped code changes every later level's input; the quantizer is a few percent of a tokenizer's cost.
    """

    @functools.wraps(forward)
    def wrapped(self, z, *args, **kwargs):
        if not isinstance(z, torch.Tensor) or not torch.is_autocast_enabled(z.device.type):
            return forward(self, z, *args, **kwargs)
        dtype = next((p.dtype for p in self.parameters()), z.dtype)
        with torch.autocast(z.device.type, enabled=False):
            return forward(self, z.to(dtype), *args, **kwargs)

    return wrapped


def register_quantizer(name: str):
    """Class decorator: make a quantizer buildable from the config string ``name``."""

    def deco(cls):
        if name in QUANTIZER_REGISTRY and QUANTIZER_REGISTRY[name] is not cls:
            raise ValueError(f"quantizer name {name!r} is already registered to {QUANTIZER_REGISTRY[name].__name__}")
        QUANTIZER_REGISTRY[name] = cls
        cls.quantizer_name = name
        return cls

    return deco


def _registered(name: Any, source: str) -> type[BaseQuantizer]:
    if name not in QUANTIZER_REGISTRY:
        close = difflib.get_close_matches(str(name), list(QUANTIZER_REGISTRY), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{source}: unknown quantizer {name!r}{hint}; registered: {sorted(QUANTIZER_REGISTRY)}")
    return QUANTIZER_REGISTRY[name]


def quantizer_config(spec: Mapping[str, Any], source: str = "quantizer") -> dict[str, Any]:
    """A quantizer spec ``{"name": <registered quantizer>, **arguments}`` checked and typed by the quantizer's
    own signature (:func:`coda_hf.settings.check_arguments`): an unknown name or argument is an error naming the
    closest valid one, a value of the wrong type an error naming the argument. A stack's inner quantizer
    (arguments ``quantizer`` + ``quantizer_kwargs``) is checked the same way against ITS signature, the error
    naming the path (``quantizer.quantizer_kwargs.codebok_size``). Returns the typed copy (what a model
    config stores)."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{source} config needs a 'name' (a registered quantizer); got {spec!r}")
    arguments = dict(spec)
    cls = _registered(arguments.pop("name"), source)
    config = {"name": cls.quantizer_name, **check_arguments(cls, arguments, source)}
    params = inspect.signature(cls.__init__).parameters
    if "quantizer" in params and "quantizer_kwargs" in params:  # a stack: check its inner quantizer too
        inner_name = config.get("quantizer", params["quantizer"].default)
        inner = {"name": inner_name, **(config.get("quantizer_kwargs") or {})}
        checked = quantizer_config(inner, f"{source}.quantizer_kwargs")
        checked.pop("name")
        if config.get("quantizer_kwargs") is not None:
            config["quantizer_kwargs"] = checked
    return config


def build_quantizer(name: str, **kwargs: Any) -> BaseQuantizer:
    """Build a registered quantizer from its config string and JSON-safe kwargs (checked and typed by
    :func:`quantizer_config`)."""
    config = quantizer_config({"name": name, **kwargs}, f"quantizer {name!r}")
    return QUANTIZER_REGISTRY[config.pop("name")](**config)


def quantizer_from_config(spec: Mapping[str, Any], dim: int, dim_name: str, source: str = "quantizer") -> BaseQuantizer:
    """The quantizer a model config names (``{"name": ..., **arguments}``, :func:`quantizer_config`), with
    ``dim`` (the model's latent channels, called ``dim_name`` in errors) filled in and checked."""
    config = quantizer_config(spec, source)
    config.setdefault("dim", dim)
    quantizer = build_quantizer(**config)
    if getattr(quantizer, "dim", dim) != dim:
        raise ValueError(f"quantizer dim {quantizer.dim} must equal {dim_name} {dim}")
    return quantizer


class BaseQuantizer(nn.Module):
    """Common interface. Subclasses implement ``forward`` and ``indices_to_codes``.

    Attributes subclasses must set: ``codebook_size`` (int; implicit size for FSQ/LFQ),
    ``dim`` (latent channels C), ``num_levels`` (1 unless residual).
    """

    quantizer_name: str = ""
    codebook_size: int
    dim: int
    num_levels: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and "with_losses" not in inspect.signature(forward).parameters:
            # A quantizer written against the older ``forward(z)`` contract still takes the argument.
            @functools.wraps(forward)
            def forward_with_losses(self, z, *args, with_losses: bool | None = None, **kw):
                out = forward(self, z, *args, **kw)
                if with_losses is False and not self.training:
                    out.losses = {}
                return out

            cls.forward = forward_with_losses

    def _level_output(
        self, quantized: torch.Tensor, indices: torch.Tensor, losses: dict[str, torch.Tensor], q_for_error: torch.Tensor,
        z_for_error: torch.Tensor, with_losses: bool | None = None,
    ) -> QuantizerOutput:
        """The output of a single-level quantizer: ``(B, H, W)`` ``indices`` and its statistics, the
        quantization error measured between ``q_for_error`` and ``z_for_error`` (one layout, any)."""
        if with_losses is False and not self.training:
            losses = {}
        stats = single_level_stats(indices, self.codebook_size, q_for_error, z_for_error, self.usage)
        return QuantizerOutput(quantized=quantized, indices=[indices], losses=losses, stats=stats)

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        # Record the constructor arguments (with defaults) as the JSON-safe config.
        try:
            bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
        except TypeError:
            # copy.deepcopy / pickle rebuild the object with cls.__new__(cls) and then restore its
            # __dict__ (the config included); a real call with bad arguments fails in __init__.
            return obj
        bound.apply_defaults()
        config = {k: v for k, v in bound.arguments.items() if k != "self"}
        try:
            json.dumps(config)
        except TypeError as e:
            raise TypeError(f"{cls.__name__} arguments must be JSON-safe values: {e}") from e
        object.__setattr__(obj, "_config", copy.deepcopy(config))
        return obj

    @property
    def config(self) -> dict[str, Any]:
        """Constructor kwargs; ``build_quantizer(q.quantizer_name, **q.config)`` rebuilds it."""
        return copy.deepcopy(self._config)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **config}``: what a model config stores."""
        return {"name": self.quantizer_name, **self.config}

    @property
    def needs_data_init(self) -> bool:
        """The quantizer waits for a data-dependent initialisation (:meth:`initialize`) before training."""
        return False

    def initialize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-dependent initialisation from ``(B, C, H, W)`` latents when :attr:`needs_data_init`; else a no-op.

        ``generator``: a CPU generator for the random draws (``None``: the global RNG). A seeded one makes
        the codebook independent of what else consumed random numbers before (e.g. LoRA initialisation).

        The first training forward calls it on its own input. A model whose training input differs from
        what it quantizes at inference (a posterior sample instead of the mean) calls it first with the
        inference latents (:meth:`coda_hf.models.CodaVQModel.forward`).
        """

    @property
    def restarts_rare_codes(self) -> bool:
        """:meth:`restart_rare_codes` can restart codes (so a stack encodes its data to count them)."""
        return False

    def restart_rare_codes(
        self, features: torch.Tensor, generator: torch.Generator | None = None, indices: torch.Tensor | None = None,
    ) -> int:
        """Part of a data-dependent initialisation: restart the codes that ``(N, C)`` features rarely use;
        returns how many restarted (here: none). ``indices``: the ``(N,)`` codes the features map to under
        the current codebook, when the caller has them from an encoding pass (no second search)."""
        return 0

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Per-level index map sizes for an ``(H, W)`` latent grid."""
        return [(height, width)] * self.num_levels

    def num_tokens(self, height: int, width: int) -> int:
        return sum(h * w for h, w in self.level_shapes(height, width))

    def indices_to_codes(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """``[(B, h_l, w_l)]`` -> ``(B, C, H, W)`` quantized latents (exact inverse in eval)."""
        raise NotImplementedError

    def decode_indices(self, indices: list[torch.Tensor] | torch.Tensor, latent_size: tuple[int, int] | None = None):
        """Alias of :meth:`indices_to_codes` that also accepts ``(B, N)`` token ids (needs ``latent_size``)."""
        if isinstance(indices, torch.Tensor):
            if latent_size is None:
                raise ValueError("decode_indices with (B, N) token ids needs latent_size=(H, W)")
            indices = unflatten_indices(indices, self.level_shapes(*latent_size))
        self.validate_indices(indices)
        return self.indices_to_codes(indices)

    def validate_indices(self, indices: list[torch.Tensor]) -> None:
        """Raise ``ValueError`` naming the level for a wrong count, dtype, rank or out-of-range id."""
        if not isinstance(indices, (list, tuple)):
            raise ValueError(f"indices must be a list of (B, h, w) tensors, one per level; got {type(indices).__name__}")
        if len(indices) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels of indices, got {len(indices)}")
        for level, idx in enumerate(indices):
            if not isinstance(idx, torch.Tensor) or idx.ndim != 3:
                shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
                raise ValueError(f"indices of level {level} must be a (B, h, w) tensor; got {shape}")
            if idx.dtype.is_floating_point or idx.dtype == torch.bool:
                raise ValueError(f"indices of level {level} must be integers; got {idx.dtype}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
                raise ValueError(
                    f"indices of level {level} must lie in [0, {self.codebook_size - 1}]; "
                    f"got values in [{int(idx.min())}, {int(idx.max())}]"
                )

    def _check_input(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 4:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__} expects latents of shape (B, C, H, W); got {shape}")
        if z.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} was built for {self.dim} channels; latents have {z.shape[1]}")


__all__ = [
    "BaseQuantizer",
    "QuantizerOutput",
    "QUANTIZER_REGISTRY",
    "UsageTracker",
    "build_quantizer",
    "flatten_indices",
    "quantizer_config",
    "quantizer_from_config",
    "register_quantizer",
    "unflatten_indices",
]
