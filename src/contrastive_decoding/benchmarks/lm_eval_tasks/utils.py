"""Helpers of the local lm-eval tasks: documents built by our own task classes, so the prompts and choices are
exactly those of ``contrastive-decoding bench run``."""

from __future__ import annotations

import math
from typing import Any


def load_truthfulqa_mc(data_dir: str | None = None, **_: Any) -> dict:
    """{"test": Dataset} of TruthfulQA MC documents: prompt, choices (no leading space), labels."""
    import datasets

    from contrastive_decoding.benchmarks.data import ensure_task_data
    from contrastive_decoding.benchmarks.tasks import get_task

    task = get_task("truthfulqa-mc")
    items = task.load(ensure_task_data(task, data_dir=data_dir or None))
    rows = [
        {
            "id": item.id,
            "prompt": item.context,
            "choices": [choice[1:] for choice in item.choices],  # lm-eval puts target_delimiter " " in front
            "labels": [int(index in item.correct) for index in range(len(item.choices))],
        }
        for item in items
    ]
    return {"test": datasets.Dataset.from_list(rows)}


def process_results_mc2(doc: dict, results: list) -> dict[str, float]:
    """MC2: the normalized probability mass of the correct answers (TruthfulQA's and lm-eval's formula)."""
    logprobs = [result[0] for result in results]
    top = max(logprobs)
    weights = [math.exp(value - top) for value in logprobs]
    correct = sum(weight for weight, label in zip(weights, doc["labels"], strict=True) if label)
    return {"mc2": correct / sum(weights)}
