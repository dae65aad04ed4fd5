"""Finished runs as the report reads them (:class:`RunRecord`), and which way each metric is better."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runner import METADATA_FILE, RESULTS_FILE, SUMMARY_FILE

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
