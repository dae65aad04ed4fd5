"""A method call: a method's spec, its validated config and the sampling parameters, built once at the edge.

The CLI, the benchmark runner, ``generate`` / ``score`` and the vLLM engine helper take either a method name
with keyword parameters or a :class:`MethodCall`; whichever comes in is validated here once and the same object
travels down to the backend, which reads ``call.config`` (no second validation, no rebuilding).

    >>> call = method_call("dola", dola_layers="high", repetition_penalty=1.2)
    >>> call.name, call.config.dola_layers, call.sampling
    ('dola', 'high', {'repetition_penalty': 1.2})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .decoding import make_method_config, method_parameters
from .decoding._validation import check_range, did_you_mean
from .decoding.registry import get_spec
from .decoding.spec import MethodSpec
from .generation import SAMPLING_PARAMETERS
from .samplers.config import SamplingConfig


def split_parameters(method: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``params`` into (method parameters, sampling parameters); unknown names raise with a hint."""
    method_names = method_parameters(method)
    method_params, sampling_params = {}, {}
    for key, value in params.items():
        if key in method_names:
            method_params[key] = value
        elif key in SAMPLING_PARAMETERS:
            sampling_params[key] = value
        else:
            valid = [*method_names, *SAMPLING_PARAMETERS]
            raise ValueError(
                f"Unknown parameter {key!r} for method {method!r}.{did_you_mean(key, valid)} "
                f"Valid parameters: {', '.join(valid)}."
            )
    return method_params, sampling_params


def check_sampling(method: str, sampling: dict[str, Any]) -> None:
    """Validate the sampling parameters (ranges, and whether the method samples at all)."""
    params = dict(sampling)
    repetition_penalty = params.pop("repetition_penalty", None)
    config = SamplingConfig(**params)  # validates ranges
    if repetition_penalty is not None:
        check_range("repetition_penalty", repetition_penalty, 0.0, float("inf"), low_inclusive=False)
    spec = get_spec(method)
    if config.do_sample and not spec.samples:
        raise ValueError(f"{spec.name} is deterministic; do_sample=True is not supported with it")
    if spec.needs_sampling and not config.do_sample:
        raise ValueError(
            f"{spec.name} ranks sampled candidates; do_sample=False is not supported with it: pass "
            "do_sample=True (RankGen samples with top_p=0.9)"
        )


@dataclass(frozen=True)
class MethodCall:
    """One method with its validated config and (validated) sampling parameters.

    ``label`` is the name the user typed (``"greedy"`` stays ``"greedy"`` in output rows); ``spec.name`` is the
    canonical one. ``params`` are the method parameters as given (for records and fingerprints).
    """

    spec: MethodSpec
    config: Any
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    sampling: dict[str, Any] = field(default_factory=dict, compare=False)
    label: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    def all_params(self) -> dict[str, Any]:
        """Method and sampling parameters together, as keyword arguments."""
        return {**self.params, **self.sampling}


def method_call(method: str | MethodCall, **params: Any) -> MethodCall:
    """Validate ``method`` and ``params`` once; a :class:`MethodCall` passes through (with no extra params)."""
    if isinstance(method, MethodCall):
        if params:
            raise ValueError(
                f"parameters {', '.join(params)} given beside a MethodCall: put them in method_call() instead"
            )
        return method
    spec = get_spec(method)
    own, sampling = split_parameters(method, params)
    config = make_method_config(method, **own)
    check_sampling(method, sampling)
    return MethodCall(spec, config, own, sampling, label=method)
