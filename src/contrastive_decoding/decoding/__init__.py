"""Decoding methods: one file per method, each a frozen validated config, pure tensor functions and its
``SPECS`` (:class:`~.spec.MethodSpec`), collected by :mod:`.registry`.

Everything here is derived from the registry: ``METHOD_CONFIGS`` maps each method name to its config class, the
``*_METHODS`` sets name the methods that take an extra input, and :func:`make_method_config` builds a config from
keyword parameters with did-you-mean errors for unknown methods and parameters. Method names resolve aliases
(``"greedy"`` is ``"plain"``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import registry
from ._validation import RANGE_KEY, did_you_mean
from .calibration import ContextualCalibrationConfig, PosthocDebiasConfig
from .condition import ConditionContrastConfig
from .context import AdaCadConfig, CadConfig
from .contrastive_search import ContrastiveSearchConfig
from .dola import DolaConfig
from .expert_amateur import ExpertAmateurConfig
from .layer_fusion import LayerFusionConfig
from .plain import PlainConfig
from .rerank import RerankConfig
from .ritual import RitualConfig
from .ritual_vcd import RitualVcdConfig
from .sled import SledConfig
from .spec import AMATEUR, CONDITIONS, CONTEXT_FREE_PROMPT, IMAGE, MethodSpec
from .vcd import VcdConfig
from .vdd import VddConfig

GreedyConfig = PlainConfig  # the config of the "greedy" alias of plain decoding


class _MethodConfigs(dict):
    """``{name: config class}`` over the canonical names; an alias (``"greedy"``) looks up its method."""

    def __missing__(self, key: str) -> type:
        try:
            spec = registry.get_spec(key)
        except ValueError as error:  # unknown: the registry's message, with a did-you-mean
            raise KeyError(str(error)) from None
        return self[spec.name]


METHOD_CONFIGS: dict[str, type] = _MethodConfigs((spec.name, spec.config) for spec in registry.specs())

# Methods whose second sequence is the prompt without its context.
CONTEXT_FREE_METHODS = registry.taking(CONTEXT_FREE_PROMPT)
# Methods whose extra sequences are the prompt without each marked condition.
CONDITION_METHODS = registry.taking(CONDITIONS)
# Methods that need a second (amateur) model (layer fusion only accepts one).
AMATEUR_METHODS = registry.needing(AMATEUR)
# Methods that score answer choices and do not generate (calibration against a content-free input).
SCORING_ONLY_METHODS = registry.scoring_only()
# Methods that contrast an image with a perturbed image (or none): vision-language models only.
IMAGE_METHODS = registry.taking(IMAGE)


def check_method(method: str) -> str:
    """The canonical name of ``method``; unknown names raise with a did-you-mean."""
    return registry.resolve(method)


def method_parameters(method: str) -> dict[str, Any]:
    """Parameter names of ``method`` with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(registry.get_spec(method).config)}


def parameter_specs(method: str) -> dict[str, dict[str, Any]]:
    """Parameters of ``method``: ``{name: {"default": ..., "range": {...}}}`` (JSON-friendly; the range is the
    field metadata the config's validation enforces, see ``_validation.number_range``)."""
    specs = {}
    for f in dataclasses.fields(registry.get_spec(method).config):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        specs[f.name] = {"default": default, "range": dict(f.metadata.get(RANGE_KEY, {}))}
    return specs


def make_method_config(method: str, **params: Any) -> Any:
    """Build the validated config of ``method``; unknown parameters raise with the valid names."""
    spec = registry.get_spec(method)
    names = method_parameters(method)
    for key in params:
        if key not in names:
            valid = ", ".join(names) or "none"
            raise ValueError(
                f"Unknown parameter {key!r} for method {method!r}.{did_you_mean(key, names)} Valid parameters: {valid}."
            )
    return spec.config(**params)


__all__ = [
    "AMATEUR_METHODS",
    "CONDITION_METHODS",
    "CONTEXT_FREE_METHODS",
    "IMAGE_METHODS",
    "METHOD_CONFIGS",
    "SCORING_ONLY_METHODS",
    "AdaCadConfig",
    "CadConfig",
    "ConditionContrastConfig",
    "ContextualCalibrationConfig",
    "ContrastiveSearchConfig",
    "DolaConfig",
    "ExpertAmateurConfig",
    "GreedyConfig",
    "LayerFusionConfig",
    "MethodSpec",
    "PlainConfig",
    "PosthocDebiasConfig",
    "RerankConfig",
    "RitualConfig",
    "RitualVcdConfig",
    "SledConfig",
    "VcdConfig",
    "VddConfig",
    "check_method",
    "make_method_config",
    "method_parameters",
    "parameter_specs",
    "registry",
]
