"""The report's statistics: each run's bootstrap intervals (:func:`run_statistics`) and the paired tests of
each run against the baseline runs (:func:`compare_runs`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runner import RESULTS_FILE
from ..statistics import (
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
from .runs import ALPHA, BASELINE, CORRECTIONS, RunRecord, metric_direction

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
    from ...decoding import registry

    try:
        return registry.resolve(method)
    except ValueError:
        return method


def task_aggregate(task_name: str) -> Aggregate | None:
    """The registered task's ``aggregate`` over per-item score rows (None for a task not registered in this
    process). Its ``embedder`` is set to None where it has one: the corpus-level metrics it feeds (MAUVE,
    coherence) need the texts, which the score rows do not hold, and are left out (quietly). An ``aggregate``
    that raises on some rows (a resample without a key) gives ``{}`` for them."""
    from ..tasks import TASKS

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
