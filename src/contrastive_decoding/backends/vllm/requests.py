"""What a vLLM request asks for: ``SamplingParams(extra_args={"method": ..., <method parameters>, "typical_p": ...})``.

The names are those of the Hugging Face backend's kwargs. The sampling filters vLLM's ``SamplingParams`` lacks
(``typical_p``, ``top_n_sigma``, ``epsilon_cutoff``, ``eta_cutoff``: :data:`FILTER_KEYS`) travel in
``extra_args`` too; ``min_p`` is vLLM's own field. Parsing and validation are pure Python (no vLLM
import), so the front end, the logits processors and the tests share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...decoding import dola as dola_math
from ...decoding import make_method_config, method_parameters, parameter_specs, registry
from ...decoding import sled as sled_math
from ...decoding._validation import did_you_mean
from ...decoding.spec import VLLM_NO, VLLM_PAIR
from ...samplers.config import SamplingConfig
from .plugin import AMATEUR_KEY, EXIT_LAYERS_KEY

METHOD_KEY = "method"
TYPICAL_KEY = "typical_p"
# The sampling filters vLLM has no field for, in extra_args / vllm_xargs (each off at its SamplingConfig default).
FILTER_KEYS = ("typical_p", "top_n_sigma", "epsilon_cutoff", "eta_cutoff")
# The prompt without its context, for the paired methods: text (tokenized in the engine like a completions
# prompt, special tokens added) or token ids.
CONTEXT_FREE_PROMPT_KEY = "context_free_prompt"
CONTEXT_FREE_IDS_KEY = "context_free_prompt_ids"
# Set by the pair-aware scheduler, never by users: {"id": <main request id>, "role": "main" | "twin"}.
PAIR_KEY = "_contrastive_pair"
# Methods the vLLM backend runs, and where the work happens (``MethodSpec.vllm.runs``): vLLM itself (plain), the
# model wrapper (early exits, amateur), or a context-free twin request scheduled with the main one (pair).
VLLM_METHODS = {spec.name: spec.vllm.runs for spec in registry.specs() if spec.vllm.runs != VLLM_NO}
PAIR_METHODS = registry.vllm_runs(VLLM_PAIR)


@dataclass(frozen=True)
class SamplingFilters:
    """A request's sampling filters from ``extra_args`` (validated; the defaults are off)."""

    typical_p: float = 1.0
    top_n_sigma: float = 0.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0

    @property
    def active(self) -> bool:
        return self != SamplingFilters()


def _pop_filters(args: dict[str, Any]) -> SamplingFilters:
    """Take the filters out of ``args`` and validate them (``ValueError`` naming the parameter and its range)."""
    given = {key: args.pop(key) for key in FILTER_KEYS if key in args}
    checked = SamplingConfig(**given)  # the ranges of every backend, in one place
    return SamplingFilters(**{key: getattr(checked, key) for key in FILTER_KEYS})


@dataclass(frozen=True)
class MethodRequest:
    """One request's method and its validated config (``config`` is None for plain decoding).

    For paired methods, ``pair_id`` / ``pair_role`` say which pair the row belongs to once the scheduler has
    made the twin (None before that, i.e. at admission in the front end).
    """

    method: str
    config: Any = None
    pair_id: str | None = None
    pair_role: str | None = None


def context_free_prompt(extra_args: dict[str, Any]) -> str | list[int]:
    """The context-free prompt of a paired request (text or token ids), validated."""
    text, ids = extra_args.get(CONTEXT_FREE_PROMPT_KEY), extra_args.get(CONTEXT_FREE_IDS_KEY)
    method = extra_args.get(METHOD_KEY)
    if (text is None) == (ids is None):
        raise ValueError(
            f"method {method!r} needs the prompt without its context: give exactly one of "
            f"{CONTEXT_FREE_PROMPT_KEY!r} (text) or {CONTEXT_FREE_IDS_KEY!r} (token ids) in extra_args / vllm_xargs"
        )
    if text is not None:
        if not isinstance(text, str) or not text:
            raise ValueError(f"{CONTEXT_FREE_PROMPT_KEY!r} must be a non-empty string, got {text!r}")
        return text
    if (
        not isinstance(ids, (list, tuple))
        or not ids
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    ):
        raise ValueError(f"{CONTEXT_FREE_IDS_KEY!r} must be a non-empty list of token ids (ints >= 0)")
    return list(ids)


def parse_extra_args(extra_args: dict[str, Any] | None) -> tuple[MethodRequest, SamplingFilters]:
    """Return (method request, sampling filters) from ``extra_args``; raise ValueError naming what is wrong."""
    args = dict(extra_args or {})
    filters = _pop_filters(args)
    method = args.pop(METHOD_KEY, registry.PLAIN)
    if not isinstance(method, str):
        raise ValueError(f"extra_args['method'] must be a method name, got {method!r}")
    spec = registry.get_spec(method)
    label, method = method, spec.name
    if not spec.generates:
        raise ValueError(
            f"method {label!r} does not generate ({spec.vllm.reason}); the vLLM backend generates"
        )
    if not spec.vllm.served:
        raise ValueError(
            f"method {label!r} is not supported by the vLLM backend yet ({spec.vllm.reason}); supported: "
            f"{', '.join(VLLM_METHODS)}. Use the Hugging Face backend for it."
        )
    pair = args.pop(PAIR_KEY, None)
    if method in PAIR_METHODS:
        if pair is None:  # the scheduler has not made the twin yet: the request must say what it is
            context_free_prompt({**args, METHOD_KEY: method})
        args.pop(CONTEXT_FREE_PROMPT_KEY, None)
        args.pop(CONTEXT_FREE_IDS_KEY, None)
    names = method_parameters(method)
    unknown = [key for key in args if key not in names]
    if unknown:
        valid = [*names, *FILTER_KEYS]
        if method in PAIR_METHODS:
            valid += [CONTEXT_FREE_PROMPT_KEY, CONTEXT_FREE_IDS_KEY]
        raise ValueError(
            f"Unknown parameter {unknown[0]!r} for method {method!r}.{did_you_mean(unknown[0], valid)} "
            f"Valid parameters: {', '.join(valid) or 'none'}."
        )
    args = _booleans_from_ints(method, args)
    config = make_method_config(method, **args) if names else None
    if pair is not None:
        return MethodRequest(method, config, str(pair["id"]), str(pair["role"])), filters
    return MethodRequest(method, config), filters


def _booleans_from_ints(method: str, args: dict[str, Any]) -> dict[str, Any]:
    """``vllm_xargs`` has no boolean type in vLLM's request schema (``str | int | float | list``), so a JSON
    ``true`` reaches the engine as ``1``: for the method's true-or-false parameters, 1 and 0 mean true and false
    (any other number is still refused by the config)."""
    specs = parameter_specs(method)
    return {
        key: bool(value)
        if type(value) is int and value in (0, 1) and specs[key]["range"].get("type") == "bool"
        else value
        for key, value in args.items()
    }


def pair_sampling_config(
    temperature: float,
    top_k: int | None,
    top_p: float,
    filters: SamplingFilters,
    seed: int | None,
    min_p: float = 0.0,
) -> SamplingConfig:
    """How the pair processor chooses a paired row's token, from the request's vLLM sampling fields
    (temperature 0 is greedy, top_k <= 0 is off) and its ``extra_args`` filters; built and validated once per
    request. The filters then run in the Hugging Face backend's order (``SamplingConfig.warp``)."""
    if temperature == 0:
        return SamplingConfig()
    return SamplingConfig(
        do_sample=True,
        temperature=temperature,
        top_k=max(int(top_k or 0), 0),
        top_p=top_p,
        min_p=min_p or 0.0,
        typical_p=filters.typical_p,
        top_n_sigma=filters.top_n_sigma,
        epsilon_cutoff=filters.epsilon_cutoff,
        eta_cutoff=filters.eta_cutoff,
        seed=seed,
    )


def captured_layers(setting: object, num_layers: int, tie_word_embeddings: bool) -> list[int]:
    """The early-exit layers an engine captures (``hf_overrides`` ``contrastive_early_exit_layers``): ``"all"``
    (0 .. N-1, every index a DoLa or SLED request can name; the default), ``"dola"`` (the union of DoLa's
    ``"low"`` and ``"high"`` buckets), ``"none"`` (no capture: DoLa and SLED are refused) or a list of indices."""
    if setting == "all":
        return list(range(num_layers))
    if setting == "none":
        return []
    if setting == "dola":
        layers = set(dola_math.candidate_layers("high", num_layers, tie_word_embeddings))
        try:
            layers |= set(dola_math.candidate_layers("low", num_layers, tie_word_embeddings))
        except ValueError:  # no "low" bucket for this depth
            pass
        return sorted(layers)
    if isinstance(setting, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num_layers for i in setting
    ):
        return sorted(set(setting))
    raise ValueError(
        f"{EXIT_LAYERS_KEY} must be 'all', 'dola', 'none' or a list of layer indices in [0, {num_layers - 1}], "
        f"got {setting!r}"
    )


def request_exit_layers(request: MethodRequest, num_layers: int, tie_word_embeddings: bool) -> list[int]:
    """The early-exit layers a request reads (DoLa's candidates, SLED's layers; none for other methods)."""
    if request.method == "dola":
        return dola_math.candidate_layers(request.config.dola_layers, num_layers, tie_word_embeddings)
    if request.method == "sled":
        return sled_math.early_exit_layers(request.config.sled_layers, num_layers, tie_word_embeddings)
    return []


def engine_has_amateur(hf_config: Any) -> bool:
    """Whether an engine with this (overridden) ``hf_config`` runs an amateur model."""
    return bool(getattr(hf_config, AMATEUR_KEY, None))


def check_engine_request(request: MethodRequest, hf_config: Any, text_config: Any) -> None:
    """Refuse (``ValueError``) a request the engine cannot run: expert-amateur without an amateur, early exits
    of layers the engine does not capture. Called in the front end (``LLM``, the server), where a refusal is an
    error for that request only (a 400), never in the engine."""
    if request.method == "expert_amateur" and not engine_has_amateur(hf_config):
        raise ValueError(
            "expert_amateur needs an engine with an amateur model (LLM(..., amateur_model=...), "
            "serve --amateur-model)"
        )
    num_layers = text_config.num_hidden_layers
    tie = bool(getattr(text_config, "tie_word_embeddings", False))
    wanted = request_exit_layers(request, num_layers, tie)
    if not wanted:
        return
    setting = getattr(hf_config, EXIT_LAYERS_KEY, "all")
    missing = sorted(set(wanted) - set(captured_layers(setting, num_layers, tie)))
    if missing:
        raise ValueError(
            f"method {request.method!r} reads early exits of layers {missing}, which this engine does not "
            f"capture ({EXIT_LAYERS_KEY}={setting!r}); start it with {EXIT_LAYERS_KEY}='all' or a list that "
            "holds them"
        )
