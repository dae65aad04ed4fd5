"""Load test of `contrastive-decoding serve`: mixed methods, concurrent, some streamed, some streams dropped.

    python benchmarks/load.py                                   # starts `contrastive-decoding serve smollm2-135m`
    python benchmarks/load.py --requests 64 --concurrency 16 --methods greedy,dola
    python benchmarks/load.py --model qwen2.5-coder-1.5b --amateur-model qwen2.5-coder-0.5b
    python benchmarks/load.py --url http://127.0.0.1:8000      # a server you started (loopback only)

``--requests`` completions (a context + a question each) go out ``--concurrency`` at a time, methods taken in turn
from ``--methods`` (``cad`` / ``adacad`` send the question alone as ``context_free_prompt``; ``expert_amateur`` is
added with ``--amateur-model``). A ``--stream-fraction`` of them stream (time to first token measured) and a
``--cancel-fraction`` of those are dropped after their first chunk. Every request asks for ``--max-tokens`` tokens
with ``ignore_eos``, so all produce the same count and latencies compare. Prints one markdown table (a row per
method: requests, errors, tokens/s, latency percentiles, time to first token, mean latency relative to greedy's),
then checks that no request is left running once the clients are gone. Exits 1 if a request failed or one is
left running.

By default the methods are mixed: every method shares each batch, so "x greedy" is the cost of a method's
requests in that mix (all rows pay for the slowest method in the batch). ``--separate`` runs each method's
requests as a phase of their own, at the same concurrency, so "x greedy" is the cost of a loaded server doing
only that method.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
from openai import AsyncOpenAI

CONTEXT_QUESTIONS = [
    (
        "Argentina won the 2022 FIFA World Cup, beating France on penalties in the final.",
        "Who won the 2022 World Cup?",
    ),
    (
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "When was the Eiffel Tower completed?",
    ),
    ("Python was created by Guido van Rossum and first released in 1991.", "Who created Python?"),
    ("Jupiter has the shortest day of the planets, about ten hours.", "Which planet has the shortest day?"),
]
METHOD_ARGS = {
    "greedy": {"method": "greedy"},
    "dola": {"method": "dola", "dola_layers": "high"},
    "cad": {"method": "cad", "cad_alpha": 1.0},
    "adacad": {"method": "adacad"},
    "expert_amateur": {"method": "expert_amateur"},
}
PAIRED = {"cad", "adacad"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Result:
    method: str
    stream: bool
    cancel: bool
    latency: float | None = None  # None: failed or cancelled
    first_token: float | None = None
    tokens: int = 0
    error: str | None = None


@dataclass
class Server:
    url: str
    process: subprocess.Popen | None = None
    log: Path | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (loopback only); default: start one")
    parser.add_argument("--model", default="smollm2-135m", help="what to serve when starting a server")
    parser.add_argument("--amateur-model", help="serve with this amateur and add expert_amateur requests")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--methods", default="greedy,dola,cad", help="comma-separated; greedy is always in")
    parser.add_argument("--stream-fraction", type=float, default=0.25)
    parser.add_argument("--cancel-fraction", type=float, default=0.5, help="share of the streamed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--separate",
        action="store_true",
        help="run each method's requests as a phase of their own (x greedy: the cost of a batch of that method)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port of the started server (default: a free one)"
    )
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="extra `contrastive-decoding serve` option (repeatable)",
    )
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_ARGS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHOD_ARGS)}")
    if "expert_amateur" in methods and not (args.amateur_model or args.url):
        parser.error("expert_amateur needs --amateur-model (or a --url server that has an amateur)")
    if args.amateur_model and "expert_amateur" not in methods:
        methods.append("expert_amateur")
    args.methods = ["greedy", *[m for m in methods if m != "greedy"]]
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}), got {args.url}")
    return args


# ------------------------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace) -> Server:
    port = args.port or free_port()
    executable = shutil.which("contrastive-decoding") or str(
        Path(sys.executable).parent / "contrastive-decoding"
    )
    command = [executable, "serve", args.model, "--host", "127.0.0.1", "--port", str(port)]
    if args.amateur_model:
        command += ["--amateur-model", args.amateur_model]
    for extra in args.serve_arg:
        command += extra.split()
    log = Path(tempfile.mkstemp(prefix="load-server-", suffix=".log")[1])
    print(f"starting: {' '.join(command)}  (log: {log})", file=sys.stderr)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + args.startup_timeout
    while True:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            stop_server(server)
            sys.exit(f"the server did not start in {args.startup_timeout:.0f} s:\n{tail(log)}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)


def stop_server(server: Server) -> None:
    if server.process is None or server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)  # the server, its engine core and worker
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def requests_in_engine(url: str) -> float:
    """vLLM's running + waiting gauges (a CAD twin counts as a request of its own)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("vllm:num_requests_running{", "vllm:num_requests_waiting{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[tuple[str, bool, bool, int]]:
    """(method, stream, cancel, prompt index) per request: methods in turn, streaming drawn with a seeded RNG."""
    rng = random.Random(args.seed)
    methods = itertools.cycle(args.methods)
    requests = []
    for i in range(args.requests):
        stream = rng.random() < args.stream_fraction
        cancel = stream and rng.random() < args.cancel_fraction
        requests.append((next(methods), stream, cancel, i % len(CONTEXT_QUESTIONS)))
    return requests


async def one_request(
    client: AsyncOpenAI, model: str, request: tuple[str, bool, bool, int], max_tokens: int
) -> Result:
    method, stream, cancel, index = request
    context, question = CONTEXT_QUESTIONS[index]
    xargs = dict(METHOD_ARGS[method])
    if method in PAIRED:
        xargs["context_free_prompt"] = f"Question: {question}\nAnswer:"
    options = {
        "model": model,
        "prompt": f"{context}\nQuestion: {question}\nAnswer:",
        "max_tokens": max_tokens,
        "temperature": 0,
        "extra_body": {"vllm_xargs": xargs, "ignore_eos": True},
    }
    result = Result(method, stream, cancel)
    start = time.perf_counter()
    try:
        if not stream:
            out = await client.completions.create(**options)
            result.tokens = out.usage.completion_tokens
        else:
            chunks = await client.completions.create(
                **options, stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].text and result.first_token is None:
                    result.first_token = time.perf_counter() - start
                    if cancel:
                        await chunks.close()  # the client leaves: the server must abort the request
                        return result
                if chunk.usage is not None:
                    result.tokens = chunk.usage.completion_tokens
        if result.tokens != max_tokens:
            raise RuntimeError(f"got {result.tokens} of {max_tokens} tokens")
        result.latency = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported
        result.error = f"{type(error).__name__}: {error}"[:300]
    return result


async def run_load(args: argparse.Namespace, url: str) -> tuple[list[Result], dict[str, float]]:
    """Every planned request's result and the wall time each method's tokens/s is measured over (the whole run,
    or with ``--separate`` its own phase)."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=args.timeout)
    model = (await client.models.list()).data[0].id
    limit = asyncio.Semaphore(args.concurrency)

    async def bounded(request):
        async with limit:
            return await one_request(client, model, request, args.max_tokens)

    requests = plan(args)
    phases = (
        [[r for r in requests if r[0] == method] for method in args.methods] if args.separate else [requests]
    )
    results, walls = [], {}
    for phase in phases:
        start = time.perf_counter()
        results += await asyncio.gather(*(bounded(request) for request in phase))
        wall = time.perf_counter() - start
        walls.update({method: wall for method in {r[0] for r in phase}})
    await client.close()
    return results, walls


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[Result], methods: list[str], walls: dict[str, float]) -> str:
    rows = [
        "| method | requests | streamed | cancelled | errors | tokens/s | p50 latency (s) | p99 latency (s) "
        "| p50 TTFT (s) | x greedy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    greedy_mean = None
    for method in methods:
        mine = [r for r in results if r.method == method]
        done = [r for r in mine if r.latency is not None]
        latencies = [r.latency for r in done]
        mean = statistics.fmean(latencies) if latencies else None
        if method == "greedy":
            greedy_mean = mean
        ratio = mean / greedy_mean if mean and greedy_mean else None
        first = [r.first_token for r in mine if r.first_token is not None]
        rows.append(
            f"| {method} | {len(mine)} | {sum(r.stream for r in mine)} | {sum(r.cancel for r in mine)} "
            f"| {sum(r.error is not None for r in mine)} | {fmt(sum(r.tokens for r in done) / walls[method], 1)} "
            f"| {fmt(percentile(latencies, 50))} | {fmt(percentile(latencies, 99))} | {fmt(percentile(first, 50))} "
            f"| {fmt(ratio)} |"
        )
    total = sum(r.tokens for r in results if r.latency is not None)
    wall = sum(set(walls.values()))
    how = "its own phase's" if len(set(walls.values())) > 1 else "the whole run's"
    rows += [
        "",
        f"{len(results)} requests in {wall:.1f} s, {total} tokens from completed requests: {total / wall:.1f} "
        f"tokens/s in all. A method's tokens/s: its completed requests' tokens over {how} wall time; latency and "
        "x greedy (mean latency over greedy's): completed requests, cancelled streams left out.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = Server(args.url.rstrip("/")) if args.url else start_server(args)
    try:
        results, walls = asyncio.run(run_load(args, server.url))
        print(table(results, args.methods, walls))
        errors = [r for r in results if r.error is not None]
        for r in errors[:10]:
            print(f"error ({r.method}, stream={r.stream}): {r.error}", file=sys.stderr)
        deadline = time.monotonic() + 30
        left = requests_in_engine(server.url)
        while left > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            left = requests_in_engine(server.url)
        print(f"\nrequests still running or waiting in the engine after the run: {left:.0f}")
        return 1 if errors or left > 0 else 0
    finally:
        stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
