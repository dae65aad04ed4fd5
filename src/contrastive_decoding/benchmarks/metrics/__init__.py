"""Offline evaluation metrics in the Hugging Face ``evaluate`` module format.

Each metric lives in ``<name>/<name>.py`` next to this file and defines one ``evaluate.Metric`` subclass.
They are loaded from their local path with :func:`load_metric`, never from the Hugging Face Hub.

Why loading is offline: in evaluate 0.4.6, ``evaluate.load(path)`` with ``path`` pointing at an existing
``.py`` file goes straight to ``LocalEvaluationModuleFactory`` (see ``evaluation_module_factory`` in
``evaluate/loading.py``); the hub branch is only reached for relative names such as ``"rouge"`` that are not a
local file. The local factory copies the script into the dynamic-modules cache (``HF_MODULES_CACHE``) and
checks that its top-level ``import`` lines can be imported; our scripts have no ``# From: <url>`` imports, so
nothing is downloaded, and their ``_download_and_prepare`` is the no-op default. No environment variable
(``HF_HUB_OFFLINE``, ``HF_EVALUATE_OFFLINE``) is needed or touched.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import evaluate

_METRICS_DIR = Path(__file__).resolve().parent

METRIC_NAMES: tuple[str, ...] = (
    "truthfulqa_mc",
    "exact_match_any",
    "gsm8k_accuracy",
    "pope",
    "chair",
    "open_ended_quality",
    "rouge_bleu",
    "summary_support",
)

# Metric name -> absolute path of the directory holding ``<name>.py``.
METRICS: dict[str, str] = {name: str(_METRICS_DIR / name) for name in METRIC_NAMES}


def metric_script_path(name: str) -> Path:
    """Absolute path of the metric script ``<module directory>/<name>.py`` for a registered ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`METRICS`; the message suggests the closest registered names.
    """
    if name not in METRICS:
        close_names = difflib.get_close_matches(name, METRICS.keys(), n=3, cutoff=0.5)
        suggestion = f" Did you mean {' or '.join(repr(n) for n in close_names)}?" if close_names else ""
        raise ValueError(
            f"Unknown metric {name!r}.{suggestion} Available metrics: {', '.join(sorted(METRICS))}."
        )
    return Path(METRICS[name]) / f"{name}.py"


def load_metric(name: str, **load_kwargs: Any) -> evaluate.EvaluationModule:
    """Load the registered metric ``name`` with ``evaluate.load`` from its local script (no network).

    ``load_kwargs`` are forwarded to ``evaluate.load`` (e.g. ``experiment_id``, ``cache_dir``). By default
    ``keep_in_memory=True``, so ``compute`` keeps predictions in memory instead of writing Arrow cache files
    and file locks under ``~/.cache/huggingface/evaluate``.

    Raises:
        ValueError: ``name`` is not registered (with a did-you-mean suggestion from ``difflib``).
    """
    script_path = metric_script_path(name)
    load_kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(script_path), **load_kwargs)


__all__ = ["METRICS", "METRIC_NAMES", "load_metric", "metric_script_path"]
