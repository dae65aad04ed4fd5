"""Every shipped task end to end through `contrastive-decoding bench run` (CliRunner) on a tiny model: a few
items, no error rows, the task's metrics in summary.json. Text tasks run greedy (and CAD where the task gives a
context-free prompt) on a tiny Llama with a long context; image tasks run in tests/benchmarks/test_vision_tasks.py.
(The tiny word-level vocabulary reads real text as unknown words, so its outputs may be empty: the metrics
that need words, e.g. rep-n, are checked by hand in test_tasks.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from contrastive_decoding.cli import main
from tests.tiny_models import tiny_config, tiny_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CASES = [
    ("truthfulqa-mc", "greedy", {"mc1", "mc2", "mc3"}),
    ("truthfulqa-gen", "greedy", {"bleu_acc", "rougeL_diff", "minilm_acc"}),
    ("factor-expert", "greedy", {"accuracy"}),
    ("nq-swap", "cad", {"exact_match"}),
    ("adacad-nq-synth", "adacad", {"exact_match"}),
    ("memotrap", "cad", {"accuracy"}),
    ("memotrap-all", "greedy", {"accuracy"}),
    ("gsm8k", "greedy", {"accuracy"}),
    ("open-ended-wikitext", "greedy", {"length", "coherence"}),
    ("open-ended-book", "greedy", {"length"}),
    ("cnndm", "cad", {"rougeL", "length"}),
    ("overshadow-memotrap", "condition_contrast", {"accuracy", "memorized", "instruction_overshadowed"}),
    ("truthfulqa-mc", "layer_fusion", {"mc1", "mc2", "mc3"}),
]


@pytest.fixture(scope="module")
def long_context_checkpoint(tmp_path_factory) -> str:
    import torch

    config = tiny_config("llama")
    config.max_position_embeddings = 4096  # few-shot prompts of whitespace words, one token each
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-long")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(("task", "method", "metrics"), CASES, ids=[f"{case[0]}-{case[1]}" for case in CASES])
def test_bench_run_every_task(long_context_checkpoint, tmp_path, task, method, metrics):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["bench", "run", task, "--model", long_context_checkpoint, "--method", method, "--limit", "2"]
        + ["--data-dir", str(SHARED), "--output-dir", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("error" not in row for row in rows), rows
    summary = json.loads((out / "summary.json").read_text())
    assert metrics <= set(summary["metrics"]), summary["metrics"]


def test_expert_amateur_choice_scores_are_finite(long_context_checkpoint, tmp_path):
    """On choice tasks expert-amateur scores the summed raw contrast without its plausibility head: with the head,
    every multi-token FACTOR completion scored -inf (a tie, counted wrong)."""
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "run",
            "factor-expert",
            "--model",
            long_context_checkpoint,
            "--amateur-model",
            long_context_checkpoint,
        ]
        + [
            "--method",
            "expert_amateur",
            "--limit",
            "2",
            "--data-dir",
            str(SHARED),
            "--output-dir",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(value > float("-inf") for row in rows for value in row["output"]["choice_logprobs"])
    params = json.loads((out / "metadata.json").read_text())["params"]
    assert params == {"plausibility_alpha": 0.0, "normalize": False}
