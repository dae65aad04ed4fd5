"""``contrastive_decoding.vllm``: the public import of the vLLM engine helper.

    from contrastive_decoding.vllm import LLM
    llm = LLM("smollm2-135m")                                   # a `models pull` name or a checkpoint directory
    llm.generate(["The capital of France is"], method="dola", dola_layers="high", repetition_penalty=1.2)

The code lives in :mod:`contrastive_decoding.backends.vllm.engine` (see its docstring for the engine settings);
this module only re-exports its public names, so user code and scripts keep one stable import. Importing it
does not import vLLM (``LLM(...)`` does).
"""

from __future__ import annotations

from .backends.vllm.engine import (
    AMATEUR_KEY,
    ASYNC_SCHEDULER_CLS,
    CPU_DEFAULTS,
    LLM,
    LOGITS_PROCESSORS,
    SCHEDULER_CLS,
    engine_settings,
)

__all__ = [
    "AMATEUR_KEY",
    "ASYNC_SCHEDULER_CLS",
    "CPU_DEFAULTS",
    "LLM",
    "LOGITS_PROCESSORS",
    "SCHEDULER_CLS",
    "engine_settings",
]
