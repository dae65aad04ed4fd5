"""Contrastive methods behind vLLM's OpenAI-compatible server: the ASGI middleware.

Every method is a per-request choice in ``vllm_xargs`` (vLLM copies it into ``SamplingParams.extra_args``), run by
the engine that :func:`.engine.engine_settings` configures. This module adds the HTTP side
(:mod:`.launch` starts the server with it):

- :class:`ContrastiveMiddleware`, a pure ASGI middleware (``vllm serve ... --middleware
  contrastive_decoding.backends.vllm.middleware.ContrastiveMiddleware``):

  - ``GET /v1/contrastive/methods``: every method, whether this server runs it, its parameters with defaults
    and valid ranges, and the sampling parameters;
  - ``POST /v1/chat/completions`` with ``vllm_xargs={"method": "cad", "context_message": i}``: renders the
    conversation without message ``i`` with the served model's chat template, exactly as vLLM renders the main
    prompt (its own renderer, same template, template kwargs and tools), and sends the engine its token ids as
    ``context_free_prompt_ids``;
  - early HTTP 400s, in OpenAI's error format, for what vLLM would otherwise report late: a bad method or
    parameter on a streamed request (vLLM validates it only once the stream has started, and answers 200 with
    an error event), a paired method without its context.

vLLM adds ``--middleware`` classes last, so this one runs before vLLM's API-key check; it applies the same
check itself (``--api-key`` / ``VLLM_API_KEY``) before answering or reading a request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from ...decoding import CONTEXT_FREE_METHODS, parameter_specs, registry
from ...decoding._validation import number_range
from ...decoding.spec import AMATEUR, CONTEXT_FREE_PROMPT
from .requests import (
    CONTEXT_FREE_IDS_KEY,
    CONTEXT_FREE_PROMPT_KEY,
    check_engine_request,
    engine_has_amateur,
    parse_extra_args,
)

METHODS_PATH = "/v1/contrastive/methods"
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MIDDLEWARE = f"{__name__}.ContrastiveMiddleware"  # the dotted name for ``vllm serve --middleware``

# vllm_xargs key of the chat shortcut for the paired methods (CAD / AdaCAD): which message is the context.
CONTEXT_MESSAGE_KEY = "context_message"

# The library's sampling parameters as HTTP request fields.
SAMPLING_FIELDS = {
    "do_sample": {"field": "temperature", "default": None, "range": {"text": "temperature > 0 samples"}},
    "temperature": {"field": "temperature", "default": 1.0, **number_range(0.0)},
    "top_k": {"field": "top_k", "default": 0, **number_range(-1, integer=True)},
    "top_p": {"field": "top_p", "default": 1.0, **number_range(0.0, 1.0, low_inclusive=False)},
    "typical_p": {
        "field": "vllm_xargs.typical_p",
        "default": 1.0,
        **number_range(0.0, 1.0, low_inclusive=False),
    },
    "min_p": {"field": "min_p", "default": 0.0, **number_range(0.0, 1.0)},
    "top_n_sigma": {"field": "vllm_xargs.top_n_sigma", "default": 0.0, **number_range(0.0, math.inf)},
    "epsilon_cutoff": {
        "field": "vllm_xargs.epsilon_cutoff",
        "default": 0.0,
        **number_range(0.0, 1.0, high_inclusive=False),
    },
    "eta_cutoff": {
        "field": "vllm_xargs.eta_cutoff",
        "default": 0.0,
        **number_range(0.0, 1.0, high_inclusive=False),
    },
    "seed": {"field": "seed", "default": None, **number_range(integer=True, nullable=True)},
    "repetition_penalty": {
        "field": "repetition_penalty",
        "default": 1.0,
        **number_range(0.0, math.inf, low_inclusive=False),
    },
}


# ------------------------------------------------------------------------------------------------------------
# The middleware
# ------------------------------------------------------------------------------------------------------------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequestError(Exception):
    """A client error answered with HTTP 400 in OpenAI's error format."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


class ContrastiveMiddleware:
    """Pure ASGI middleware: the methods endpoint, chat CAD's context-free twin, early 400s."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self._guards: dict[tuple[int, str], Callable[..., Awaitable[None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path", "") or "")
        method = scope.get("method")
        if path == METHODS_PATH and method == "GET":
            handler = self._methods
        elif path in (CHAT_PATH, COMPLETIONS_PATH) and method == "POST":
            handler = self._generate
        else:
            return await self.app(scope, receive, send)
        await self._guarded(scope, handler)(scope, receive, send)

    def _guarded(
        self, scope: Scope, handler: Callable[..., Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        """``handler`` behind vLLM's API-key check when the server has keys (we run before vLLM's own check)."""
        tokens = _api_tokens(scope)
        if not tokens:
            return handler
        key = (handler.__name__, tuple(tokens))
        if key not in self._guards:
            from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

            self._guards[key] = AuthenticationMiddleware(handler, tokens)  # type: ignore[arg-type]
        return self._guards[key]

    async def _methods(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, methods_document(_app_state(scope)))

    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        try:
            new_body = await self._rewrite(scope, body)
        except RequestError as error:
            return await _send_json(send, 400, error_body(error.message, error.param))
        if new_body is not None:
            scope = _with_content_length(scope, len(new_body))
            body = new_body
        await self.app(scope, _replay(body, receive), send)

    async def _rewrite(self, scope: Scope, body: bytes) -> bytes | None:
        """The body to forward (None: unchanged), or RequestError."""
        try:
            data = json.loads(body)
        except ValueError:
            return None  # vLLM reports malformed JSON
        if not isinstance(data, dict) or not isinstance(data.get("vllm_xargs"), dict):
            return None
        chat = scope["path"].endswith(CHAT_PATH)
        xargs = dict(data["vllm_xargs"])
        method = xargs.get("method", "greedy")
        changed = False
        if CONTEXT_MESSAGE_KEY in xargs:
            ids = await self._context_free_ids(scope, data, xargs, method, chat)
            del xargs[CONTEXT_MESSAGE_KEY]
            xargs[CONTEXT_FREE_IDS_KEY] = ids
            changed = True
        elif method in CONTEXT_FREE_METHODS and not (
            CONTEXT_FREE_PROMPT_KEY in xargs or CONTEXT_FREE_IDS_KEY in xargs
        ):
            how = (
                f"vllm_xargs.{CONTEXT_MESSAGE_KEY} (the index of the message that holds the context) or "
                f"vllm_xargs.{CONTEXT_FREE_IDS_KEY}"
                if chat
                else f"vllm_xargs.{CONTEXT_FREE_PROMPT_KEY} (the prompt without its context) or "
                f"vllm_xargs.{CONTEXT_FREE_IDS_KEY}"
            )
            raise RequestError(
                f"method {method!r} contrasts the prompt with and without its context: give {how}",
                "vllm_xargs",
            )
        self._check_engine(scope, xargs)
        if data.get("stream"):
            self._check_early(scope, data, xargs, chat)
        if not changed:
            return None
        data["vllm_xargs"] = xargs
        return json.dumps(data).encode()

    async def _context_free_ids(
        self, scope: Scope, data: dict[str, Any], xargs: dict[str, Any], method: Any, chat: bool
    ) -> list[int]:
        param = f"vllm_xargs.{CONTEXT_MESSAGE_KEY}"
        if not chat:
            raise RequestError(
                f"{param} is for {CHAT_PATH}; on {COMPLETIONS_PATH} give vllm_xargs.{CONTEXT_FREE_PROMPT_KEY} "
                "(the prompt without its context)",
                param,
            )
        if method not in CONTEXT_FREE_METHODS:
            raise RequestError(
                f"{param} applies to the methods {', '.join(sorted(CONTEXT_FREE_METHODS))} only, not {method!r}",
                param,
            )
        for key in (CONTEXT_FREE_PROMPT_KEY, CONTEXT_FREE_IDS_KEY):
            if key in xargs:
                raise RequestError(f"give either {param} or vllm_xargs.{key}, not both", param)
        messages = data.get("messages")
        index = xargs[CONTEXT_MESSAGE_KEY]
        if not isinstance(messages, list) or not messages:
            return []  # vLLM reports the missing messages
        if isinstance(index, bool) or not isinstance(index, int):
            raise RequestError(
                f"{param} must be the integer index of the message that holds the context, got {index!r}",
                param,
            )
        if not 0 <= index < len(messages):
            raise RequestError(
                f"{param}={index} is out of range: the request has {len(messages)} messages "
                f"(valid indices 0 to {len(messages) - 1})",
                param,
            )
        if len(messages) == 1:
            raise RequestError(
                f"{param}={index} is the only message; without it nothing is left to contrast with "
                "(put the question in its own message)",
                param,
            )
        twin = {**data, "messages": messages[:index] + messages[index + 1 :], "stream": False}
        twin.pop("vllm_xargs", None)
        return await render_chat_ids(_app_state(scope), twin)

    def _check_engine(self, scope: Scope, xargs: dict[str, Any]) -> None:
        """Refuse what this engine cannot run (expert-amateur without an amateur, early exits of layers it does
        not capture) with a 400, before it reaches the engine, where it would fail the whole step."""
        config = getattr(_app_state(scope), "vllm_config", None)
        if config is None:
            return
        try:
            request, _ = parse_extra_args(xargs)
        except ValueError:
            return  # the request's own errors: vLLM's validation of our processors reports them as a 400
        try:
            check_engine_request(request, config.model_config.hf_config, config.model_config.hf_text_config)
        except ValueError as error:
            raise RequestError(str(error), "vllm_xargs") from error

    def _check_early(self, scope: Scope, data: dict[str, Any], xargs: dict[str, Any], chat: bool) -> None:
        """Run the engine's admission checks on a streamed request now, so a bad one gets a 400 instead of a
        200 whose stream holds only an error event."""
        state = _app_state(scope)
        if state is None:
            return
        try:
            params = sampling_params(state, {**data, "vllm_xargs": xargs}, chat)
        except Exception:  # noqa: BLE001 - vLLM reports the request's own errors as it always does
            return
        if params is None:
            return
        processors = state.vllm_config.model_config.logits_processors
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.sample.logits_processor import validate_logits_processors_parameters

        try:
            validate_logits_processors_parameters(processors, params)
        except (ValueError, VLLMValidationError) as error:
            raise RequestError(str(error), getattr(error, "parameter", None) or "vllm_xargs") from error


# ------------------------------------------------------------------------------------------------------------
# What the middleware computes (separate functions, testable without a server)
# ------------------------------------------------------------------------------------------------------------


def methods_document(state: Any = None) -> dict[str, Any]:
    """The ``/v1/contrastive/methods`` answer, read from the method registry; ``state`` (the app's) tells whether
    an amateur is loaded."""
    amateur = _has_amateur(state)
    methods = []
    for spec in registry.specs():
        entry: dict[str, Any] = {"name": spec.name, "aliases": list(spec.aliases), "served": spec.vllm.served}
        if not spec.generates:
            entry["reason"] = f"does not generate ({spec.vllm.reason})"
        elif not spec.vllm.served:
            entry["reason"] = (
                f"not on the vLLM backend yet ({spec.vllm.reason}); use the Hugging Face backend"
            )
        elif AMATEUR in spec.needs and amateur is False:
            entry["served"] = False
            entry["reason"] = "this server has no amateur model (start it with --amateur-model)"
        entry["parameters"] = parameter_specs(spec.name)
        if spec.takes(CONTEXT_FREE_PROMPT):
            entry["context"] = {
                CONTEXT_FREE_PROMPT_KEY: "the prompt without its context (text, tokenized like a completions "
                "prompt)",
                CONTEXT_FREE_IDS_KEY: "the prompt without its context as token ids",
                CONTEXT_MESSAGE_KEY: f"{CHAT_PATH} only: the index of the message that holds the context; the "
                "server renders the conversation without it",
            }
        methods.append(entry)
    return {
        "object": "list",
        "usage": "POST /v1/completions or /v1/chat/completions with vllm_xargs={'method': NAME, <parameters>}",
        "methods": methods,
        "sampling_parameters": SAMPLING_FIELDS,
    }


async def render_chat_ids(state: Any, request_data: dict[str, Any]) -> list[int]:
    """Token ids of a chat request's prompt, rendered by vLLM's own chat renderer (the served model's
    template, ``add_generation_prompt``, template kwargs and tools as for the main prompt)."""
    renderer = getattr(state, "online_renderer", None)
    if renderer is None:
        raise RequestError(
            f"this server cannot render chat prompts, so vllm_xargs.{CONTEXT_MESSAGE_KEY} is unavailable"
        )
    from pydantic import ValidationError
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.exceptions import VLLMClientError

    try:
        request = ChatCompletionRequest.model_validate(request_data)
    except ValidationError as error:
        raise RequestError(f"invalid chat request: {error}") from error
    try:
        result = await renderer.render_chat(request)
    except (ValueError, TypeError, VLLMClientError) as error:
        raise RequestError(
            f"the conversation without its context message cannot be rendered: {error}"
        ) from error
    if not isinstance(result, tuple):  # an ErrorResponse
        raise RequestError(
            f"the conversation without its context message cannot be rendered: {result.error.message}"
        )
    _, engine_inputs = result
    return list(engine_inputs[0]["prompt_token_ids"])


def sampling_params(state: Any, data: dict[str, Any], chat: bool):
    """The ``SamplingParams`` vLLM will build for a request body (None when it cannot tell)."""
    if chat:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as Request

        serving = getattr(state, "openai_serving_chat", None)
    else:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest as Request

        serving = getattr(state, "openai_serving_completion", None)
    if serving is None:
        return None
    request = Request.model_validate(data)
    defaults = getattr(serving, "default_sampling_params", None) or {}
    max_tokens = (request.max_completion_tokens or request.max_tokens) if chat else request.max_tokens
    return request.to_sampling_params(max_tokens or 16, defaults)


def error_body(message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}}


def _app_state(scope: Scope) -> Any:
    app = scope.get("app")
    return getattr(app, "state", None)


def _has_amateur(state: Any) -> bool | None:
    """Whether the served engine runs an amateur model (None: unknown)."""
    config = getattr(state, "vllm_config", None)
    if config is None:
        return None
    return engine_has_amateur(config.model_config.hf_config)


def _api_tokens(scope: Scope) -> list[str]:
    args = getattr(_app_state(scope), "args", None)
    tokens = list(getattr(args, "api_key", None) or [])
    if not tokens:
        from vllm import envs

        tokens = [envs.VLLM_API_KEY] if envs.VLLM_API_KEY else []
    return [token for token in tokens if token]


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then the client's own messages (disconnects)."""
    pending = True

    async def replay() -> dict[str, Any]:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(key, value) for key, value in scope["headers"] if key.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "MIDDLEWARE",
    "ContrastiveMiddleware",
    "RequestError",
    "error_body",
    "methods_document",
    "render_chat_ids",
    "sampling_params",
]
