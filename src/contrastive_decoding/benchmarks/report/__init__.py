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

Modules: :mod:`.runs` (reading runs), :mod:`.comparisons` (intervals and paired tests), :mod:`.render`
(markdown, CSV, PNG); :func:`write_report` ties them together.
"""

from __future__ import annotations

from pathlib import Path

from ..statistics import CONFIDENCE, N_RESAMPLES, N_RESAMPLES_RECOMPUTED
from .comparisons import (
    Comparison,
    MetricStatistics,
    ReportSettings,
    canonical_method,
    compare_runs,
    run_statistics,
    task_aggregate,
)
from .render import (
    COMPARISON_COLUMNS,
    _markdown,
    _safe_name,
    _TaskReport,
    _write_chart,
    _write_comparisons_csv,
    _write_csv,
    format_difference,
    format_interval,
    format_p,
)
from .runs import (
    ALPHA,
    BASELINE,
    CORRECTIONS,
    LOWER_IS_BETTER_PREFIXES,
    NEUTRAL_PREFIXES,
    RunRecord,
    best_values,
    format_value,
    load_run,
    metric_direction,
    read_item_scores,
)

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
    "ALPHA",
    "BASELINE",
    "COMPARISON_COLUMNS",
    "CORRECTIONS",
    "LOWER_IS_BETTER_PREFIXES",
    "NEUTRAL_PREFIXES",
    "Comparison",
    "MetricStatistics",
    "ReportSettings",
    "RunRecord",
    "best_values",
    "canonical_method",
    "compare_runs",
    "format_difference",
    "format_interval",
    "format_p",
    "format_value",
    "load_run",
    "metric_direction",
    "read_item_scores",
    "run_statistics",
    "task_aggregate",
    "write_report",
]
