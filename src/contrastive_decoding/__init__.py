"""Contrastive decoding methods for Hugging Face transformers (and vLLM).

    import contrastive_decoding as cd
    texts = cd.generate(model, tokenizer, ["The capital of France is"], method="dola", dola_layers="high")
    model.generate(**inputs, custom_generate=cd.hf.contrastive_search, penalty_alpha=0.6, top_k=4)

Heavy imports (torch, transformers) happen on first use, so ``contrastive-decoding --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "generate": ("contrastive_decoding.api", "generate"),
    "generate_outputs": ("contrastive_decoding.api", "generate_outputs"),
    "GenerationOutput": ("contrastive_decoding.api", "GenerationOutput"),
    "score": ("contrastive_decoding.scoring", "score"),
    "ContinuationScore": ("contrastive_decoding.scoring", "ContinuationScore"),
    "PrefixCache": ("contrastive_decoding.prefix_cache", "PrefixCache"),
    "METHOD_CONFIGS": ("contrastive_decoding.decoding", "METHOD_CONFIGS"),
    "make_method_config": ("contrastive_decoding.decoding", "make_method_config"),
    "hf": ("contrastive_decoding.hf", None),
    "models": ("contrastive_decoding.models", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'contrastive_decoding' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


__all__ = ["__version__", *_LAZY]
