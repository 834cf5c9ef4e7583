"""Register coda_hf with transformers when transformers is imported, not when coda_hf is.

``import coda_hf`` must not cost transformers, diffusers and peft (``import coda_hf.quantizers`` is torch
math), yet ``import coda_hf`` followed by ``AutoModel.from_pretrained`` / ``pipeline(task="image-tokenization")``
must find the coda classes. So ``import coda_hf`` calls :func:`register_when_transformers_loads`:

* transformers already imported: register as soon as no coda_hf module is half-imported;
* otherwise an import hook (a ``sys.meta_path`` finder) waits for ``import transformers`` and registers
  right after it, or, when a coda_hf module is itself being imported (its diffusers / peft import pulled
  transformers in), at the end of the outermost such import, so that the registration never imports a
  half-initialised coda_hf module.

:func:`coda_hf.transformers_integration.register` (idempotent) is the explicit way. A failing
registration is reported with a warning, never by breaking ``import transformers``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

_state = {"registered": False}


def _register() -> None:
    if _state["registered"]:
        return
    _state["registered"] = True
    try:
        from .transformers_integration import register

        register()
    except Exception as e:  # noqa: BLE001 - never break the user's import of transformers
        warnings.warn(f"coda_hf could not register with transformers ({type(e).__name__}: {e}); "
                      "AutoModel / pipeline(task='image-tokenization') will not know coda_vq", stacklevel=2)  # fmt: skip


def _outermost_import_in_progress():
    """The spec of the first-started coda_hf module import that has not finished, or ``None``."""
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if (name == "coda_hf" or name.startswith("coda_hf.")) and getattr(spec, "_initializing", False):
            return spec
    return None


class _RegisterWhenDone(importlib.machinery.ModuleSpec):
    """A module spec that registers once importlib marks its import finished (``_initializing = False``)."""

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name == "_initializing" and not value:
            self.__class__ = importlib.machinery.ModuleSpec
            _register_when_safe()


def _register_when_safe() -> None:
    spec = _outermost_import_in_progress()
    if spec is None:
        _register()
    elif isinstance(spec, _RegisterWhenDone):
        return  # already waiting for it
    elif type(spec) is importlib.machinery.ModuleSpec:
        spec.__class__ = _RegisterWhenDone
    else:  # a spec of another class: give up waiting and register now
        _register()


class _RegisteringLoader(importlib.abc.Loader):
    """Executes transformers with its own loader, then registers."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader  # as if this hook had never been there
        _TransformersHook.remove()
        self.loader.exec_module(module)
        _register_when_safe()


class _TransformersHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _RegisteringLoader):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None

    @staticmethod
    def remove() -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TransformersHook)]


def register_when_transformers_loads() -> None:
    """Arrange the registration (see the module docstring); idempotent."""
    if _state["registered"]:
        return
    if "transformers" in sys.modules:
        _register_when_safe()
    elif not any(isinstance(f, _TransformersHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TransformersHook())


__all__ = ["register_when_transformers_loads"]
