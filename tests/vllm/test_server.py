"""`contrastive-decoding serve`: vLLM's OpenAI-compatible server with the contrastive methods per request.

One real server (a subprocess) on a tiny random Llama expert with a tiny amateur, called with the `openai` client:
each method's completions equal the offline ``contrastive_decoding.vllm.LLM`` token for token, chat CAD builds the
context-free twin from ``context_message``, concurrent mixed requests each get what they get alone, bad requests
get HTTP 400 with a useful message while the server keeps serving, streaming gives the non-streamed text, and a
client that drops a stream frees its request (and CAD's twin). The offline expectations are computed first, on an
engine that is shut down before the server starts: two engines never share the machine's memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from ..tiny_models import save_tiny_pair, tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.vllm

ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.1, "max_num_seqs": 16}
MAX_TOKENS = 12
START_TIMEOUT_S = 180
# A chat template for the word-level tiny tokenizer: "<s> content </s>" per message, then "w3" to answer.
CHAT_TEMPLATE = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}w3{% endif %}"
PROMPTS = ["w5 w17 w300 w42", "w9 w8 w100 w101", "w100 w101 w102 w103 w104 w105"]
CONTEXT_FREE = {PROMPTS[0]: "w300 w42", PROMPTS[1]: "w100 w101", PROMPTS[2]: "w104 w105"}
CASES = {
    "greedy": {"method": "greedy"},
    "dola-high": {"method": "dola", "dola_layers": "high"},
    "dola-list": {"method": "dola", "dola_layers": [0, 2, 4], "layer_choice": "jsd"},
    "expert_amateur": {"method": "expert_amateur", "contrast_beta": 0.5},
    "cad": {"method": "cad", "cad_alpha": 1.0},
    "adacad": {"method": "adacad"},
}
PAIRED = {"cad", "adacad"}
CHAT_MESSAGES = [
    {"role": "system", "content": "w5 w6 w7 w8"},  # the context
    {"role": "user", "content": "w9 w10 w11"},
]


def xargs(case: str, prompt: str) -> dict:
    args = dict(CASES[case])
    if case in PAIRED:
        args["context_free_prompt"] = CONTEXT_FREE[prompt]
    return args


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return {name: Path(path) for name, path in save_tiny_pair(root, tokenizer).items()}


def chat_ids(messages: list[dict]) -> list[int]:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    )


@pytest.fixture(scope="module")
def expected(models) -> dict:
    """Offline results, each request alone: {(case, prompt): (text, token ids)}, plus "chat-cad". A failure of the
    paired methods is kept (their tests report it) so the other methods are still checked."""
    from vllm import SamplingParams

    from contrastive_decoding.vllm import LLM

    results: dict = {}
    with LLM(str(models["expert"]), amateur_model=str(models["amateur"]), **ENGINE) as llm:
        for case in CASES:
            if case in PAIRED:
                continue
            for prompt in PROMPTS:
                [out] = llm.generate_requests(
                    [{"prompt": prompt, "max_new_tokens": MAX_TOKENS, **CASES[case]}]
                )
                results[case, prompt] = (out.text, out.token_ids)
        try:
            for case in sorted(PAIRED):
                for prompt in PROMPTS:
                    params = SamplingParams(
                        max_tokens=MAX_TOKENS, temperature=0, extra_args=xargs(case, prompt)
                    )
                    [out] = llm.engine.generate(prompt, params, use_tqdm=False)
                    results[case, prompt] = (out.outputs[0].text, list(out.outputs[0].token_ids))
            params = SamplingParams(
                max_tokens=MAX_TOKENS,
                temperature=0,
                extra_args={"method": "cad", "context_free_prompt_ids": chat_ids(CHAT_MESSAGES[1:])},
            )
            [out] = llm.engine.generate({"prompt_token_ids": chat_ids(CHAT_MESSAGES)}, params, use_tqdm=False)
            results["chat-cad"] = (out.outputs[0].text, list(out.outputs[0].token_ids))
        except Exception as error:  # noqa: BLE001 - reported by the paired-method tests
            results["paired-error"] = error
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(models, expected, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server-log") / "server.log"
    command = [
        str(Path(sys.executable).parent / "contrastive-decoding"),
        "serve", str(models["expert"]), "--amateur-model", str(models["amateur"]),
        "--port", str(port), "--host", "127.0.0.1", "--max-model-len", "256",
        "--gpu-memory-utilization", "0.1", "--max-num-seqs", "16",
    ]  # fmt: skip
    with serving(command, port, log_path) as url:
        yield {"url": url, "model": str(models["expert"]), "log": log_path}


@contextlib.contextmanager
def serving(command: list[str], port: int, log_path: Path):
    """Run a `serve` command until the block ends; yields its URL once /health answers."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the server did not answer /health in {START_TIMEOUT_S} s:\n{log_tail(log_path)}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        stop(process)


def log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the server, its engine core and worker
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, server, prompt, args: dict, **kwargs):
    return client.completions.create(
        model=server["model"],
        prompt=prompt,
        max_tokens=kwargs.pop("max_tokens", MAX_TOKENS),
        temperature=0,
        extra_body={"vllm_xargs": args, "return_token_ids": True, **kwargs.pop("extra_body", {})},
        **kwargs,
    )


def expectation(expected, key):
    if key not in expected:
        raise AssertionError(
            f"no offline result for {key}; offline paired run failed: {expected.get('paired-error')!r}"
        )
    return expected[key]


def metrics(server) -> dict[str, float]:
    """vLLM's Prometheus metrics, summed over labels: {"vllm:num_requests_running": ..., ...}."""
    totals: dict[str, float] = {}
    for line in httpx.get(f"{server['url']}/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:"):
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            totals[name] = totals.get(name, 0.0) + value
    return totals


def num_in_engine(server) -> float:
    """Running + waiting requests (a CAD twin counts as a request of its own)."""
    values = metrics(server)
    return values.get("vllm:num_requests_running", 0.0) + values.get("vllm:num_requests_waiting", 0.0)


# ------------------------------------------------------------------------------------------------------------


def test_methods_endpoint_lists_every_method_with_ranges(server):
    from contrastive_decoding.backends.vllm import requests
    from contrastive_decoding.decoding import METHOD_CONFIGS

    document = httpx.get(f"{server['url']}/v1/contrastive/methods", timeout=10).json()
    methods = {entry["name"]: entry for entry in document["methods"]}
    assert list(methods) == list(METHOD_CONFIGS)
    assert {name for name, entry in methods.items() if entry["served"]} == set(requests.VLLM_METHODS)
    assert methods["expert_amateur"]["served"]  # the server has an amateur
    assert not methods["vcd"]["served"] and "Hugging Face backend" in methods["vcd"]["reason"]
    relative_top = methods["dola"]["parameters"]["relative_top"]
    assert relative_top["default"] == 0.1
    assert (relative_top["range"]["min"], relative_top["range"]["max"]) == (0.0, 1.0)
    for entry in document["methods"]:
        for name, spec in entry["parameters"].items():
            assert spec["range"].get("text"), f"{entry['name']}.{name} has no range"
    assert "context_message" in methods["cad"]["context"]
    assert document["sampling_parameters"]["typical_p"]["field"] == "vllm_xargs.typical_p"


@pytest.mark.parametrize("case", list(CASES))
def test_completions_equal_the_offline_engine(server, client, expected, case):
    for prompt in PROMPTS:
        out = complete(client, server, prompt, xargs(case, prompt))
        text, token_ids = expectation(expected, (case, prompt))
        assert (out.choices[0].text, out.choices[0].token_ids) == (text, token_ids), prompt


def test_chat_cad_builds_the_context_free_twin_from_context_message(server, client, expected):
    chat = client.chat.completions.create(
        model=server["model"],
        messages=CHAT_MESSAGES,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"vllm_xargs": {"method": "cad", "context_message": 0}, "return_token_ids": True},
    )
    # the same request spelled out: the rendered conversation with and without its context message
    spelled = complete(
        client,
        server,
        chat_ids(CHAT_MESSAGES),
        {"method": "cad", "context_free_prompt_ids": chat_ids(CHAT_MESSAGES[1:])},
    )
    assert chat.choices[0].message.content == spelled.choices[0].text
    assert chat.usage.prompt_tokens == len(chat_ids(CHAT_MESSAGES))
    assert chat.choices[0].message.content == expectation(expected, "chat-cad")[0]
    plain = client.chat.completions.create(
        model=server["model"], messages=CHAT_MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert plain.choices[0].message.content != chat.choices[0].message.content  # the contrast did something


def test_concurrent_mixed_requests_each_equal_their_alone_result(server, client, expected):
    requests = [(case, PROMPTS[i % len(PROMPTS)]) for i, case in enumerate(list(CASES) * 3)][:16]

    def run(request):
        case, prompt = request
        out = complete(client, server, prompt, xargs(case, prompt))
        return out.choices[0].text, out.choices[0].token_ids

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(run, requests))
    for request, result in zip(requests, results, strict=True):
        assert result == expectation(expected, request), request


LONG_PROMPT = " ".join(["w7"] * 300)  # > max_model_len 256
BAD_REQUESTS = {
    "unknown method": ("completions", {"method": "dolla"}, r"Unknown method 'dolla'\. Did you mean 'dola'\?"),
    "out of range": (
        "completions",
        {"method": "dola", "relative_top": 2.0},
        r"relative_top must be in \[0, 1\]",
    ),
    "unknown parameter": (
        "completions",
        {"method": "dola", "dola_layer": "high"},
        "Did you mean 'dola_layers'",
    ),
    "cad without context": ("completions", {"method": "cad"}, "vllm_xargs.context_free_prompt"),
    "chat cad without context": ("chat", {"method": "cad"}, "vllm_xargs.context_message"),
    "context_message out of range": (
        "chat",
        {"method": "cad", "context_message": 2},
        "out of range.*2 messages",
    ),
    "context_message not an int": (
        "chat",
        {"method": "cad", "context_message": "0"},
        "must be the integer index",
    ),
    "context_message on completions": (
        "completions",
        {"method": "cad", "context_message": 0},
        "is for /v1/chat",
    ),
    "cad with a penalty": (
        "completions",
        {"method": "cad", "context_free_prompt": "w5"},
        "repetition_penalty",
    ),
    "image method": ("completions", {"method": "vcd"}, "'vcd' is not supported by the vLLM backend"),
    "prompt too long": ("completions", {}, "maximum context length is 256"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_400_and_the_server_keeps_serving(server, client, name, stream):
    endpoint, args, message = BAD_REQUESTS[name]
    extra = {"repetition_penalty": 1.2} if name == "cad with a penalty" else {}
    with pytest.raises(openai.BadRequestError, match=message) as info:
        if endpoint == "chat":
            client.chat.completions.create(
                model=server["model"], messages=CHAT_MESSAGES, max_tokens=4, stream=stream,
                extra_body={"vllm_xargs": args},
            )  # fmt: skip
        else:
            prompt = LONG_PROMPT if name == "prompt too long" else PROMPTS[0]
            complete(client, server, prompt, args, max_tokens=4, stream=stream, extra_body=extra)
    assert info.value.status_code == 400
    error = info.value.body if isinstance(info.value.body, dict) else {}
    assert error.get("type") == "BadRequestError" or error.get("error", {}).get("type") == "BadRequestError"
    assert complete(client, server, PROMPTS[1], {"method": "dola"}, max_tokens=2).choices[0].text


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_gives_the_non_streamed_text(server, client, expected, case):
    prompt = PROMPTS[0]
    stream = complete(client, server, prompt, xargs(case, prompt), stream=True)
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text == expectation(expected, (case, prompt))[0]


@pytest.mark.parametrize("case", ["greedy", "dola-high", "cad"])
def test_a_stream_closed_early_frees_its_requests(server, client, case):
    """The client leaves after 2 chunks of a 200-token stream: the engine must stop (and drop CAD's twin) right
    away. Judged by the tokens the engine generated; an attempt where the client was too slow to leave before
    the ~2 s of decoding ended proves nothing and is repeated."""
    prompt, max_tokens = PROMPTS[0], 200
    full = max_tokens * (2 if case in PAIRED else 1)  # at most: CAD's twin decodes the same tokens
    generated = []
    for _attempt in range(3):
        tokens_before = metrics(server).get("vllm:generation_tokens_total", 0.0)
        stream = complete(
            client, server, prompt, xargs(case, prompt), stream=True, max_tokens=max_tokens,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        for chunks, _ in enumerate(stream, start=1):
            if chunks == 2:
                break
        stream.close()
        deadline = time.monotonic() + 10
        while (left := num_in_engine(server)) > 0:
            assert time.monotonic() < deadline, (
                f"{left} requests still in the engine 10 s after the client left"
            )
            time.sleep(0.2)
        generated.append(metrics(server).get("vllm:generation_tokens_total", 0.0) - tokens_before)
        if generated[-1] < full / 2:
            return
    pytest.fail(f"tokens generated after the client left at 2 (of {max_tokens}): {generated}; not cut short")


# ------------------------------------------------------------------------------------------------------------
# Without a server: the launcher's arguments and the middleware on a stand-in app
# ------------------------------------------------------------------------------------------------------------


def test_serve_arguments_put_user_options_over_ours(models):
    from contrastive_decoding.backends.vllm.launch import serve_arguments
    from contrastive_decoding.backends.vllm.middleware import MIDDLEWARE

    user = ["--dtype", "bfloat16", "--no-enforce-eager", "--hf-overrides", '{"max_position_embeddings": 128}']
    args = serve_arguments("tiny", str(models["expert"]), str(models["amateur"]), [*user, "--port", "9"])
    assert args[:2] == ["serve", str(models["expert"])]
    assert args.count("--dtype") == 1 and args[args.index("--dtype") + 1] == "bfloat16"
    assert "--enforce-eager" not in args and "--no-enforce-eager" in args
    overrides = json.loads(args[args.index("--hf-overrides") + 1])  # merged: ours + the user's keys
    assert overrides["architectures"] == ["ContrastiveLlamaForCausalLM"]
    assert overrides["contrastive_amateur_model"] == str(models["amateur"])
    assert overrides["max_position_embeddings"] == 128 and args.count("--hf-overrides") == 1
    assert args[args.index("--served-model-name") + 1] == "tiny"
    assert args[args.index("--middleware") + 1] == MIDDLEWARE
    assert "--scheduler-cls" in args and "--logits-processors" in args
    assert args[-2:] == ["--port", "9"]
    named = serve_arguments(
        "tiny", str(models["expert"]), None, ["--served-model-name", "x", "--gpu_memory_utilization=0.2"]
    )
    assert named.count("--served-model-name") == 1 and "--gpu-memory-utilization" not in named
    legacy = "contrastive_decoding.backends.vllm.server.ContrastiveMiddleware"  # the README's name before
    assert (
        serve_arguments("tiny", str(models["expert"]), None, ["--middleware", legacy]).count("--middleware")
        == 1
    )


def test_the_former_server_module_names_the_same_middleware():
    from contrastive_decoding.backends.vllm import launch, middleware, server

    assert server.ContrastiveMiddleware is middleware.ContrastiveMiddleware
    assert server.serve_arguments is launch.serve_arguments and server.run_vllm_serve is launch.run_vllm_serve


async def echo_app(scope, receive, send):
    """Stands in for vLLM: answers with the body and content-length it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    length = dict(scope["headers"]).get(b"content-length", b"").decode()
    payload = json.dumps({"body": json.loads(body) if body else None, "content_length": length}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


class FakeRenderer:
    def __init__(self):
        self.seen = []

    async def render_chat(self, request):
        self.seen.append([message["content"] for message in request.messages])
        return [], [{"prompt_token_ids": [7, 8, 9]}]


def call(state, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    import asyncio
    from types import SimpleNamespace

    from contrastive_decoding.backends.vllm.middleware import ContrastiveMiddleware

    middleware = ContrastiveMiddleware(echo_app)

    async def app(scope, receive, send):  # Starlette puts the app (with its state) in the scope
        await middleware({**scope, "app": SimpleNamespace(state=state)}, receive, send)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.request(method, path, json=body, headers=headers)

    return asyncio.run(go())


def fake_state(api_key=None):
    from types import SimpleNamespace

    return SimpleNamespace(args=SimpleNamespace(api_key=api_key), online_renderer=FakeRenderer())


def test_middleware_passes_other_requests_through_unchanged():
    body = {"model": "m", "prompt": "w5", "vllm_xargs": {"method": "dola", "dola_layers": "high"}}
    answer = call(fake_state(), "POST", "/v1/completions", body)
    assert answer.status_code == 200 and answer.json()["body"] == body
    assert call(fake_state(), "GET", "/health").status_code == 200


def test_middleware_replaces_context_message_with_the_rendered_twin():
    state = fake_state()
    messages = [{"role": "system", "content": "context"}, {"role": "user", "content": "question"}]
    body = {"model": "m", "messages": messages, "vllm_xargs": {"method": "adacad", "context_message": 0}}
    answer = call(state, "POST", "/v1/chat/completions", body).json()
    assert answer["body"]["vllm_xargs"] == {"method": "adacad", "context_free_prompt_ids": [7, 8, 9]}
    assert answer["body"]["messages"] == messages  # the main prompt is untouched
    assert int(answer["content_length"]) == len(json.dumps(answer["body"]).encode())
    assert state.online_renderer.seen == [["question"]]


def test_middleware_checks_the_api_key_before_anything_else():
    state = fake_state(api_key=["secret"])
    assert call(state, "GET", "/v1/contrastive/methods").status_code == 401
    bad = {
        "model": "m",
        "messages": [{"role": "user", "content": "q"}],
        "vllm_xargs": {"method": "cad", "context_message": 5},
    }
    assert call(state, "POST", "/v1/chat/completions", bad).status_code == 401
    auth = {"Authorization": "Bearer secret"}
    assert call(state, "GET", "/v1/contrastive/methods", headers=auth).json()["methods"]
    answer = call(state, "POST", "/v1/chat/completions", bad, headers=auth)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "vllm_xargs.context_message"


def test_methods_document_reads_the_amateur_from_the_engine_config():
    from types import SimpleNamespace

    from contrastive_decoding.backends.vllm.middleware import methods_document
    from contrastive_decoding.backends.vllm.plugin import AMATEUR_KEY

    def state(**hf_config):
        model_config = SimpleNamespace(hf_config=SimpleNamespace(**hf_config))
        return SimpleNamespace(vllm_config=SimpleNamespace(model_config=model_config))

    def entry(document):
        return next(m for m in document["methods"] if m["name"] == "expert_amateur")

    without = entry(methods_document(state()))
    assert not without["served"] and "--amateur-model" in without["reason"]
    assert entry(methods_document(state(**{AMATEUR_KEY: "/models/amateur"})))["served"]
    assert entry(methods_document(None))["served"]  # no engine config: unknown, listed as served
