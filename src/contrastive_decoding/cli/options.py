"""What the commands share: ``--set`` parsing and validation, the model options, and loading the models."""

from __future__ import annotations

import json
from typing import Any

import click

MODEL_HELP = "A `models pull` name or a local HF checkpoint directory."
AMATEUR_HELP = "Amateur for expert_amateur (same tokenizer as --model)."


def parse_set_option(values: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are JSON when they parse (numbers, lists, null), else strings."""
    params: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        key, raw = item.split("=", 1)
        key, raw = key.strip(), raw.strip()
        if raw.lower() in ("none", "null"):
            params[key] = None
        elif raw.lower() in ("true", "false"):
            params[key] = raw.lower() == "true"
        else:
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
    return params


def method_settings(methods: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The --set values each method gets, validated (unknown methods and parameters raise ValueError).

    ``KEY=VALUE`` goes to every listed method that has the parameter (sampling parameters go to all) and must
    fit at least one of them; ``METHOD.KEY=VALUE`` goes to that method only.
    """
    from ..api import SAMPLING_PARAMETERS, sampling_kwargs, split_parameters
    from ..decoding import check_method, make_method_config, method_parameters

    for method in methods:
        check_method(method)
    settings: dict[str, dict[str, Any]] = {method: {} for method in methods}
    for key, value in params.items():
        scope, _, name = key.rpartition(".")
        if scope:
            check_method(scope)
            if scope in settings:
                settings[scope][name] = value
            continue
        takers = [m for m in methods if name in method_parameters(m) or name in SAMPLING_PARAMETERS]
        if not takers:
            split_parameters(methods[0], {name: value})  # raises: unknown parameter, with a did-you-mean
        for method in takers:
            settings[method][name] = value
    for method, method_params in settings.items():
        own, sampling = split_parameters(method, method_params)
        make_method_config(method, **own)
        sampling_kwargs(sampling)
    return settings


# --------------------------------------------------------------------------- options


def model_option(function: Any) -> Any:
    return click.option("--model", "model_name", required=True, help=MODEL_HELP)(function)


def set_option(help: str) -> Any:
    return click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=help)


def amateur_model_option(function: Any) -> Any:
    return click.option("--amateur-model", default=None, help=AMATEUR_HELP)(function)


def backend_option(help: str) -> Any:
    return click.option(
        "--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True, help=help
    )


def dtype_option(function: Any) -> Any:
    return click.option(
        "--dtype",
        type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
        default="auto",
        show_default=True,
    )(function)


def device_option(function: Any) -> Any:
    return click.option("--device", default="cpu", show_default=True)(function)


def batch_size_option(function: Any) -> Any:
    return click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)(function)


def decoding_options(set_help: str, backend_help: str) -> Any:
    """--set, --amateur-model, --backend, --dtype and --device, in that order: what `generate` and
    `bench run` / `bench sweep` take after --model (and --method)."""
    options = [
        set_option(set_help),
        amateur_model_option,
        backend_option(backend_help),
        dtype_option,
        device_option,
    ]

    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


# --------------------------------------------------------------------------- models


def load_models(
    model_name: str, amateur_model: str | None, dtype: str, device: str, backend: str = "hf"
) -> tuple[Any, Any, Any, Any]:
    """(model, tokenizer, amateur, amateur tokenizer); with ``backend="vllm"`` the model is a
    :class:`contrastive_decoding.vllm.LLM` engine that holds the amateur itself (shut down when the command
    ends). Load errors become a :class:`click.ClickException`."""
    from transformers.utils import logging as transformers_logging

    from ..models import load_model_and_tokenizer

    transformers_logging.disable_progress_bar()  # no "Loading weights" bars between our output lines
    try:
        if backend == "vllm":
            from ..vllm import LLM

            engine = LLM(model_name, amateur_model, dtype=dtype)
            # stop the engine's processes when the command ends (they hold the memory vLLM-CPU reserved)
            click.get_current_context().call_on_close(engine.shutdown)
            return engine, engine.tokenizer, None, None
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device)
        amateur = amateur_tokenizer = None
        if amateur_model is not None:
            amateur, amateur_tokenizer = load_model_and_tokenizer(amateur_model, dtype=dtype, device=device)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    return model, tokenizer, amateur, amateur_tokenizer
