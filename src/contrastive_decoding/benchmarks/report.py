"""Tables and plots over finished runs, with item-level uncertainty: ``write_report(run_dirs, output_dir)``.

Each run directory holds the ``summary.json``, ``metadata.json`` and ``results.jsonl`` that
:func:`~.runner.run_task` writes. The report has, per task:

- a markdown table (rows: runs, columns: metrics) whose cells read ``0.4120 [0.3780, 0.4470] (n=817)``: the
  summary's value, its bootstrap 95% interval over the items and the number of items it is computed from (the
  best value of each graded metric within a task in bold);
- a comparison table: every run against each run of the baseline method (``plain``, recorded as ``plain`` or
  ``greedy``, by default) of the same task and model, on the items both scored (matched by id): the difference,
  its paired bootstrap interval, the p-value of a paired test, and whether it is significant;
- one PNG bar chart (one panel per metric, one bar per run, the intervals as error bars, ``*`` after the value of
  a run significantly different from a baseline run).

``report.csv`` holds the run rows at full precision with ``<metric>_ci_low``, ``<metric>_ci_high`` and
``<metric>_n`` next to each metric; ``comparisons.csv`` the comparison rows (another schema, so a file of its
own: ``report.csv`` stays one row per run).

Where the intervals come from (:mod:`.statistics`, :func:`run_statistics`): a metric that is the mean of the
per-item scores in ``results.jsonl`` (accuracy, MC1, rep-n, CHAIR_s, ...), or of the task's one-item values
(POPE accuracy: the mean of tp + tn), gets a BCa bootstrap of that mean; a metric the task computes from the
rows otherwise (POPE precision / recall / F1, CHAIR_i, diversity) is recomputed with the task's ``aggregate`` on
resampled items. A metric neither reproduces (MAUVE and coherence need the texts' embeddings; a
run whose ``results.jsonl`` does not match its summary) is shown without an interval, and the report says why.

Paired tests: McNemar's exact test for 0/1 per-item values, a paired permutation test otherwise (for recomputed
metrics: the two runs' rows of an item swapped or not, the metric recomputed). The comparisons of one task are
one family: their p-values are Holm-adjusted (``correction="holm"``, the default; ``"none"`` reports raw
p-values), and a difference is marked significant when its adjusted p-value is below ``alpha`` (0.05).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import METADATA_FILE, RESULTS_FILE, SUMMARY_FILE
from .statistics import (
    CONFIDENCE,
    N_RESAMPLES,
    N_RESAMPLES_RECOMPUTED,
    Aggregate,
    Interval,
    PairedTest,
    holm,
    mean_interval,
    paired_mean_test,
    paired_resampled_tests,
    resampled_intervals,
)

# Metrics where a lower value is better (hallucination and repetition rates); matched on the name's start.
LOWER_IS_BETTER_PREFIXES = (
    "rep-",
    "chair",
    "invalid",
    "hallucinat",
    "error",
    "perplexity",
    "loss",
    "memorized",
)
# Metrics with no better direction (lengths, counts, ratios that describe rather than grade): never bold.
NEUTRAL_PREFIXES = ("mean_length", "length", "num_", "yes_ratio", "mentions", "instruction_overshadowed")

BASELINE = "plain"  # the method runs are compared with (its alias "greedy" is the same method)
ALPHA = 0.05
CORRECTIONS = ("holm", "none")


def metric_direction(name: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 when neither (no value is marked best)."""
    lowered = name.lower()
    if lowered.startswith(NEUTRAL_PREFIXES):
        return 0
    if lowered.startswith(LOWER_IS_BETTER_PREFIXES):
        return -1
    return 1


@dataclass
class RunRecord:
    """One run as the report shows it. ``item_scores`` maps item id -> that item's scores (successful items of
    ``results.jsonl``, sorted by id); ``item_scores_note`` says why they cannot be used ("" when they can)."""

    run_dir: Path
    task: str
    method: str
    params: dict[str, Any]
    model: str
    num_items: int
    num_errors: int
    metrics: dict[str, float]
    model_hash: str | None = None
    item_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    item_scores_note: str = ""

    @property
    def params_text(self) -> str:
        return ", ".join(f"{key}={json.dumps(value)}" for key, value in self.params.items()) or "-"

    @property
    def label(self) -> str:
        """``method`` plus its parameters, for chart ticks."""
        return self.method if not self.params else f"{self.method}\n{self.params_text}"

    @property
    def name(self) -> str:
        """``method`` plus its parameters on one line, for the comparison table."""
        return self.method if not self.params else f"{self.method} ({self.params_text})"


def read_item_scores(run_dir: Path, expected: int | None = None) -> tuple[dict[str, dict[str, float]], str]:
    """The successful rows of ``run_dir/results.jsonl`` as ``{id: scores}`` (sorted by id; the first row of a
    repeated id kept, as the runner does; the file is only read), and a note that is empty unless they cannot
    stand for the run: no file, or not ``expected`` rows (``num_items - num_errors`` of the summary: e.g. a
    directory resumed with a smaller ``--limit`` holds more rows than its summary counts)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return {}, f"no {RESULTS_FILE} (per-item scores), so no interval or paired test"
    scores: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "id" not in row or "error" in row or str(row["id"]) in scores:
            continue
        scores[str(row["id"])] = {key: float(value) for key, value in (row.get("scores") or {}).items()}
    scores = {
        item: dict(value) for item, value in sorted(scores.items())
    }  # allocated in order: faster resamples
    if expected is not None and len(scores) != expected:
        return scores, (
            f"{RESULTS_FILE} holds {len(scores)} scored items and {SUMMARY_FILE} counts {expected} (a run resumed "
            "with another --limit?), so its per-item scores do not match its metrics: no interval or paired test"
        )
    return scores, ""


def load_run(run_dir: Path) -> RunRecord:
    """Read a run's ``summary.json`` (required), ``metadata.json`` (for the model name and hash, if present)
    and ``results.jsonl`` (the per-item scores behind intervals and paired tests, if present)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise ValueError(f"{run_dir} has no {SUMMARY_FILE}: is it a finished `bench run` output directory?")
    summary = json.loads(summary_path.read_text())
    metadata_path = run_dir / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    model_path = (metadata.get("model") or {}).get("path") or "?"
    num_items, num_errors = int(summary.get("num_items", 0)), int(summary.get("num_errors", 0))
    item_scores, note = read_item_scores(run_dir, num_items - num_errors)
    return RunRecord(
        run_dir=run_dir,
        task=summary["task"],
        method=summary["method"],
        params=summary.get("params") or {},
        model=Path(model_path).name or model_path,
        num_items=num_items,
        num_errors=num_errors,
        metrics={key: float(value) for key, value in (summary.get("metrics") or {}).items()},
        model_hash=metadata.get("model_hash"),
        item_scores=item_scores,
        item_scores_note=note,
    )


def _metric_names(runs: list[RunRecord]) -> list[str]:
    return list(dict.fromkeys(name for run in runs for name in run.metrics))


def best_values(runs: list[RunRecord]) -> dict[str, float]:
    """The best value of each metric over ``runs`` (runs of one task), for metrics with a direction and at
    least two runs holding a finite value."""
    best: dict[str, float] = {}
    for name in _metric_names(runs):
        direction = metric_direction(name)
        values = [
            run.metrics[name] for run in runs if name in run.metrics and math.isfinite(run.metrics[name])
        ]
        if direction and len(values) >= 2:
            best[name] = max(values) if direction > 0 else min(values)
    return best


def format_value(value: float) -> str:
    """Four decimals (the markdown table's precision)."""
    return "nan" if math.isnan(value) else f"{value:.4f}"


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ReportSettings:
    """How the report tests: the baseline method, the significance level, the multiple-comparison correction
    and the bootstrap's confidence level, resamples and seed (:func:`write_report`'s keyword arguments)."""

    baseline: str = BASELINE
    alpha: float = ALPHA
    correction: str = "holm"
    confidence: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    n_resamples_recomputed: int = N_RESAMPLES_RECOMPUTED
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, str) or not self.baseline:
            raise ValueError(f"baseline must be a method name, got {self.baseline!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        for name in ("n_resamples", "n_resamples_recomputed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def common(self, recomputed: bool = False) -> dict[str, Any]:
        """The keyword arguments of the :mod:`.statistics` functions (``recomputed``: the slower paths that
        run the task's ``aggregate`` per resample)."""
        n_resamples = self.n_resamples_recomputed if recomputed else self.n_resamples
        return {"confidence": self.confidence, "n_resamples": n_resamples, "seed": self.seed}


@dataclass(frozen=True)
class MetricStatistics:
    """A run's metric: its interval, how it was obtained (``"mean"`` of per-item values, ``"recomputed"``
    from resampled rows, ``"none"``), why there is no interval (for ``"none"``) and, for ``"mean"``, the
    per-item values (item id -> value) the paired tests use."""

    interval: Interval | None
    source: str
    note: str = ""
    item_values: dict[str, float] = field(default_factory=dict)


def canonical_method(method: str) -> str:
    """The registry's name of ``method`` (``"greedy"`` -> ``"plain"``); unknown names as given."""
    from ..decoding import registry

    try:
        return registry.resolve(method)
    except ValueError:
        return method


def task_aggregate(task_name: str) -> Aggregate | None:
    """The registered task's ``aggregate`` over per-item score rows (None for a task not registered in this
    process). Its ``embedder`` is set to None where it has one: the corpus-level metrics it feeds (MAUVE,
    coherence) need the texts, which the score rows do not hold, and are left out (quietly). An ``aggregate``
    that raises on some rows (a resample without a key) gives ``{}`` for them."""
    from .tasks import TASKS

    if task_name not in TASKS:
        return None
    task = TASKS[task_name]()
    if hasattr(task, "embedder"):
        task.embedder = None

    def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
        try:
            return dict(task.aggregate(rows))
        except (ArithmeticError, KeyError, ValueError):
            return {}

    return aggregate


# Resamples on which a metric found to be the mean of its one-item values is checked to stay so.
_IDENTITY_CHECKS = 5


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _direct_values(run: RunRecord, name: str) -> dict[str, float] | None:
    """The per-item scores of ``name`` when the metric is their mean (the default ``aggregate``: the mean
    over the items that have the key)."""
    values = {
        item: scores[name]
        for item, scores in run.item_scores.items()
        if name in scores and math.isfinite(scores[name])
    }
    return values if values and _close(_mean(values.values()), run.metrics[name]) else None


def _derived_values(
    run: RunRecord, name: str, aggregate: Aggregate, singles: dict[str, dict[str, float]], seed: int
) -> dict[str, float] | None:
    """Per-item values of a metric the task computes from other scores (POPE accuracy from tp / tn, ...):
    ``aggregate([row])`` of each item, when their mean is the metric, on all items and on a few resamples
    (so a ratio that equals the mean of one-item ratios by coincidence is not taken for a mean)."""
    import numpy as np

    values = {item: single.get(name, math.nan) for item, single in singles.items()}
    if not values or not all(math.isfinite(value) for value in values.values()):
        return None
    if not _close(_mean(values.values()), run.metrics[name]):
        return None
    ids, rows = list(run.item_scores), list(run.item_scores.values())
    generator = np.random.default_rng(seed)
    for _ in range(_IDENTITY_CHECKS):
        sample = generator.integers(0, len(rows), len(rows))
        recomputed = aggregate([rows[index] for index in sample]).get(name, math.nan)
        if not _close(recomputed, _mean(values[ids[index]] for index in sample)):
            return None
    return values


def run_statistics(
    run: RunRecord, aggregate: Aggregate | None, settings: ReportSettings | None = None
) -> dict[str, MetricStatistics]:
    """An interval for each of ``run.metrics``, by the first path that reproduces the summary's value:

    1. the mean of the per-item scores of that name (accuracy, MC1, rep-n, ...);
    2. the mean of per-item values ``aggregate([row])[name]`` (POPE accuracy, yes_ratio), checked on resamples;
    3. ``aggregate`` recomputed on resampled items (POPE precision / recall / F1, CHAIR_i, diversity);
    4. none, with the reason (MAUVE and coherence; a task not registered here; per-item scores that do not
       match the summary).

    Paths 1 and 2 keep the per-item values, so paired tests of 0/1 values can be McNemar's.
    """
    settings = settings or ReportSettings()
    if run.item_scores_note:
        return {name: MetricStatistics(None, "none", run.item_scores_note) for name in run.metrics}
    statistics: dict[str, MetricStatistics] = {}
    to_recompute: list[str] = []
    rows = list(run.item_scores.values())
    singles: dict[str, dict[str, float]] | None = None
    for name, value in run.metrics.items():
        if not math.isfinite(value):
            statistics[name] = MetricStatistics(None, "none", "the value is not a number")
            continue
        values = _direct_values(run, name)
        if values is None and aggregate is not None and rows:
            if singles is None:
                singles = {item: aggregate([scores]) for item, scores in run.item_scores.items()}
            values = _derived_values(run, name, aggregate, singles, settings.seed)
        if values is None:
            to_recompute.append(name)
            continue
        interval = mean_interval(list(values.values()), **settings.common())
        statistics[name] = MetricStatistics(interval, "mean", item_values=values)
    full = aggregate(rows) if aggregate is not None and to_recompute and rows else {}
    recomputable = [name for name in to_recompute if name in full and _close(full[name], run.metrics[name])]
    intervals = (
        resampled_intervals(rows, aggregate, recomputable, **settings.common(recomputed=True))
        if recomputable and aggregate is not None
        else {}
    )
    for name in to_recompute:
        if name in intervals:
            statistics[name] = MetricStatistics(intervals[name], "recomputed")
        elif not rows:
            statistics[name] = MetricStatistics(None, "none", f"no scored item in {RESULTS_FILE}")
        elif aggregate is not None and not full:
            statistics[name] = MetricStatistics(
                None, "none", f"task {run.task!r}'s aggregate raised on the per-item scores of {RESULTS_FILE}"
            )
        elif aggregate is None:
            statistics[name] = MetricStatistics(
                None,
                "none",
                f"not a mean of per-item scores, and task {run.task!r} is not registered here to recompute it",
            )
        elif name in full:
            statistics[name] = MetricStatistics(
                None,
                "none",
                f"recomputed from {RESULTS_FILE} it is {full[name]!r}, not the summary's {run.metrics[name]!r}",
            )
        else:
            statistics[name] = MetricStatistics(
                None,
                "none",
                "a corpus-level metric that is not computed from the per-item scores (MAUVE and coherence "
                "need the texts' embeddings), so it is not resampled",
            )
    return {name: statistics[name] for name in run.metrics}


@dataclass(frozen=True)
class Comparison:
    """``run`` against ``baseline`` on one metric (``test.difference = run - baseline``): the test,
    its p-value after the correction (``p_adjusted``) and whether that is below ``alpha``."""

    task: str
    run: RunRecord
    baseline: RunRecord
    metric: str
    test: PairedTest
    p_adjusted: float
    significant: bool

    @property
    def direction(self) -> int:
        return metric_direction(self.metric)

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` (graded metrics) or ``higher`` / ``lower`` (lengths, counts), when
        significant; ``no`` otherwise."""
        if not self.significant:
            return "no"
        if self.direction:
            return "better" if self.test.difference * self.direction > 0 else "worse"
        return "higher" if self.test.difference > 0 else "lower"


def _model_key(run: RunRecord) -> str:
    return run.model_hash or run.model


def compare_runs(
    runs: list[RunRecord],
    statistics: dict[Path, dict[str, MetricStatistics]],
    aggregate: Aggregate | None,
    settings: ReportSettings | None = None,
) -> tuple[list[Comparison], list[str]]:
    """Paired comparisons of one task's ``runs`` with its baseline runs, and notes on pairs left out.

    ``statistics`` maps ``run.run_dir`` to :func:`run_statistics`. Every run whose method is not the baseline is
    compared with every baseline run of the same model on the items both scored, metric by metric; the
    p-values of the task are adjusted together (``settings.correction``).
    """
    settings = settings or ReportSettings()
    baseline = canonical_method(settings.baseline)
    baselines = [run for run in runs if canonical_method(run.method) == baseline]
    others = [run for run in runs if canonical_method(run.method) != baseline]
    notes: list[str] = []
    if not baselines:
        if others:
            notes.append(f"No comparison: no run of the baseline method ({settings.baseline}) in this task.")
        return [], notes
    pending: list[tuple[RunRecord, RunRecord, str, PairedTest]] = []
    for run in others:
        partners = [base for base in baselines if _model_key(base) == _model_key(run)]
        if not partners:
            notes.append(
                f"{run.name}: no {settings.baseline} run of the same model ({run.model}) to compare with."
            )
        for base in partners:
            pending += _compare_pair(run, base, statistics, aggregate, settings, notes)
    raw = [test.p_value for _, _, _, test in pending]
    adjusted = holm(raw) if settings.correction == "holm" else raw
    comparisons = [
        Comparison(run.task, run, base, metric, test, p, bool(math.isfinite(p) and p < settings.alpha))
        for (run, base, metric, test), p in zip(pending, adjusted, strict=True)
    ]
    return comparisons, notes


def _compare_pair(
    run: RunRecord,
    base: RunRecord,
    statistics: dict[Path, dict[str, MetricStatistics]],
    aggregate: Aggregate | None,
    settings: ReportSettings,
    notes: list[str],
) -> list[tuple[RunRecord, RunRecord, str, PairedTest]]:
    for record in (run, base):
        if record.item_scores_note:
            notes.append(
                f"{run.name} vs {base.name}: not compared, {record.run_dir}: {record.item_scores_note}."
            )
            return []
    common = sorted(run.item_scores.keys() & base.item_scores.keys())
    if not common:
        notes.append(f"{run.name} vs {base.name}: not compared, no item id in common.")
        return []
    pending: list[tuple[RunRecord, RunRecord, str, PairedTest]] = []
    recompute: list[str] = []
    for metric in (name for name in run.metrics if name in base.metrics):
        sources = {statistics[run.run_dir][metric].source, statistics[base.run_dir][metric].source}
        if sources == {"mean"}:
            run_values = statistics[run.run_dir][metric].item_values
            base_values = statistics[base.run_dir][metric].item_values
            ids = [item for item in common if item in run_values and item in base_values]
            a = [run_values[item] for item in ids]
            b = [base_values[item] for item in ids]
            pending.append((run, base, metric, paired_mean_test(a, b, **settings.common())))
        elif "none" not in sources and aggregate is not None:
            recompute.append(metric)
        else:
            note = next(
                statistics[record.run_dir][metric].note
                for record in (run, base)
                if statistics[record.run_dir][metric].source == "none"
            )
            notes.append(f"{run.name} vs {base.name}, {metric}: no test ({note}).")
    if recompute and aggregate is not None:
        tests = paired_resampled_tests(
            [run.item_scores[item] for item in common],
            [base.item_scores[item] for item in common],
            aggregate,
            recompute,
            **settings.common(recomputed=True),
        )
        pending += [(run, base, metric, tests[metric]) for metric in recompute]
    order = list(run.metrics)
    return sorted(pending, key=lambda entry: order.index(entry[2]))


# --------------------------------------------------------------------------- markdown


def format_interval(value: float, statistics: MetricStatistics | None, bold: bool = False) -> str:
    """``0.4120 [0.3780, 0.4470] (n=817)``: the value (bold when best), its interval and item count."""
    text = format_value(value)
    text = f"**{text}**" if bold else text
    interval = statistics.interval if statistics is not None else None
    if interval is None:
        return f"{text} (no interval)"
    if not interval.has_interval:
        return f"{text} (n={interval.n}, no interval)"
    return f"{text} [{format_value(interval.low)}, {format_value(interval.high)}] (n={interval.n})"


def _signed(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:+.4f}"


def format_difference(test: PairedTest) -> str:
    """``+0.0250 [-0.0100, +0.0600]``: the difference and its paired interval."""
    if math.isnan(test.low) or math.isnan(test.high):
        return f"{_signed(test.difference)} (no interval)"
    return f"{_signed(test.difference)} [{_signed(test.low)}, {_signed(test.high)}]"


def format_p(p: float) -> str:
    """Four decimals, or two significant digits below 0.001."""
    if math.isnan(p):
        return "nan"
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


@dataclass
class _TaskReport:
    runs: list[RunRecord]
    statistics: dict[Path, dict[str, MetricStatistics]]
    comparisons: list[Comparison]
    notes: list[str]


def _interval_notes(task: _TaskReport) -> list[str]:
    """One line per (metric, reason) without an interval, naming the runs (or "every run")."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for run in task.runs:
        for name, statistics in task.statistics[run.run_dir].items():
            if statistics.source == "none":
                grouped.setdefault((name, statistics.note), []).append(run.name)
    lines = []
    for (name, note), names in grouped.items():
        where = "every run" if len(names) == len(task.runs) else ", ".join(names)
        lines.append(f"- No interval for {name} ({where}): {note}.")
    return lines


def _markdown(tasks: dict[str, _TaskReport], settings: ReportSettings) -> str:
    lines = ["# Benchmark report", ""]
    correction = "Holm" if settings.correction == "holm" else "raw"
    for task_name, task in tasks.items():
        runs = task.runs
        names = _metric_names(runs)
        best = best_values(runs)
        header = ["task", "method", "params", "model", "items", "errors", *names]
        lines += [f"## {task_name}", "", _row(header), "|" + "---|" * len(header)]
        for run in runs:
            cells = [
                run.task,
                run.method,
                run.params_text,
                run.model,
                str(run.num_items),
                str(run.num_errors),
            ]
            for name in names:
                if name not in run.metrics:
                    cells.append("")
                    continue
                bold = name in best and run.metrics[name] == best[name]
                cells.append(format_interval(run.metrics[name], task.statistics[run.run_dir].get(name), bold))
            lines.append(_row(cells))
        notes = _interval_notes(task)
        lines += ["", *notes] + ([""] if notes else [])
        if task.comparisons or task.notes:
            lines += [f"### {task_name}: paired comparisons with {settings.baseline}", ""]
        if task.comparisons:
            header = [
                "method",
                "baseline",
                "model",
                "metric",
                f"difference [{settings.confidence:.0%} CI]",
                "n",
                "test",
                "p",
                f"p ({correction})",
                "significant?",
            ]
            lines += [_row(header), "|" + "---|" * len(header)]
            for comparison in task.comparisons:
                verdict = comparison.verdict
                lines.append(
                    _row(
                        [
                            comparison.run.name,
                            comparison.baseline.name,
                            comparison.run.model,
                            comparison.metric,
                            format_difference(comparison.test),
                            str(comparison.test.n),
                            comparison.test.test,
                            format_p(comparison.test.p_value),
                            format_p(comparison.p_adjusted),
                            "no" if verdict == "no" else f"**yes**, {verdict}",
                        ]
                    )
                )
            lines.append("")
        lines += [f"- {note}" for note in task.notes]
        if task.notes:
            lines.append("")
    lines += [
        "Bold: the best value of a metric within a task (higher is better, except rates such as rep-n, CHAIR "
        "and invalid_rate; lengths, counts and yes_ratio are not graded).",
        "",
        f"Intervals: {settings.confidence:.0%} bootstrap intervals over the items (seed {settings.seed}): BCa "
        f"with {settings.n_resamples} resamples for means of per-item values (percentile where BCa is "
        f"undefined), percentile with {settings.n_resamples_recomputed} resamples for metrics the task "
        "recomputes from resampled items (POPE precision / recall / F1, CHAIR_i, diversity); n = the items the "
        "value is computed from. "
        "A difference is the run minus the baseline on the items both scored (matched by id), with a paired "
        "bootstrap interval. Tests: McNemar's exact test (binomial on the discordant items) for 0/1 per-item "
        "scores, a paired permutation test otherwise; p-values are two-sided, and a permutation p-value "
        f"is at least 2 / (resamples + 1) ({2 / (settings.n_resamples + 1):.1e} for means, "
        f"{2 / (settings.n_resamples_recomputed + 1):.1e} for recomputed metrics: raise the resamples when a "
        "large family of comparisons needs smaller ones). "
        + (
            f"The p-values of one task's comparisons are Holm-adjusted (family-wise error {settings.alpha}); "
            if settings.correction == "holm"
            else "No multiple-comparison correction is applied; "
        )
        + f"significant means adjusted p < {settings.alpha}; better / worse follow each metric's direction.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV


def _bound(statistics: MetricStatistics | None, field_name: str) -> str:
    interval = statistics.interval if statistics is not None else None
    if interval is None:
        return ""
    value = getattr(interval, field_name)
    return str(value) if field_name == "n" else repr(float(value))


def _write_csv(path: Path, tasks: dict[str, _TaskReport]) -> None:
    runs = [run for task in tasks.values() for run in task.runs]
    names = _metric_names(runs)
    statistics = {key: value for task in tasks.values() for key, value in task.statistics.items()}
    metric_columns = [
        column for name in names for column in (name, f"{name}_ci_low", f"{name}_ci_high", f"{name}_n")
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["task", "method", "params", "model", "num_items", "num_errors", "run_dir", *metric_columns]
        )
        for run in runs:
            cells: list[Any] = []
            for name in names:
                if name not in run.metrics:
                    cells += ["", "", "", ""]
                    continue
                entry = statistics[run.run_dir].get(name)
                cells += [
                    repr(run.metrics[name]),
                    _bound(entry, "low"),
                    _bound(entry, "high"),
                    _bound(entry, "n"),
                ]
            writer.writerow(
                [
                    run.task,
                    run.method,
                    json.dumps(run.params),
                    run.model,
                    run.num_items,
                    run.num_errors,
                    str(run.run_dir),
                    *cells,
                ]
            )


COMPARISON_COLUMNS = (
    "task",
    "method",
    "params",
    "model",
    "run_dir",
    "baseline_method",
    "baseline_params",
    "baseline_run_dir",
    "metric",
    "direction",
    "n",
    "method_value",
    "baseline_value",
    "difference",
    "ci_low",
    "ci_high",
    "test",
    "p_value",
    "p_adjusted",
    "correction",
    "alpha",
    "significant",
    "verdict",
)


def _write_comparisons_csv(path: Path, tasks: dict[str, _TaskReport], settings: ReportSettings) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPARISON_COLUMNS)
        for task in tasks.values():
            for comparison in task.comparisons:
                test = comparison.test
                writer.writerow(
                    [
                        comparison.task,
                        comparison.run.method,
                        json.dumps(comparison.run.params),
                        comparison.run.model,
                        str(comparison.run.run_dir),
                        comparison.baseline.method,
                        json.dumps(comparison.baseline.params),
                        str(comparison.baseline.run_dir),
                        comparison.metric,
                        comparison.direction,
                        test.n,
                        repr(test.a_value),
                        repr(test.b_value),
                        repr(test.difference),
                        repr(test.low),
                        repr(test.high),
                        test.test,
                        repr(test.p_value),
                        repr(comparison.p_adjusted),
                        settings.correction,
                        settings.alpha,
                        comparison.significant,
                        comparison.verdict,
                    ]
                )


# --------------------------------------------------------------------------- chart


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "task"


def _write_chart(
    path: Path,
    task: str,
    runs: list[RunRecord],
    statistics: dict[Path, dict[str, MetricStatistics]] | None = None,
    comparisons: list[Comparison] | None = None,
    baseline: str = BASELINE,
) -> None:
    """One panel per metric, one bar per run (methods on the x axis), the bootstrap intervals as error bars
    and ``*`` after the value of a run that differs significantly from a baseline run; Agg canvas, no global
    backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    statistics = statistics or {}
    significant = {(c.run.run_dir, c.metric) for c in comparisons or () if c.significant}
    names = _metric_names(runs) or ["(no metrics)"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    width = max(4.0, 0.9 * len(runs) + 1.5)
    figure = Figure(figsize=(width * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    labels = [run.label for run in runs]
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        values = [run.metrics.get(name, math.nan) for run in runs]
        heights = [0.0 if math.isnan(v) else v for v in values]
        errors: list[list[float]] = [[], []]
        for run, height in zip(runs, heights, strict=True):
            entry = statistics.get(run.run_dir, {}).get(name)
            interval = entry.interval if entry is not None else None
            has = interval is not None and interval.has_interval
            errors[0].append(max(0.0, height - interval.low) if has else 0.0)
            errors[1].append(max(0.0, interval.high - height) if has else 0.0)
        bars = axes.bar(
            range(len(runs)), heights, color="tab:blue", yerr=errors, capsize=3, error_kw={"elinewidth": 1}
        )
        best = best_values(runs).get(name)
        for bar, value in zip(bars, values, strict=True):
            if best is not None and value == best:
                bar.set_color("tab:orange")
        texts = [
            format_value(value) + (" *" if (run.run_dir, name) in significant else "")
            for run, value in zip(runs, values, strict=True)
        ]
        axes.bar_label(bars, labels=texts, fontsize=7, label_type="center")
        axes.set_title(name)
        axes.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=7)
    figure.suptitle(
        f"{task} (orange: best; error bars: bootstrap intervals over items; *: significant vs {baseline})"
    )
    figure.savefig(path, dpi=100)


# --------------------------------------------------------------------------- the public API


def write_report(
    run_dirs: list[Path],
    output_dir: Path,
    *,
    baseline: str = BASELINE,
    alpha: float = ALPHA,
    correction: str = "holm",
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    n_resamples_recomputed: int = N_RESAMPLES_RECOMPUTED,
    seed: int = 0,
) -> list[Path]:
    """Write ``report.md``, ``report.csv``, ``comparisons.csv`` and ``<task>.png`` per task into
    ``output_dir``; return the paths.

    ``baseline``: the method every other run is compared with (``plain`` = ``greedy``); ``alpha``: the
    significance level; ``correction``: ``"holm"`` (adjust the p-values of one task's comparisons together) or
    ``"none"``; ``confidence``, ``n_resamples`` (means of per-item values), ``n_resamples_recomputed``
    (metrics recomputed by the task's ``aggregate`` on each resample, the slow path) and ``seed``: the
    bootstrap's and the permutation tests'. See the module docstring.
    Raises ValueError when a run directory has no ``summary.json``, no run is given or a setting is out of
    range.
    """
    settings = ReportSettings(
        baseline=baseline,
        alpha=alpha,
        correction=correction,
        confidence=confidence,
        n_resamples=n_resamples,
        n_resamples_recomputed=n_resamples_recomputed,
        seed=seed,
    )
    if not run_dirs:
        raise ValueError("no run directories given")
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    runs_by_task: dict[str, list[RunRecord]] = {}
    for run in runs:
        runs_by_task.setdefault(run.task, []).append(run)
    tasks: dict[str, _TaskReport] = {}
    for task_name, task_runs in runs_by_task.items():
        aggregate = task_aggregate(task_name)
        statistics = {run.run_dir: run_statistics(run, aggregate, settings) for run in task_runs}
        comparisons, notes = compare_runs(task_runs, statistics, aggregate, settings)
        tasks[task_name] = _TaskReport(task_runs, statistics, comparisons, notes)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown_path, csv_path = output_dir / "report.md", output_dir / "report.csv"
    comparisons_path = output_dir / "comparisons.csv"
    markdown_path.write_text(_markdown(tasks, settings))
    _write_csv(csv_path, tasks)
    _write_comparisons_csv(comparisons_path, tasks, settings)
    written = [markdown_path, csv_path, comparisons_path]
    for task_name, task in tasks.items():
        chart_path = output_dir / f"{_safe_name(task_name)}.png"
        _write_chart(chart_path, task_name, task.runs, task.statistics, task.comparisons, settings.baseline)
        written.append(chart_path)
    return written


__all__ = [
    "BASELINE",
    "Comparison",
    "MetricStatistics",
    "ReportSettings",
    "RunRecord",
    "best_values",
    "canonical_method",
    "compare_runs",
    "load_run",
    "metric_direction",
    "read_item_scores",
    "run_statistics",
    "task_aggregate",
    "write_report",
]
