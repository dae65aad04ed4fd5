"""Teacher-forced scoring speed: each context once per call (``share_prefixes=True``), each context continuing
the previous items' KV caches (``prefix_cache=PrefixCache()``, as the benchmark runner scores) and every
context + continuation in full (``share_prefixes=False``, the path before), side by side, on multiple-choice
items.

    python benchmarks/scoring_speed.py --data-dir DIR --items 20            # TruthfulQA MC, SmolLM2-135M
    python benchmarks/scoring_speed.py --data-dir DIR --method dola --items 20 --repeats 3 --no-full

The paths run the same items in interleaved rounds (prefix cache, shared, full, prefix cache, ...; each round
of the prefix-cache path starts from an empty cache) and the table gives the median seconds per item of each,
items/s, their ratios to the full path, the forwards and the tokens (padding included) each path runs per
item, and the largest difference between each path's per-token values and the full path's (the shared path's
when ``--no-full``).
``--data-dir`` is a directory holding the task's files as ``contrastive-decoding data pull`` lays them out
(default: the cache, pulling on first use).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from contrastive_decoding.benchmarks.data import ensure_task_data
from contrastive_decoding.benchmarks.runner import choice_scoring_defaults
from contrastive_decoding.benchmarks.tasks import get_task
from contrastive_decoding.models import load_model_and_tokenizer, resolve_model_path
from contrastive_decoding.prefix_cache import PrefixCache
from contrastive_decoding.scoring import score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="truthfulqa-mc")
    parser.add_argument("--method", default="greedy")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-full", action="store_true", help="skip the (slow) full-sequence path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task(args.task)
    data_dir = ensure_task_data(task, data_dir=args.data_dir)
    items = task.load(data_dir)[: args.items]
    model, tokenizer = load_model_and_tokenizer(resolve_model_path(args.model), dtype="float32")
    params = dict(choice_scoring_defaults(args.method))

    paths = ["cache", "shared"] + ([] if args.no_full else ["full"])
    counted = {"forwards": 0, "tokens": 0}

    def count(module, positional, kwargs) -> None:
        counted["forwards"] += 1
        counted["tokens"] += int(kwargs["input_ids"].numel())

    model.register_forward_pre_hook(count, with_kwargs=True)
    work: dict[str, tuple[float, float]] = {}  # path -> (forwards, tokens) per item

    def run(path: str) -> tuple[float, list[list[float]]]:
        values = []
        cache = PrefixCache() if path == "cache" else None
        counted.update(forwards=0, tokens=0)
        start = time.perf_counter()
        for item in items:
            results = score(
                model,
                tokenizer,
                [item.context] * len(item.choices),
                list(item.choices),
                args.method,
                batch_size=max(args.batch_size, len(item.choices)),  # one batch per item, as the runner
                share_prefixes=path != "full",
                prefix_cache=cache,
                **params,
            )
            values.append([v for result in results for v in result.token_logprobs])
        seconds = (time.perf_counter() - start) / len(items)
        work[path] = (counted["forwards"] / len(items), counted["tokens"] / len(items))
        return seconds, values

    times: dict[str, list[float]] = {path: [] for path in paths}
    outputs: dict[str, list[list[float]]] = {}
    for _ in range(args.repeats):
        for path in paths:
            seconds, outputs[path] = run(path)
            times[path].append(seconds)
    reference = outputs["shared" if args.no_full else "full"]

    def difference(path: str) -> float:
        return max(
            float((torch.tensor(a) - torch.tensor(b)).abs().nan_to_num(0.0).max())
            for a, b in zip(outputs[path], reference, strict=True)
        )

    names = {
        "full": "full sequences (before)",
        "shared": "shared prefixes",
        "cache": "shared prefixes + prefix cache",
    }
    seconds = {path: statistics.median(times[path]) for path in paths}
    print(
        f"{args.task}, {len(items)} items, {args.model}, method {args.method} {params}, {torch.get_num_threads()} threads"
    )
    base = "full" if not args.no_full else "shared"
    print(
        f"| path | s/item (median of {args.repeats}) | items/s | vs {base} | forwards/item | tokens/item | "
        f"max abs difference vs {base} |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in reversed(paths):
        s = seconds[path]
        diff = "-" if path == base else f"{difference(path):.2e}"
        print(
            f"| {names[path]} | {s:.3f} | {1 / s:.2f} | {seconds[base] / s:.2f}x | {work[path][0]:.1f} | "
            f"{work[path][1]:.0f} | {diff} |"
        )


if __name__ == "__main__":
    main()
