"""The report's files: the markdown tables, the two CSV files and the PNG charts."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..statistics import (
    PairedTest,
)
from .comparisons import Comparison, MetricStatistics, ReportSettings
from .runs import BASELINE, RunRecord, _metric_names, best_values, format_value

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
