"""`write_report` end to end on run directories written here: intervals, n, paired comparisons, significance.

The run directories hold what the runner writes (``summary.json``, ``metadata.json``, ``results.jsonl``), built
by hand so that the per-item scores, and so the expected intervals and tests, are known.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from contrastive_decoding.benchmarks.report import (
    ReportSettings,
    format_interval,
    load_run,
    run_statistics,
    task_aggregate,
    write_report,
)
from contrastive_decoding.benchmarks.statistics import mean_interval
from contrastive_decoding.benchmarks.tasks import get_task
from contrastive_decoding.benchmarks.tasks.vision import pope_aggregate

QA_TASK = "stats-test-qa"  # not registered: its metrics are plain means of the per-item scores


def _mean_aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({key for row in rows for key in row})
    return {
        key: sum(row[key] for row in rows if key in row) / sum(key in row for row in rows) for key in keys
    }


def make_run(
    root: Path,
    name: str,
    task: str,
    method: str,
    scores: dict[str, dict[str, float]],
    *,
    params: dict | None = None,
    metrics: dict[str, float] | None = None,
    error_ids: tuple[str, ...] = (),
    model: str = "tiny",
    aggregate=_mean_aggregate,
) -> Path:
    """A finished run directory; results.jsonl rows in a shuffled order (the report matches items by id)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    rows = [{"id": item, "output": {"text": "..."}, "scores": value} for item, value in scores.items()]
    rows += [{"id": item, "error": "RuntimeError: boom"} for item in error_ids]
    random.Random(name).shuffle(rows)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "metadata.json").write_text(
        json.dumps({"model": {"path": f"/models/{model}"}, "model_hash": f"hash-{model}"})
    )
    summary = {
        "task": task,
        "method": method,
        "params": params or {},
        "num_items": len(scores) + len(error_ids),
        "num_errors": len(error_ids),
        "metrics": metrics if metrics is not None else aggregate(list(scores.values())),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def _ids(n: int) -> list[str]:
    return [f"q{index:03d}" for index in range(n)]  # sorted as numbers: the report's item order


def _qa_runs(root: Path, n: int = 120) -> tuple[list[Path], dict[str, list[float]]]:
    """greedy (the baseline), dola (fixes 30 items, higher mc2) and cad (one item better) on one model."""
    generator = random.Random(0)
    greedy = [float(generator.random() < 0.45) for _ in range(n)]
    wrong = [index for index, value in enumerate(greedy) if value == 0.0]
    dola = list(greedy)
    for index in wrong[:30]:
        dola[index] = 1.0
    cad = list(greedy)
    cad[wrong[0]] = 1.0
    mc2 = [0.3 + 0.4 * generator.random() for _ in range(n)]
    accuracies = {"greedy": greedy, "dola": dola, "cad": cad}
    runs = []
    for method, accuracy in accuracies.items():
        shift = 0.08 if method == "dola" else 0.0
        scores = {
            item: {"accuracy": value, "mc2": mc2[index] + shift}
            for index, (item, value) in enumerate(zip(_ids(n), accuracy, strict=True))
        }
        params = {"dola_layers": "high"} if method == "dola" else {}
        runs.append(make_run(root, method, QA_TASK, method, scores, params=params))
    return runs, accuracies


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    return [
        line.strip("| ").split(" | ") for line in markdown.splitlines() if line.startswith(f"| {first_cell} ")
    ]


def test_report_shows_intervals_n_and_paired_comparisons(tmp_path: Path) -> None:
    runs, accuracies = _qa_runs(tmp_path / "runs")
    written = write_report(runs, tmp_path / "report")
    assert [path.name for path in written] == ["report.md", "report.csv", "comparisons.csv", f"{QA_TASK}.png"]
    markdown = (tmp_path / "report" / "report.md").read_text()

    # the runs table: value [low, high] (n=...) with the bootstrap of the per-item values in id order
    for accuracy in accuracies.values():
        interval = mean_interval(accuracy, seed=0)
        cell = f"{sum(accuracy) / 120:.4f} [{interval.low:.4f}, {interval.high:.4f}] (n=120)"
        assert cell in markdown.replace("**", ""), cell
    best = sum(accuracies["dola"]) / 120
    assert f"**{best:.4f}** [" in markdown  # dola's accuracy is the best one: bold

    # the comparison table: dola fixes 30 items (McNemar 30 vs 0), cad one (1 vs 0, p = 1)
    comparisons = _table_rows(markdown, "dola") + _table_rows(markdown, "cad")
    by_key = {(row[0].split(" (")[0], row[3]): row for row in comparisons}
    assert set(by_key) == {("dola", "accuracy"), ("dola", "mc2"), ("cad", "accuracy"), ("cad", "mc2")}
    dola = by_key[("dola", "accuracy")]
    assert dola[1] == "greedy" and dola[4].startswith("+0.2500 [") and dola[5] == "120"
    assert dola[6] == "McNemar exact (30 vs 0 discordant)" and dola[-1] == "**yes**, better"
    cad = by_key[("cad", "accuracy")]
    assert cad[4].startswith("+0.0083 [") and cad[6] == "McNemar exact (1 vs 0 discordant)"
    assert cad[7] == "1.0000" and cad[-1] == "no"
    assert by_key[("dola", "mc2")][6].startswith("paired permutation") and by_key[("dola", "mc2")][-1] != "no"
    assert by_key[("cad", "mc2")][-1] == "no"  # identical mc2: p = 1
    assert "Holm-adjusted" in markdown and "significant means adjusted p < 0.05" in markdown

    # report.csv: one row per run, the bounds and n next to each metric
    rows = list(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    assert [row["method"] for row in rows] == ["greedy", "dola", "cad"]
    greedy_interval = mean_interval(accuracies["greedy"], seed=0)
    assert float(rows[0]["accuracy_ci_low"]) == greedy_interval.low
    assert float(rows[0]["accuracy_ci_high"]) == greedy_interval.high and rows[0]["accuracy_n"] == "120"
    assert float(rows[0]["accuracy"]) == pytest.approx(sum(accuracies["greedy"]) / 120)

    # comparisons.csv: the same four comparisons, raw and Holm-adjusted p
    comparison_rows = list(csv.DictReader((tmp_path / "report" / "comparisons.csv").open()))
    assert len(comparison_rows) == 4
    for row in comparison_rows:
        assert float(row["p_adjusted"]) >= float(row["p_value"]) and row["correction"] == "holm"
        assert float(row["ci_low"]) <= float(row["difference"]) <= float(row["ci_high"])
    significant = {(row["method"], row["metric"]): row["significant"] for row in comparison_rows}
    assert significant[("dola", "accuracy")] == "True" and significant[("cad", "accuracy")] == "False"
    assert {row["baseline_method"] for row in comparison_rows} == {"greedy"}


def test_report_settings_pick_the_baseline_alpha_and_correction(tmp_path: Path) -> None:
    runs, _ = _qa_runs(tmp_path / "runs")
    write_report(runs, tmp_path / "report", baseline="dola", correction="none", alpha=1e-30)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert f"### {QA_TASK}: paired comparisons with dola" in markdown
    rows = _table_rows(markdown, "greedy") + _table_rows(markdown, "cad")
    rows = [row for row in rows if row[1].startswith("dola")]  # the comparison rows (not the runs table)
    assert len(rows) == 4 and all(row[-1] == "no" for row in rows)  # nothing passes alpha = 1e-30
    assert "p (raw)" in markdown and "No multiple-comparison correction is applied" in markdown
    comparison_rows = list(csv.DictReader((tmp_path / "report" / "comparisons.csv").open()))
    assert all(row["p_adjusted"] == row["p_value"] for row in comparison_rows)
    # "plain" and "greedy" are one method: asking for plain compares with the greedy run
    write_report(runs, tmp_path / "plain", baseline="plain")
    assert '| dola (dola_layers="high") | greedy |' in (tmp_path / "plain" / "report.md").read_text()
    with pytest.raises(ValueError, match="correction must be one of holm, none"):
        write_report(runs, tmp_path / "bad", correction="bonferroni")
    with pytest.raises(ValueError, match="alpha"):
        write_report(runs, tmp_path / "bad", alpha=5)


def test_items_are_matched_by_id_and_unusable_results_are_named(tmp_path: Path) -> None:
    ids = _ids(40)
    base = {item: {"accuracy": float(index % 2)} for index, item in enumerate(ids)}
    # the method: an error on q000, and one item the baseline never scored
    method = {item: {"accuracy": 1.0} for item in ids[1:]}
    method["extra"] = {"accuracy": 0.0}
    runs = [
        make_run(tmp_path, "plain", QA_TASK, "plain", base),
        make_run(tmp_path, "vcd", QA_TASK, "dola", method, error_ids=("q000",)),
        make_run(tmp_path, "other-model", QA_TASK, "dola", method, model="big"),
    ]
    stale = make_run(tmp_path, "stale", QA_TASK, "cad", base)
    summary = json.loads((stale / "summary.json").read_text())
    # as after a run resumed with a smaller --limit: results.jsonl holds more items than the summary counts
    (stale / "summary.json").write_text(json.dumps({**summary, "num_items": 30}))
    write_report([*runs, stale], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    (row,) = [row for row in _table_rows(markdown, "dola") if row[1] == "plain"]
    # n: q001..q039 are in both runs (q000 failed in the method run, "extra" is not in the baseline)
    assert row[5] == "39"
    assert row[6] == "McNemar exact (19 vs 0 discordant)"  # the even ones of q002..q038
    assert "no plain run of the same model (big) to compare with" in markdown
    assert "0.5000 (no interval)" in markdown  # the stale run's cell
    assert "results.jsonl holds 40 scored items and summary.json counts 30" in markdown
    assert "cad vs plain: not compared" in markdown


def _open_ended_scores(n: int, repetition: float, generator: random.Random) -> dict[str, dict[str, float]]:
    scores = {}
    for item in _ids(n):
        rep = max(0.0, generator.gauss(repetition, 5.0))
        scores[item] = {
            "rep-2": rep,
            "rep-3": rep * 0.7,
            "rep-4": rep * 0.5,
            "length": 100.0 + generator.random(),
        }
    return scores


def test_lower_is_better_recomputed_metrics_and_corpus_metrics(tmp_path: Path) -> None:
    task = get_task("open-ended-wikitext")
    task.embedder = None  # mauve / coherence are written into the summaries below, as a real run would
    generator = random.Random(0)
    runs = []
    for method, repetition in (("plain", 30.0), ("contrastive_search", 10.0)):
        scores = _open_ended_scores(50, repetition, generator)
        metrics = {**task.aggregate(list(scores.values())), "mauve": 0.9}
        runs.append(make_run(tmp_path, method, task.name, method, scores, metrics=metrics))
    write_report(runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    comparisons = {row[3]: row for row in _table_rows(markdown, "contrastive_search") if row[1] == "plain"}
    # less repetition is better: a negative difference reads "better"
    assert comparisons["rep-2"][4].startswith("-") and comparisons["rep-2"][-1] == "**yes**, better"
    # diversity = prod(1 - rep-n / 100) is not a mean of per-item values: recomputed from resampled items
    assert comparisons["diversity"][6].startswith("paired permutation, recomputed")
    assert comparisons["diversity"][-1] == "**yes**, better"
    assert "mauve" not in comparisons and "length" in comparisons
    assert "No interval for mauve (every run): a corpus-level metric" in markdown
    run = load_run(runs[0])
    statistics = run_statistics(run, task_aggregate(task.name), ReportSettings())
    assert statistics["diversity"].source == "recomputed" and statistics["rep-2"].source == "mean"
    diversity = statistics["diversity"].interval
    assert diversity.low < run.metrics["diversity"] < diversity.high and diversity.n == 50
    assert format_interval(run.metrics["diversity"], statistics["diversity"]).endswith("(n=50)")


def test_pope_accuracy_is_tested_with_mcnemar_and_f1_recomputed(tmp_path: Path) -> None:
    generator = random.Random(2)
    truth = [index % 2 == 0 for index in range(80)]
    runs = []
    for method, p_right in (("greedy", 0.7), ("vcd", 0.95)):
        scores = {}
        for item, is_yes in zip(_ids(80), truth, strict=True):
            predicted = is_yes if generator.random() < p_right else not is_yes
            scores[item] = {
                "tp": float(predicted and is_yes),
                "fp": float(predicted and not is_yes),
                "tn": float(not predicted and not is_yes),
                "fn": float(not predicted and is_yes),
            }
        runs.append(make_run(tmp_path, method, "pope-mini", method, scores, aggregate=pope_aggregate))
    write_report(runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    comparisons = {row[3]: row for row in _table_rows(markdown, "vcd") if row[1] == "greedy"}
    assert set(comparisons) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert comparisons["accuracy"][6].startswith("McNemar exact")  # accuracy = mean of per-item (tp + tn)
    assert comparisons["accuracy"][-1] == "**yes**, better"
    assert comparisons["f1"][6].startswith("paired permutation, recomputed")
    assert comparisons["yes_ratio"][-1] in ("no", "**yes**, higher", "**yes**, lower")  # not graded
    runs_table = _table_rows(markdown, "pope-mini")
    assert len(runs_table) == 2 and all("(n=80)" in cell for row in runs_table for cell in row[6:])


def test_chart_draws_the_intervals_as_error_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    runs, accuracies = _qa_runs(tmp_path / "runs", n=60)
    bars: list[dict] = []
    labels: list[list[str]] = []
    original_bar, original_bar_label = Axes.bar, Axes.bar_label

    def recording_bar(self, *args, **kwargs):
        bars.append(kwargs)
        return original_bar(self, *args, **kwargs)

    def recording_bar_label(self, container, *args, **kwargs):
        labels.append(list(kwargs["labels"]))
        return original_bar_label(self, container, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", recording_bar)
    monkeypatch.setattr(Axes, "bar_label", recording_bar_label)
    written = write_report(runs, tmp_path / "report")
    assert written[-1].read_bytes()[:4] == b"\x89PNG"
    assert len(bars) == 2  # accuracy and mc2 panels
    below, above = bars[0]["yerr"]
    interval = mean_interval(accuracies["greedy"], seed=0)
    mean = sum(accuracies["greedy"]) / 60
    assert below[0] == pytest.approx(mean - interval.low) and above[0] == pytest.approx(interval.high - mean)
    # accuracy panel: greedy, dola (significantly better: starred), cad (one item: not)
    greedy, dola, cad = labels[0]
    assert dola.endswith(" *") and not greedy.endswith("*") and not cad.endswith("*")
