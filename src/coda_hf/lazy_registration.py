"""Register coda_hf with transformers when transformers is imported, not when coda_hf is.

``import coda_hf`` must not cost transformers, diffusers and peft (``import coda_hf.quantizers`` is torch
math), yet ``import coda_hf`` followed by ``AutoModel.from_pretrained`` / ``pipeline(task="image-tokenization")``
must find the coda classes (``coda_vq`` and the ``coda_maskgit`` prior). So ``import coda_hf`` calls :func:`register_when_transformers_loads`:

* transformers already imported: register as soon as no import is in progress (at the end of
  ``import coda_hf`` itself);
* otherwise an import hook (a ``sys.meta_path`` finder) waits for ``import transformers`` and registers
  right after it, or, when that import happened inside another one (diffusers and peft import
  transformers; so do coda_hf modules), at the end of the outermost import in progress, so that the
  registration never meets a half-initialised module.

:func:`coda_hf.transformers_integration.register` (idempotent) is the explicit way. A failing
registration is reported with a warning, never by breaking ``import transformers``.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings

_state = {"registered": False}


def _register() -> None:
    if _state["registered"]:
        return
    _state["registered"] = True
    try:
        from . import maskgit  # noqa: F401  (its import registers coda_maskgit with AutoConfig / AutoModel)
        from .transformers_integration import register

        register()
    except Exception as e:  # noqa: BLE001 - never break the user's import of transformers
        warnings.warn(f"coda_hf could not register with transformers ({type(e).__name__}: {e}); "
                      "AutoModel / pipeline(task='image-tokenization') will not know coda_vq", stacklevel=2)  # fmt: skip


def _outermost_import_in_progress():
    """The spec of the first-started module import that has not finished yet (``None``: none)."""
    for module in list(sys.modules.values()):
        try:
            spec = module.__spec__
            if spec is not None and spec._initializing:
                return spec
        except AttributeError:
            continue
    return None


_WAITING_CLASSES: dict[type, type] = {}


def _waiting_class(cls: type) -> type:
    """A subclass of the spec class ``cls`` that registers once importlib marks the import finished
    (``spec._initializing = False``, set after the module's code ran), then turns back into ``cls``."""
    if cls not in _WAITING_CLASSES:

        def __setattr__(self, name, value):
            cls.__setattr__(self, name, value)
            if name == "_initializing" and not value:
                self.__class__ = cls
                _register_when_safe()

        _WAITING_CLASSES[cls] = type(f"_RegisterAfter{cls.__name__}", (cls,), {"__setattr__": __setattr__})
    return _WAITING_CLASSES[cls]


def _register_when_safe() -> None:
    """Register now if no import is in progress, else when the outermost one (e.g. diffusers, whose
    import pulled transformers in, or a coda_hf module) has finished: the registration imports diffusers
    and coda_hf modules and must never meet one of them half-initialised."""
    if _state["registered"]:
        return
    spec = _outermost_import_in_progress()
    if spec is None:
        _register()
    elif type(spec) not in _WAITING_CLASSES.values():
        try:
            spec.__class__ = _waiting_class(type(spec))
        except TypeError:  # a spec class that cannot be swapped: try now
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
