"""The method registry: every :class:`~.spec.MethodSpec`, collected from the method files of ``decoding/``.

A method file declares ``SPECS = (MethodSpec(...), ...)`` next to its math; this module imports every module
of the package (those not starting with ``_``) and collects them, so adding a method is adding a file. Every
list of methods in the package is derived from here:

    >>> from contrastive_decoding.decoding import registry
    >>> registry.get_spec("greedy").name            # an alias
    'plain'
    >>> [spec.name for spec in registry.specs() if spec.takes(registry.CONTEXT_FREE_PROMPT)]
    ['cad', 'adacad']
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from ._validation import did_you_mean
from .spec import (
    AMATEUR,
    CONDITIONS,
    CONTEXT_FREE_PROMPT,
    IMAGE,
    INPUTS,
    VLLM_MODEL,
    VLLM_NO,
    VLLM_PAIR,
    VLLM_PLAIN,
    MethodSpec,
    ScoringSupport,
    VllmSupport,
)

PLAIN = "plain"  # the baseline: the model's own distribution, greedy or sampled (alias "greedy")
_NOT_METHOD_MODULES = frozenset({"registry", "spec"})


@cache
def _collect() -> dict[str, MethodSpec]:
    from .. import decoding

    found: list[MethodSpec] = []
    for module_info in pkgutil.iter_modules(decoding.__path__):
        if module_info.name.startswith("_") or module_info.name in _NOT_METHOD_MODULES:
            continue
        module = importlib.import_module(f"{decoding.__name__}.{module_info.name}")
        found.extend(getattr(module, "SPECS", ()))
    by_name: dict[str, MethodSpec] = {}
    for spec in sorted(found, key=lambda s: (s.order, s.name)):
        for name in (spec.name, *spec.aliases):
            if name in by_name:
                raise RuntimeError(f"method name {name!r} is declared twice")
            by_name[name] = spec
    return by_name


def specs() -> tuple[MethodSpec, ...]:
    """Every method once (aliases not repeated), in listing order."""
    return tuple(spec for name, spec in _collect().items() if name == spec.name)


def names() -> tuple[str, ...]:
    """Every method's name, in listing order."""
    return tuple(spec.name for spec in specs())


def get_spec(method: str) -> MethodSpec:
    """The spec of ``method`` (a name or an alias); unknown names raise with a did-you-mean."""
    table = _collect()
    if not isinstance(method, str) or method not in table:
        known = ", ".join(
            spec.name + (f" (or {', '.join(spec.aliases)})" if spec.aliases else "") for spec in specs()
        )
        raise ValueError(
            f"Unknown method {method!r}.{did_you_mean(str(method), table)} Known methods: {known}."
        )
    return table[method]


def resolve(method: str) -> str:
    """The canonical name of ``method`` (``"greedy"`` -> ``"plain"``)."""
    return get_spec(method).name


def taking(what: str) -> frozenset[str]:
    """Names of the methods that need or accept the extra input ``what`` (one of ``spec.INPUTS``)."""
    if what not in INPUTS:
        raise ValueError(f"unknown input {what!r}; inputs: {', '.join(INPUTS)}")
    return frozenset(spec.name for spec in specs() if spec.takes(what))


def needing(what: str) -> frozenset[str]:
    """Names of the methods that require the extra input ``what``."""
    return frozenset(spec.name for spec in specs() if what in spec.needs)


def scoring_only() -> frozenset[str]:
    """Names of the methods that score answer choices and do not generate (``MethodSpec.generates``)."""
    return frozenset(spec.name for spec in specs() if not spec.generates)


def check_generates(method: str) -> str:
    """The canonical name of ``method``; raise ValueError when it does not generate (a scoring-only method)."""
    spec = get_spec(method)
    if not spec.generates:
        generators = ", ".join(s.name for s in specs() if s.generates)
        raise ValueError(
            f"{spec.name} does not generate ({spec.vllm.reason}). Run it with `bench run` on a choice task or "
            f"contrastive_decoding.calibration.score_choices. Methods that generate: {generators}."
        )
    return spec.name


def vllm_runs(kind: str) -> frozenset[str]:
    """Names of the methods the vLLM backend runs the way ``kind`` says (``spec.VLLM_*``)."""
    return frozenset(spec.name for spec in specs() if spec.vllm.runs == kind)


@cache
def load(path: str) -> Any:
    """The object a dotted ``"package.module:attribute"`` path names (imported on first use, then remembered:
    the vLLM pair processor asks for its scores function every step)."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def choice_defaults(method: str) -> dict[str, Any]:
    """The parameters multiple-choice scoring uses for ``method`` unless the user sets them."""
    return dict(get_spec(method).scoring.choice_defaults)


_VLLM_COLUMN = {
    VLLM_PLAIN: "yes",
    VLLM_MODEL: "yes (model wrapper)",
    VLLM_PAIR: "yes (twin request)",
    VLLM_NO: "not yet",
}


def _hf_column(spec: MethodSpec) -> str:
    return "yes" if spec.generates else "scoring only (choice tasks)"


def _vllm_column(spec: MethodSpec) -> str:
    return _VLLM_COLUMN[spec.vllm.runs] if spec.generates else "no (scoring only)"


def _format_default(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value).replace("'", '"')


def markdown_table() -> str:
    """The README's method table, rendered from the specs (a test keeps the README equal to it)."""
    import dataclasses

    rows = [
        "| method | what it contrasts | needs | parameters (defaults) | HF backend | vLLM backend | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs():
        name = f"`{spec.name}`" + "".join(f" / `{alias}`" for alias in spec.aliases)
        needs = ", ".join(
            [f"`{what}`" for what in sorted(spec.needs)]
            + [f"`{what}` (optional)" for what in sorted(spec.accepts)]
        )
        params = ", ".join(
            f"`{f.name}={_format_default(f.default)}`" for f in dataclasses.fields(spec.config)
        )
        rows.append(
            f"| {name} | {spec.contrasts} | {needs or '-'} | {params or '-'} | {_hf_column(spec)} "
            f"| {_vllm_column(spec)} "
            f"| {spec.paper} |"
        )
    return "\n".join(rows)


__all__ = [
    "AMATEUR",
    "CONDITIONS",
    "CONTEXT_FREE_PROMPT",
    "IMAGE",
    "INPUTS",
    "PLAIN",
    "VLLM_MODEL",
    "VLLM_NO",
    "VLLM_PAIR",
    "VLLM_PLAIN",
    "MethodSpec",
    "ScoringSupport",
    "VllmSupport",
    "check_generates",
    "choice_defaults",
    "get_spec",
    "load",
    "markdown_table",
    "names",
    "needing",
    "resolve",
    "scoring_only",
    "specs",
    "taking",
    "vllm_runs",
]
