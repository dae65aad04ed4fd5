"""The ``vllm.general_plugins`` entry point: registers the contrastive model wrappers in every vLLM process.

vLLM may load plugins several times in several processes; registering an existing name again is skipped.
This module imports no vLLM model code: the wrappers are registered as lazy ``module:Class`` names.
"""

from __future__ import annotations

MODELS_MODULE = "contrastive_decoding.backends.vllm.models"
# the ``hf_overrides`` key that gives a wrapper its amateur (a checkpoint directory); read on the model config
AMATEUR_KEY = "contrastive_amateur_model"
# the checkpoint's architecture -> the wrapper architecture that adds DoLa early exits and an amateur
WRAPPERS = {
    "LlamaForCausalLM": "ContrastiveLlamaForCausalLM",
    "Qwen2ForCausalLM": "ContrastiveQwen2ForCausalLM",
}


def register() -> None:
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    for wrapper in WRAPPERS.values():
        if wrapper not in supported:
            ModelRegistry.register_model(wrapper, f"{MODELS_MODULE}:{wrapper}")
