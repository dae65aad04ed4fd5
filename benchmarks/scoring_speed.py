"""Teacher-forced scoring speed: each context once (``share_prefixes=True``) vs every context + continuation in
full (``share_prefixes=False``, the path before), side by side in one run, on multiple-choice items.

    python benchmarks/scoring_speed.py --data-dir DIR --items 20            # TruthfulQA MC, SmolLM2-135M
    python benchmarks/scoring_speed.py --data-dir DIR --method dola --items 20 --repeats 3

The two paths run the same items in interleaved rounds (shared, full, shared, full, ...) and the table gives
the median seconds per item of each, their ratio, the tokens each path computes per item (the floor: the
question once plus every answer), and the largest difference between the two paths' per-token values.
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task(args.task)
    data_dir = ensure_task_data(task, data_dir=args.data_dir)
    items = task.load(data_dir)[: args.items]
    model, tokenizer = load_model_and_tokenizer(resolve_model_path(args.model), dtype="float32")
    params = dict(choice_scoring_defaults(args.method))

    def run(share: bool) -> tuple[float, list[list[float]]]:
        values = []
        start = time.perf_counter()
        for item in items:
            results = score(
                model,
                tokenizer,
                [item.context] * len(item.choices),
                list(item.choices),
                args.method,
                batch_size=args.batch_size,
                share_prefixes=share,
                **params,
            )
            values.append([v for result in results for v in result.token_logprobs])
        return (time.perf_counter() - start) / len(items), values

    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list[list[float]]] = {}
    for _ in range(args.repeats):
        for share in (True, False):
            seconds, outputs[share] = run(share)
            times[share].append(seconds)
    difference = max(
        float((torch.tensor(a) - torch.tensor(b)).abs().nan_to_num(0.0).max())
        for a, b in zip(outputs[True], outputs[False], strict=True)
    )
    context_tokens = [len(tokenizer(item.context)["input_ids"]) for item in items]
    answer_tokens = [
        [len(ids) for ids in tokenizer(list(item.choices), add_special_tokens=False)["input_ids"]]
        for item in items
    ]
    full_tokens = statistics.mean(
        c * len(a) + sum(a) for c, a in zip(context_tokens, answer_tokens, strict=True)
    )
    floor_tokens = statistics.mean(c + sum(a) for c, a in zip(context_tokens, answer_tokens, strict=True))
    shared, full = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"{args.task}, {len(items)} items, {args.model}, method {args.method} {params}, {torch.get_num_threads()} threads"
    )
    print(f"| path | s/item (median of {args.repeats}) | items/s | tokens/item |")
    print("|---|---|---|---|")
    print(f"| full sequences (before) | {full:.3f} | {1 / full:.2f} | {full_tokens:.0f} |")
    print(f"| shared prefixes | {shared:.3f} | {1 / shared:.2f} | {floor_tokens:.0f} |")
    print(f"speed-up {full / shared:.2f}x; max |difference| of per-token values {difference:.2e}")


if __name__ == "__main__":
    main()
