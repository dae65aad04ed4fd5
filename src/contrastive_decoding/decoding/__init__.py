"""Decoding methods: one file per method, each a frozen validated config plus pure tensor functions.

``METHOD_CONFIGS`` maps a method name to its config class; :func:`make_method_config` builds one from keyword
parameters with did-you-mean errors for unknown methods and parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._validation import RANGE_KEY, did_you_mean
from .condition import ConditionContrastConfig
from .context import AdaCadConfig, CadConfig
from .contrastive_search import ContrastiveSearchConfig
from .dola import DolaConfig
from .expert_amateur import ExpertAmateurConfig
from .image import RitualConfig, RitualVcdConfig, VcdConfig, VddConfig
from .layer_fusion import LayerFusionConfig


@dataclass(frozen=True)
class GreedyConfig:
    """Plain decoding (greedy or sampled, as the sampling parameters say): the baseline."""


METHOD_CONFIGS: dict[str, type] = {
    "greedy": GreedyConfig,
    "contrastive_search": ContrastiveSearchConfig,
    "expert_amateur": ExpertAmateurConfig,
    "dola": DolaConfig,
    "cad": CadConfig,
    "adacad": AdaCadConfig,
    "vcd": VcdConfig,
    "ritual": RitualConfig,
    "ritual_vcd": RitualVcdConfig,
    "vdd": VddConfig,
    "condition_contrast": ConditionContrastConfig,
    "layer_fusion": LayerFusionConfig,
}

# Methods whose second sequence is the prompt without its context.
CONTEXT_FREE_METHODS = frozenset({"cad", "adacad"})
# Methods whose extra sequences are the prompt without each marked condition.
CONDITION_METHODS = frozenset({"condition_contrast"})
# Methods that need a second (amateur) model.
AMATEUR_METHODS = frozenset({"expert_amateur"})
# Methods that contrast an image with a perturbed image (or none): vision-language models only.
IMAGE_METHODS = frozenset({"vcd", "ritual", "ritual_vcd", "vdd"})


def check_method(method: str) -> str:
    if method not in METHOD_CONFIGS:
        raise ValueError(
            f"Unknown method {method!r}.{did_you_mean(method, METHOD_CONFIGS)} "
            f"Known methods: {', '.join(METHOD_CONFIGS)}."
        )
    return method


def method_parameters(method: str) -> dict[str, Any]:
    """Parameter names of ``method`` with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(METHOD_CONFIGS[check_method(method)])}


def parameter_specs(method: str) -> dict[str, dict[str, Any]]:
    """Parameters of ``method``: ``{name: {"default": ..., "range": {...}}}`` (JSON-friendly; the range is the
    field metadata the config's validation enforces, see ``_validation.number_range``)."""
    specs = {}
    for f in dataclasses.fields(METHOD_CONFIGS[check_method(method)]):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        specs[f.name] = {"default": default, "range": dict(f.metadata.get(RANGE_KEY, {}))}
    return specs


def make_method_config(method: str, **params: Any) -> Any:
    """Build the validated config of ``method``; unknown parameters raise with the valid names."""
    names = method_parameters(method)
    for key in params:
        if key not in names:
            valid = ", ".join(names) or "none"
            raise ValueError(
                f"Unknown parameter {key!r} for method {method!r}.{did_you_mean(key, names)} Valid parameters: {valid}."
            )
    return METHOD_CONFIGS[method](**params)


__all__ = [
    "AMATEUR_METHODS",
    "CONDITION_METHODS",
    "CONTEXT_FREE_METHODS",
    "IMAGE_METHODS",
    "METHOD_CONFIGS",
    "AdaCadConfig",
    "CadConfig",
    "ContrastiveSearchConfig",
    "DolaConfig",
    "ExpertAmateurConfig",
    "GreedyConfig",
    "check_method",
    "make_method_config",
    "method_parameters",
    "parameter_specs",
]
