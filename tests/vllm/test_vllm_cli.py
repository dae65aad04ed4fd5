"""`contrastive-decoding generate --backend vllm` writes the same JSONL rows as `--backend hf`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("vllm")

from contrastive_decoding.cli import main  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.integration]


def generate_on_both_backends(tmp_path, rows: list[dict], options: list[str]) -> dict[str, list[dict]]:
    """`generate --input rows.jsonl` on SmolLM2-135M through `--backend hf` and `--backend vllm`: output rows."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    outputs = {}
    for backend in ("hf", "vllm"):
        target = tmp_path / f"{backend}.jsonl"
        result = CliRunner().invoke(
            main,
            ["generate", "--model", "smollm2-135m", "--backend", backend, *options, "--input", str(source),
             "--output", str(target)],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[backend] = [json.loads(line) for line in target.read_text().splitlines()]
    return outputs


def test_generate_backend_vllm_equals_hf(tmp_path):
    rows = [{"prompt": "The capital of France is", "id": 1}, {"prompt": "Water boils at", "id": 2}]
    options = ["--method", "dola", "--set", "dola_layers=high", "--set", "repetition_penalty=1.2",
               "--max-new-tokens", "16"]  # fmt: skip
    outputs = generate_on_both_backends(tmp_path, rows, options)
    assert [row["id"] for row in outputs["vllm"]] == [1, 2]
    assert [row["token_ids"] for row in outputs["vllm"]] == [row["token_ids"] for row in outputs["hf"]]
    assert [row["text"] for row in outputs["vllm"]] == [row["text"] for row in outputs["hf"]]


@pytest.mark.parametrize("method, settings", [("cad", []), ("adacad", ["--set", "adacad_threshold=0.01"])])
def test_generate_backend_vllm_cad_rows_equal_hf(tmp_path, method, settings):
    """CAD / AdaCAD rows with their context-free prompts, through both backends, on SmolLM2-135M."""
    rows = [
        {"prompt": "Context: The capital of France is Rome.\nQuestion: What is the capital of France?\nAnswer:",
         "context_free_prompt": "Question: What is the capital of France?\nAnswer:"},
        {"prompt": "Context: Water boils at 40 degrees here.\nQ: At what temperature does water boil?\nA:",
         "context_free_prompt": "Q: At what temperature does water boil?\nA:"},
    ]  # fmt: skip
    outputs = generate_on_both_backends(
        tmp_path, rows, ["--method", method, *settings, "--max-new-tokens", "12"]
    )
    assert [row["token_ids"] for row in outputs["vllm"]] == [row["token_ids"] for row in outputs["hf"]]


SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data"


def test_bench_run_backend_vllm_equals_hf(tmp_path):
    """A generation task through `bench run --backend vllm` scores the same outputs as `--backend hf`."""
    summaries, results = {}, {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        result = CliRunner().invoke(
            main,
            ["bench", "run", "nq-swap", "--model", "smollm2-135m", "--backend", backend, "--method", "dola",
             "--set", "dola_layers=high", "--limit", "3", "--data-dir", str(SHARED_DATA), "--output-dir", str(out),
             "--no-progress"],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summaries[backend] = json.loads((out / "summary.json").read_text())
        results[backend] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "vllm" / "metadata.json").read_text())["backend"] == "vllm"
    assert [row["output"]["token_ids"] for row in results["vllm"]] == [
        row["output"]["token_ids"] for row in results["hf"]
    ]
    assert summaries["vllm"]["metrics"] == summaries["hf"]["metrics"]


def test_bench_run_backend_vllm_refuses_choice_tasks(tmp_path):
    result = CliRunner().invoke(
        main,
        ["bench", "run", "truthfulqa-mc", "--model", "smollm2-135m", "--backend", "vllm", "--method", "dola",
         "--limit", "1", "--data-dir", str(SHARED_DATA), "--output-dir", str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code != 0 and "hf backend only" in result.output
