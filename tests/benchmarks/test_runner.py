"""The benchmark runner, report and `bench` CLI on tiny checkpoints and test-only tasks over tiny JSONL files.

The two tasks below are registered into ``TASKS`` when this module is imported (the resume test's driver
script imports it in a subprocess too), so nothing here depends on the real benchmark tasks or data.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from contrastive_decoding.benchmarks.runner import RunConfigMismatch, read_results, run_task
from contrastive_decoding.benchmarks.tasks import Item, ItemOutput, Task, get_task, register
from contrastive_decoding.cli import main
from contrastive_decoding.models import load_model_and_tokenizer

from ..tiny_models import save_tiny_pair

REPO_ROOT = Path(__file__).resolve().parents[2]
# Seconds the test tasks sleep in `score` per item: makes a subprocess run slow enough to kill mid-way.
SLEEP_ENV = "CD_TEST_BENCH_SLEEP_PER_ITEM"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sleep_if_asked() -> None:
    seconds = float(os.environ.get(SLEEP_ENV) or 0)
    if seconds:
        time.sleep(seconds)


@register
class TinyChoiceTask(Task):
    """Pick the choice with the highest log-likelihood; accuracy against ``correct``."""

    name = "test_tiny_choice"
    description = "test-only multiple choice over w.. words"
    data_files = ("tiny/choice.jsonl",)
    kind = "choice"

    def load(self, data_dir: Path) -> list[Item]:
        return [
            Item(
                id=row["id"],
                kind="choice",
                context=row["context"],
                choices=tuple(row["choices"]),
                correct=(row["correct"],),
                context_free=row.get("context_free"),
            )
            for row in _read_jsonl(Path(data_dir) / self.data_files[0])
        ]

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        _sleep_if_asked()
        best = max(range(len(output.choice_logprobs)), key=output.choice_logprobs.__getitem__)
        return {"accuracy": float(best in item.correct)}


@register
class TinyGenerateTask(Task):
    """Generate 4 tokens; score the fraction of reference words in the text."""

    name = "test_tiny_generate"
    description = "test-only generation over w.. words"
    data_files = ("tiny/generate.jsonl",)
    kind = "generate"
    max_new_tokens = 4

    def load(self, data_dir: Path) -> list[Item]:
        return [
            Item(
                id=row["id"],
                kind="generate",
                context=row["prompt"],
                references=(row["reference"],),
                context_free=row.get("context_free"),
            )
            for row in _read_jsonl(Path(data_dir) / self.data_files[0])
        ]

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        _sleep_if_asked()
        reference_words = item.references[0].split()
        words = set((output.text or "").split())
        return {
            "overlap": sum(word in words for word in reference_words) / len(reference_words),
            "length": float(len(output.token_ids)),
        }


def _words(*numbers: int) -> str:
    return " ".join(f"w{number}" for number in numbers)


def write_data(root: Path, num_generate: int = 6, long_prompt_at: int | None = None) -> Path:
    """Tiny JSONL files for both test tasks under ``root/tiny``; item ``long_prompt_at`` gets 300 tokens."""
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    choice_rows = [
        {
            "id": f"c{index}",
            "context": _words(5 + index, 17, 300 + index),
            "context_free": _words(300 + index),
            "choices": [_words(40 + index), _words(41 + index, 7), _words(90)],
            "correct": index % 3,
        }
        for index in range(5)
    ]
    generate_rows = []
    for index in range(num_generate):
        prompt = _words(*(3 + (7 * index + 13 * k) % 500 for k in range(3 + index % 4)))
        if index == long_prompt_at:
            prompt = _words(*(3 + k % 500 for k in range(300)))  # longer than the tiny model's 256 positions
        generate_rows.append(
            {
                "id": f"g{index:02d}",
                "prompt": prompt,
                "context_free": prompt.split(" ", 1)[-1],
                "reference": _words(10 + index, 20 + index),
            }
        )
    for name, rows in (("choice.jsonl", choice_rows), ("generate.jsonl", generate_rows)):
        (root / "tiny" / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bench-checkpoints")
    return save_tiny_pair(root)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_data(tmp_path / "data")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def bench_run(checkpoints, data_dir: Path, output_dir: Path, task: str, method: str, *extra: str):
    return invoke(
        "bench",
        "run",
        task,
        "--model",
        checkpoints["expert"],
        "--method",
        method,
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(output_dir),
        "--no-progress",
        *extra,
    )


# --------------------------------------------------------------------------- end to end through the CLI


def test_bench_help_and_list():
    assert "run" in invoke("bench", "--help").output and "data list" in invoke("bench", "--help").output
    output = invoke("bench", "list").output
    assert "test_tiny_choice" in output and "choice" in output
    assert "test_tiny_generate" in output and "generate" in output


def test_bench_run_generate_writes_results_metadata_and_summary(checkpoints, data_dir, tmp_path):
    out = tmp_path / "run"
    result = bench_run(checkpoints, data_dir, out, "test_tiny_generate", "greedy", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = _read_jsonl(out / "results.jsonl")
    assert [row["id"] for row in rows] == [f"g{index:02d}" for index in range(6)]
    for row in rows:
        assert set(row) == {"id", "output", "scores"}
        assert 1 <= len(row["output"]["token_ids"]) <= 4
        assert row["output"]["text"] == " ".join(
            f"w{token}" for token in row["output"]["token_ids"] if token > 2
        )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "test_tiny_generate" and summary["method"] == "greedy"
    assert summary["num_items"] == 6 and summary["num_errors"] == 0
    assert 0.0 <= summary["metrics"]["overlap"] <= 1.0 and 1.0 <= summary["metrics"]["length"] <= 4.0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"]["path"] == str(Path(checkpoints["expert"]).resolve())
    assert metadata["model"]["weights_hash_method"] == "sha256 of weight file contents"
    assert len(metadata["model_hash"]) == 64
    assert set(metadata["data_files"]) == {"tiny/generate.jsonl"}
    assert set(metadata["versions"]) == {"contrastive_decoding", "torch", "transformers", "python"}
    assert metadata["seed"] == 0 and metadata["params"] == {}

    # The same outputs as the library's own generate call, with the same batches.
    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    from contrastive_decoding.api import generate_outputs

    items = get_task("test_tiny_generate").load(data_dir)
    expected = generate_outputs(model, tokenizer, [item.context for item in items[:4]], max_new_tokens=4)
    assert [row["output"]["token_ids"] for row in rows[:4]] == [output.token_ids for output in expected]


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("greedy", ()),
        ("dola", ("--set", "dola_layers=high", "--set", "relative_top=0.0")),
        ("cad", ()),
        ("sled", ("--set", "evolution_rate=2.5")),
    ],
)
def test_bench_run_choice_task_scores_every_choice(checkpoints, data_dir, tmp_path, method, settings):
    out = tmp_path / "run"
    result = bench_run(checkpoints, data_dir, out, "test_tiny_choice", method, *settings)
    assert result.exit_code == 0, result.output
    rows = _read_jsonl(out / "results.jsonl")
    assert len(rows) == 5 and all("error" not in row for row in rows)
    from contrastive_decoding.scoring import score

    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    item = get_task("test_tiny_choice").load(data_dir)[0]
    # DoLa on choice tasks defaults to the DoLa scripts' MC scoring: raw contrast, no relative-top head
    params = {"dola_layers": "high", "relative_top": 0.0, "normalize": False} if method == "dola" else {}
    if method == "sled":  # SLED's TruthfulQA MC script: 10 steps, lower bound -100, top 50, raw scores summed
        params = {
            "evolution_rate": 2.5,
            "evolution_steps": 10,
            "evolution_lower_bound": -100.0,
            "evolution_scale": 50,
            "normalize": False,
        }
    free = [item.context_free] * 3 if method == "cad" else None
    expected = score(
        model, tokenizer, [item.context] * 3, list(item.choices), method, context_free_contexts=free, **params
    )
    assert rows[0]["output"]["choice_logprobs"] == pytest.approx([result.logprob for result in expected])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_items"] == 5 and 0.0 <= summary["metrics"]["accuracy"] <= 1.0


def test_bench_report_tables_and_chart(checkpoints, data_dir, tmp_path):
    runs = []
    for method, settings in (("greedy", ()), ("dola", ("--set", "dola_layers=low"))):
        out = tmp_path / method
        assert bench_run(checkpoints, data_dir, out, "test_tiny_generate", method, *settings).exit_code == 0
        runs.append(out)
    report_dir = tmp_path / "report"
    result = invoke("bench", "report", *map(str, runs), "--output", str(report_dir))
    assert result.exit_code == 0, result.output
    for name in ("report.md", "report.csv", "test_tiny_generate.png"):
        assert (report_dir / name).is_file() and str(report_dir / name) in result.output
    assert (report_dir / "test_tiny_generate.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (report_dir / "report.md").read_text()
    csv_rows = list(csv.DictReader((report_dir / "report.csv").open()))
    assert [row["method"] for row in csv_rows] == ["greedy", "dola"]
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    for summary, csv_row in zip(summaries, csv_rows, strict=True):
        for metric, value in summary["metrics"].items():
            assert f"{value:.4f}" in markdown
            assert float(csv_row[metric]) == value
    assert 'dola_layers="low"' in markdown
    best_overlap = max(summary["metrics"]["overlap"] for summary in summaries)
    assert f"**{best_overlap:.4f}**" in markdown
    table = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| test_tiny_generate")]
    header = next(line for line in markdown.splitlines() if line.startswith("| task")).split(" | ")
    assert len(table) == 2 and all("**" not in row[header.index("length")] for row in table)  # not graded


def test_bench_report_needs_finished_runs(tmp_path):
    result = CliRunner().invoke(main, ["bench", "report", str(tmp_path), "--output", str(tmp_path / "r")])
    assert result.exit_code != 0 and "summary.json" in result.output


def test_bench_sweep_runs_every_combination_and_reports(checkpoints, data_dir, tmp_path):
    out = tmp_path / "sweep"
    result = invoke(
        "bench",
        "sweep",
        "test_tiny_generate",
        "--model",
        checkpoints["expert"],
        "--grid",
        "cad:cad_alpha=0.5,1.0",
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(out),
        "--no-progress",
        "--limit",
        "3",
    )
    assert result.exit_code == 0, result.output
    run_dirs = sorted(path.name for path in out.iterdir() if path.is_dir())
    assert run_dirs == ["cad-cad_alpha=0.5", "cad-cad_alpha=1.0"]
    for name, alpha in zip(run_dirs, (0.5, 1.0), strict=True):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["params"] == {"cad_alpha": alpha} and summary["num_items"] == 3
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()
    assert (out / "test_tiny_generate.png").is_file()


# --------------------------------------------------------------------------- input errors, before loading


@pytest.mark.parametrize(
    ("task", "method", "settings", "message"),
    [
        ("test_tiny_generat", "greedy", (), "Did you mean 'test_tiny_generate'?"),
        ("test_tiny_generate", "dolla", (), "Unknown method 'dolla'"),
        ("test_tiny_generate", "dola", ("--set", "dola_layer=high"), "Did you mean 'dola_layers'?"),
        ("test_tiny_generate", "cad", ("--set", "cad_alpha=-1"), "cad_alpha"),
        (
            "test_tiny_choice",
            "greedy",
            ("--set", "repetition_penalty=1.2"),
            "repetition_penalty does not apply",
        ),
        ("test_tiny_choice", "contrastive_search", (), "contrastive_search"),
        ("test_tiny_generate", "greedy", ("--set", "normalize=false"), "choice tasks only"),
        ("test_tiny_generate", "expert_amateur", (), "--amateur-model"),
    ],
)
def test_bad_inputs_fail_with_one_line_before_loading_the_model(tmp_path, task, method, settings, message):
    args = ["bench", "run", task, "--model", str(tmp_path / "no-such-model"), "--method", method, *settings]
    result = CliRunner().invoke(
        main, [*args, "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert message in result.output and "no-such-model" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_data_dir_default_and_missing(checkpoints, tmp_path, monkeypatch):
    monkeypatch.delenv("CONTRASTIVE_DECODING_DATA_DIR", raising=False)
    monkeypatch.setenv("CONTRASTIVE_DECODING_CACHE", str(tmp_path / "cache"))  # never the user's cache
    monkeypatch.chdir(tmp_path)
    args = ["bench", "run", "test_tiny_generate", "--model", checkpoints["expert"], "--method", "greedy"]
    result = CliRunner().invoke(main, [*args, "--output-dir", "out"])
    assert result.exit_code == 1 and "--data-dir" in result.output
    monkeypatch.setenv("CONTRASTIVE_DECODING_DATA_DIR", str(tmp_path))  # exists, but holds no task files
    result = CliRunner().invoke(main, [*args, "--output-dir", "out"])
    assert (
        result.exit_code == 1
        and "tiny/generate.jsonl" in result.output
        and "no known source" in result.output
    )
    write_data(tmp_path)
    result = CliRunner().invoke(main, [*args, "--output-dir", "out", "--no-progress", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_items"] == 2


# --------------------------------------------------------------------------- bad items, metadata, resume


def test_bad_item_becomes_an_error_row_and_the_run_finishes(checkpoints, tmp_path):
    data_dir = write_data(tmp_path / "data", num_generate=6, long_prompt_at=2)
    out = tmp_path / "run"
    result = bench_run(checkpoints, data_dir, out, "test_tiny_generate", "greedy", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in _read_jsonl(out / "results.jsonl")}
    assert len(rows) == 6
    assert set(rows["g02"]) == {"id", "error"} and rows["g02"]["error"].startswith("ValueError: ")
    assert "context of 256 tokens" in rows["g02"]["error"]
    assert all("scores" in row for key, row in rows.items() if key != "g02")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_errors"] == 1 and summary["num_items"] == 6 and summary["error_ids"] == ["g02"]

    # Resuming retries the error row only: still one line per id.
    result = bench_run(checkpoints, data_dir, out, "test_tiny_generate", "greedy", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert Counter(row["id"] for row in _read_jsonl(out / "results.jsonl")) == Counter(list(rows))
    assert {row["id"]: row for row in _read_jsonl(out / "results.jsonl")} == rows


def test_metadata_mismatch_refuses_to_resume(checkpoints, data_dir, tmp_path):
    out = tmp_path / "run"
    assert (
        bench_run(checkpoints, data_dir, out, "test_tiny_generate", "greedy", "--limit", "2").exit_code == 0
    )
    for extra in (("--seed", "1"), ("--set", "repetition_penalty=1.2")):
        result = CliRunner().invoke(
            main,
            ["bench", "run", "test_tiny_generate", "--model", checkpoints["expert"], "--method", "greedy"]
            + ["--data-dir", str(data_dir), "--output-dir", str(out), "--no-progress", *extra],
        )
        assert result.exit_code == 1 and "another --output-dir" in result.output
    result = CliRunner().invoke(
        main,
        ["bench", "run", "test_tiny_generate", "--model", checkpoints["amateur"], "--method", "greedy"]
        + ["--data-dir", str(data_dir), "--output-dir", str(out), "--no-progress"],
    )
    assert result.exit_code == 1 and "model_hash" in result.output
    # A larger --limit with the same configuration resumes and extends the run.
    assert (
        bench_run(checkpoints, data_dir, out, "test_tiny_generate", "greedy", "--limit", "4").exit_code == 0
    )
    assert [row["id"] for row in _read_jsonl(out / "results.jsonl")] == ["g00", "g01", "g02", "g03"]
    assert len(json.loads((out / "metadata.json").read_text())["resumed"]) == 1


def test_run_task_drops_a_truncated_line_and_matches_an_uninterrupted_run(checkpoints, data_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    task = get_task("test_tiny_generate")
    common = dict(
        model=model, tokenizer=tokenizer, method="greedy", params={}, data_dir=data_dir, progress=False
    )
    reference = run_task(task, output_dir=tmp_path / "reference", batch_size=4, **common)
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    run_task(task, output_dir=out, batch_size=4, limit=5, **common)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(
        "\n".join(lines[:3]) + "\n" + lines[3][:20]
    )  # g03's line cut by a kill
    assert [row["id"] for row in read_results(out / "results.jsonl")] == ["g00", "g01", "g02"]
    assert (out / "results.jsonl").read_text() == "\n".join(lines[:3]) + "\n"
    resumed = run_task(task, output_dir=out, batch_size=4, **common)
    assert resumed.num_resumed == 3 and resumed.results == reference.results
    assert resumed.metrics == reference.metrics
    with pytest.raises(RunConfigMismatch, match="another --output-dir"):
        run_task(task, output_dir=out, batch_size=4, **{**common, "method": "dola"})


def test_sampled_runs_are_seeded(checkpoints, data_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    task = get_task("test_tiny_generate")
    common = dict(model=model, tokenizer=tokenizer, method="greedy", data_dir=data_dir, progress=False)
    params = {"do_sample": True, "temperature": 5.0}

    def texts(name: str, seed: int) -> list[str]:
        summary = run_task(task, output_dir=tmp_path / name, params=params, seed=seed, **common)
        return [row["output"]["text"] for row in summary.results]

    assert texts("a", 0) == texts("b", 0)
    assert texts("a", 0) != texts("c", 1)


def test_resume_after_sigkill_matches_an_uninterrupted_run(checkpoints, tmp_path):
    data_dir = write_data(tmp_path / "data", num_generate=30)
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO_ROOT)!r})
            import tests.benchmarks.test_runner  # registers the test tasks
            from contrastive_decoding.cli import main
            main()
            """
        )
    )

    def command(output_dir: Path) -> list[str]:
        return [sys.executable, str(driver), "bench", "run", "test_tiny_generate", "--model", checkpoints["expert"]] + [
            "--method", "greedy", "--batch-size", "2", "--data-dir", str(data_dir), "--output-dir", str(output_dir),
            "--no-progress",
        ]  # fmt: skip

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(command(reference_dir), env=environment, check=True, capture_output=True, timeout=300)

    process = subprocess.Popen(
        command(resumed_dir),
        env={**environment, SLEEP_ENV: "0.3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = resumed_dir / "results.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if results.is_file() and len(results.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the slowed run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_rows = len(results.read_text().splitlines())  # the last one may be cut short
    assert 5 <= killed_rows < 30
    assert not (resumed_dir / "summary.json").exists()

    finished = subprocess.run(
        command(resumed_dir), env=environment, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    whole_rows = sum(line.endswith("}") for line in results.read_text().splitlines()[:killed_rows])
    assert f"({whole_rows} from a previous run)" in finished.stderr

    resumed_rows = _read_jsonl(results)
    reference_rows = _read_jsonl(reference_dir / "results.jsonl")
    assert Counter(row["id"] for row in resumed_rows) == Counter(f"g{index:02d}" for index in range(30))
    assert {row["id"]: row for row in resumed_rows} == {row["id"]: row for row in reference_rows}
    reference_summary = json.loads((reference_dir / "summary.json").read_text())
    assert json.loads((resumed_dir / "summary.json").read_text()) == reference_summary
    assert reference_summary["num_items"] == 30 and reference_summary["num_errors"] == 0
