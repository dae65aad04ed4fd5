"""The ``vllm.general_plugins`` entry point: registers a contrastive wrapper for every architecture vLLM knows.

For each architecture ``A`` in vLLM's model registry (``vllm.ModelRegistry``, public) we register
``ContrastiveA`` as the lazy name ``contrastive_decoding.backends.vllm.models:ContrastiveA``; that module builds
the class on first use from ``A``'s own vLLM class (:func:`.models.wrapper_class`). No table of families: a
checkpoint is served when vLLM serves its architecture. :func:`.engine.engine_settings` points
``hf_overrides={"architectures": [wrapper_architecture(A)]}`` at it.

vLLM may load plugins several times in several processes; registering an existing name again is skipped.
This module imports no vLLM model code (the names are lazy).
"""

from __future__ import annotations

MODELS_MODULE = "contrastive_decoding.backends.vllm.models"
# the ``hf_overrides`` key that gives a wrapper its amateur (a checkpoint directory); read on the model config
AMATEUR_KEY = "contrastive_amateur_model"
# the ``hf_overrides`` key that picks how early exits are captured: "auto" (forward hooks on the decoder layers when
# the engine runs eagerly, else vLLM's aux hidden states where the architecture implements them), "aux" or "hooks"
EARLY_EXITS_KEY = "contrastive_early_exits"
EARLY_EXIT_MODES = ("auto", "aux", "hooks")
# the ``hf_overrides`` key that names the layers whose early exits are captured: "all" (default), "dola" (the union of
# DoLa's buckets), "none", or a list of indices (0 = embeddings); requests naming another layer are refused
EXIT_LAYERS_KEY = "contrastive_early_exit_layers"
WRAPPER_PREFIX = "Contrastive"


def wrapper_architecture(architecture: str) -> str:
    """The registered name of the wrapper around vLLM's ``architecture`` (``Gemma3ForCausalLM`` ->
    ``ContrastiveGemma3ForCausalLM``)."""
    return WRAPPER_PREFIX + architecture


def base_architecture(wrapper: str) -> str | None:
    """Inverse of :func:`wrapper_architecture`; ``None`` for a name that is not a wrapper's."""
    return wrapper[len(WRAPPER_PREFIX) :] if wrapper.startswith(WRAPPER_PREFIX) else None


def register() -> None:
    from vllm import ModelRegistry

    supported = set(ModelRegistry.get_supported_archs())
    for architecture in sorted(supported):
        wrapper = wrapper_architecture(architecture)
        if base_architecture(architecture) is None and wrapper not in supported:
            ModelRegistry.register_model(wrapper, f"{MODELS_MODULE}:{wrapper}")
