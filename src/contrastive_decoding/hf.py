"""Drop-in ``custom_generate`` functions for transformers' ``model.generate``, one per method of the registry.

import contrastive_decoding as cd
model.generate(**inputs, custom_generate=cd.hf.contrastive_search, penalty_alpha=0.6, top_k=4)

The names are the methods' (``cd.hf.plain`` is plain decoding through our loop, also as ``cd.hf.greedy``); each
is the callable its ``MethodSpec.hf_function`` names, imported on first use.
"""

from __future__ import annotations

from typing import Any

from .decoding import registry


def _exports() -> dict[str, str]:
    table = {}
    for spec in registry.specs():
        if spec.hf_function is not None:
            for name in (spec.name, *spec.aliases):
                table[name] = spec.hf_function
    return table


def __getattr__(name: str) -> Any:
    path = _exports().get(name)
    if path is None:
        raise AttributeError(f"module 'contrastive_decoding.hf' has no attribute {name!r}")
    return registry.load(path)


def __dir__() -> list[str]:
    return sorted(_exports())


__all__ = sorted(_exports())
