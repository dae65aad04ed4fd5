"""Tables and plots over finished runs: ``write_report(run_dirs, output_dir)``.

Each run directory holds the ``summary.json`` and ``metadata.json`` that :func:`~.runner.run_task` writes. The
report has one markdown table per task (rows: runs, columns: metrics; the best value of each metric within a
task in bold), a CSV with the same numbers at full precision, and one PNG bar chart per task (one panel per
metric, one bar per run).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import METADATA_FILE, SUMMARY_FILE

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
    """One run as the report shows it."""

    run_dir: Path
    task: str
    method: str
    params: dict[str, Any]
    model: str
    num_items: int
    num_errors: int
    metrics: dict[str, float]

    @property
    def params_text(self) -> str:
        return ", ".join(f"{key}={json.dumps(value)}" for key, value in self.params.items()) or "-"

    @property
    def label(self) -> str:
        """``method`` plus its parameters, for chart ticks."""
        return self.method if not self.params else f"{self.method}\n{self.params_text}"


def load_run(run_dir: Path) -> RunRecord:
    """Read a run's ``summary.json`` (required) and ``metadata.json`` (for the model name, if present)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise ValueError(f"{run_dir} has no {SUMMARY_FILE}: is it a finished `bench run` output directory?")
    summary = json.loads(summary_path.read_text())
    metadata_path = run_dir / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    model_path = (metadata.get("model") or {}).get("path") or "?"
    return RunRecord(
        run_dir=run_dir,
        task=summary["task"],
        method=summary["method"],
        params=summary.get("params") or {},
        model=Path(model_path).name or model_path,
        num_items=int(summary.get("num_items", 0)),
        num_errors=int(summary.get("num_errors", 0)),
        metrics={key: float(value) for key, value in (summary.get("metrics") or {}).items()},
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


def _markdown(runs_by_task: dict[str, list[RunRecord]]) -> str:
    lines = ["# Benchmark report", ""]
    for task, runs in runs_by_task.items():
        names = _metric_names(runs)
        best = best_values(runs)
        header = ["task", "method", "params", "model", "items", "errors", *names]
        lines += [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
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
                text = format_value(run.metrics[name])
                cells.append(f"**{text}**" if name in best and run.metrics[name] == best[name] else text)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    lines.append(
        "Bold: the best value of a metric within a task (higher is better, except rates such as rep-n, CHAIR "
        "and invalid_rate; lengths, counts and yes_ratio are not graded)."
    )
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, runs: list[RunRecord]) -> None:
    names = _metric_names(runs)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "method", "params", "model", "num_items", "num_errors", "run_dir", *names])
        for run in runs:
            writer.writerow(
                [
                    run.task,
                    run.method,
                    json.dumps(run.params),
                    run.model,
                    run.num_items,
                    run.num_errors,
                    str(run.run_dir),
                    *(repr(run.metrics[name]) if name in run.metrics else "" for name in names),
                ]
            )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "task"


def _write_chart(path: Path, task: str, runs: list[RunRecord]) -> None:
    """One panel per metric, one bar per run (methods on the x axis); Agg canvas, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
        bars = axes.bar(range(len(runs)), [0.0 if math.isnan(v) else v for v in values], color="tab:blue")
        best = best_values(runs).get(name)
        for bar, value in zip(bars, values, strict=True):
            if best is not None and value == best:
                bar.set_color("tab:orange")
        axes.bar_label(bars, labels=[format_value(v) for v in values], fontsize=7)
        axes.set_title(name)
        axes.set_xticks(range(len(runs)), labels, rotation=30, ha="right", fontsize=7)
    figure.suptitle(f"{task} (orange: best)")
    figure.savefig(path, dpi=100)


def write_report(run_dirs: list[Path], output_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.csv`` and ``<task>.png`` per task into ``output_dir``; return the paths.

    Raises ValueError when a run directory has no ``summary.json`` or no run is given.
    """
    if not run_dirs:
        raise ValueError("no run directories given")
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    runs_by_task: dict[str, list[RunRecord]] = {}
    for run in runs:
        runs_by_task.setdefault(run.task, []).append(run)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown_path, csv_path = output_dir / "report.md", output_dir / "report.csv"
    markdown_path.write_text(_markdown(runs_by_task))
    _write_csv(csv_path, runs)
    written = [markdown_path, csv_path]
    for task, task_runs in runs_by_task.items():
        chart_path = output_dir / f"{_safe_name(task)}.png"
        _write_chart(chart_path, task, task_runs)
        written.append(chart_path)
    return written


__all__ = ["RunRecord", "best_values", "load_run", "metric_direction", "write_report"]
