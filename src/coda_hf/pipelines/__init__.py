"""Pipelines. Import-light: each class is imported from its module on first access.

* :class:`CodaTokenizerPipeline` (``pipelines/tokenization.py``): transformers ``image-tokenization`` task.
* :class:`CodaMaskGitPipeline` (``pipelines/maskgit.py``): diffusers class-conditional generation.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "CodaTokenizerPipeline": ".tokenization",
    "CodaMaskGitPipeline": ".maskgit",
    "CodaMaskGitPipelineOutput": ".maskgit",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
