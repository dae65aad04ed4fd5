"""Every method parameter describes its valid range (dataclass field metadata, served by the vLLM server's
``/v1/contrastive/methods``) and the description agrees with the config's validation: values at the ends of
the range are accepted, values just outside are rejected."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contrastive_decoding.decoding import METHOD_CONFIGS, parameter_specs
from contrastive_decoding.decoding._validation import RANGE_KEY

FIELDS = [(method, f.name) for method, config in METHOD_CONFIGS.items() for f in dataclasses.fields(config)]
EPS = 1e-6


def build(method: str, name: str, value):
    return METHOD_CONFIGS[method](**{name: value})


def number_cases(spec: dict) -> tuple[list, list]:
    """(accepted, rejected) values for a number range."""
    accepted, rejected = [], []
    integer = spec["type"] == "int"
    step = 1 if integer else EPS
    low, high = spec["min"], spec["max"]
    if low is not None:
        (accepted if spec["min_inclusive"] else rejected).append(low)
        rejected.append(low - step)
        if not spec["min_inclusive"]:
            accepted.append(low + step)
    if high is not None:
        (accepted if spec["max_inclusive"] else rejected).append(high)
        rejected.append(high + step)
    if integer:
        rejected.append((low if low is not None else 0) + 0.5)
    (accepted if spec["nullable"] else rejected).append(None)
    rejected.append("1")  # a string is never a number
    return accepted, rejected


@pytest.mark.parametrize("method, name", FIELDS, ids=[f"{m}.{n}" for m, n in FIELDS])
def test_parameter_has_range_metadata_that_validation_enforces(method, name):
    field = {f.name: f for f in dataclasses.fields(METHOD_CONFIGS[method])}[name]
    assert RANGE_KEY in field.metadata, f"{method}.{name} has no range metadata"
    spec = field.metadata[RANGE_KEY]
    assert spec["text"]
    json.dumps(parameter_specs(method)[name])  # the server returns it as JSON
    build(method, name, field.default)  # the default is valid

    if spec["type"] in ("int", "float"):
        accepted, rejected = number_cases(spec)
    elif spec["type"] == "choice":
        accepted, rejected = list(spec["choices"]), ["not-a-choice", spec["choices"][0].upper() + "x"]
        if "items" in spec:
            item_accepted, item_rejected = number_cases(spec["items"])
            accepted += [[value] for value in item_accepted if value is not None]
            rejected += [[value] for value in item_rejected if value is not None] + [[]]
    elif spec["type"] == "texts":
        accepted, rejected = ["N/A", "", ["N/A", "", "[MASK]"]], [[], 3, [3], None, ["N/A", None]]
    elif spec["type"] == "text":
        accepted, rejected = ["some/dir"], ["", 1, ["a"]]
        (accepted if spec["nullable"] else rejected).append(None)
    elif spec["type"] == "bool":
        accepted, rejected = [True, False], [None, "true", 1, 0.0]  # a truthy value is not a bool
    else:
        raise AssertionError(f"unknown range type {spec['type']!r}")

    assert rejected, f"{method}.{name}: no value outside the range is tried, so the check cannot fail"
    for value in accepted:
        build(method, name, value)
    for value in rejected:
        with pytest.raises(ValueError, match=name):
            build(method, name, value)


def test_parameter_specs_lists_every_parameter_with_its_default():
    specs = parameter_specs("dola")
    assert list(specs) == ["dola_layers", "relative_top", "layer_choice", "early_exit_norm"]
    assert specs["relative_top"] == {
        "default": 0.1,
        "range": {
            "type": "float", "min": 0.0, "max": 1.0, "min_inclusive": True, "max_inclusive": True,
            "nullable": False, "text": "a number in [0, 1]",
        },
    }  # fmt: skip
    assert specs["dola_layers"]["range"]["choices"] == ["low", "high"]
    assert parameter_specs("greedy") == {}


FILTERS = ("typical_p", "min_p", "top_n_sigma", "epsilon_cutoff", "eta_cutoff")


@pytest.mark.parametrize("name", FILTERS)
def test_sampling_filter_ranges_served_agree_with_validation(name):
    """The ranges ``/v1/contrastive/methods`` serves for the sampling filters are the ones ``SamplingConfig``
    (hence both backends) enforces, and the default it serves is the filter's off value."""
    from contrastive_decoding.backends.vllm.middleware import SAMPLING_FIELDS
    from contrastive_decoding.generation import SAMPLING_PARAMETERS
    from contrastive_decoding.samplers import SamplingConfig

    assert set(SAMPLING_FIELDS) == set(SAMPLING_PARAMETERS)
    field = SAMPLING_FIELDS[name]
    assert field["default"] == getattr(SamplingConfig(), name)
    accepted, rejected = number_cases(field[RANGE_KEY])
    for value in accepted:
        if value is not None and value != float("inf"):
            SamplingConfig(**{name: value})
    for value in rejected:
        with pytest.raises(ValueError, match=name):
            SamplingConfig(**{name: value})
