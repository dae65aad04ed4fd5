"""Run one benchmark task with one decoding method: resumable, seeded, one JSONL row per item.

``run_task`` writes into ``output_dir``:

- ``metadata.json`` (at start): task, method, params, seed, model path and hashes, data file sha256s, library
  versions and the command line. Resuming with a different run config (task, method, params, seed, model or
  amateur hash, data files) is refused: :class:`RunConfigMismatch`.
- ``results.jsonl``: one row per item, appended, flushed and fsync'ed as soon as it is known:
  ``{"id", "output": {...}, "scores": {...}}``, or ``{"id", "error": "<Type>: message"}`` for an item whose
  run or scoring raised (the run goes on). Rows are in completion order.
- ``summary.json`` (at the end): ``{"task", "method", "params", "num_items", "num_errors", "metrics", ...}`` with
  ``metrics = task.aggregate(score rows)`` over the successful items in item order.

Resuming: a run started again on the same ``output_dir`` reads ``results.jsonl``, drops lines that are not valid
JSON (a line cut by a kill) and error rows (errors are retried), rewrites the file without them, and runs only
the items that have no result yet. Generation batches are fixed by item position (batch k is items
``[k * batch_size, (k + 1) * batch_size)``) and a batch with any missing item is generated again as a whole (only
the missing items are written), so every item is computed with the same padding partners and the same sampling
seed (``seed + k``) as in an uninterrupted run, and the results are the same.

Modules: ``run`` (:func:`run_task`, the loop over items), ``store`` (the files, atomic writes, resume),
``fingerprint`` (model / data hashes, the metadata, :data:`RUN_CONFIG_KEYS`), ``validation`` (parameter, method
and backend checks, :func:`choice_scoring_defaults`). Every public name is importable from here.
"""

from .fingerprint import (
    FULL_HASH_LIMIT_BYTES,
    RUN_CONFIG_KEYS,
    WEIGHT_SUFFIXES,
    RunConfigMismatch,
    data_fingerprint,
    is_vllm_engine,
    library_versions,
    model_fingerprint,
    sha256_file,
)
from .run import RunSummary, run_task
from .store import LOCK_FILE, METADATA_FILE, RESULTS_FILE, SUMMARY_FILE, read_results, write_json_atomic
from .validation import (
    SCORE_ONLY_PARAMETERS,
    choice_scoring_defaults,
    validate_backend,
    validate_run_params,
)

__all__ = [
    "choice_scoring_defaults",
    "FULL_HASH_LIMIT_BYTES",
    "LOCK_FILE",
    "METADATA_FILE",
    "RESULTS_FILE",
    "RUN_CONFIG_KEYS",
    "SCORE_ONLY_PARAMETERS",
    "SUMMARY_FILE",
    "WEIGHT_SUFFIXES",
    "RunConfigMismatch",
    "RunSummary",
    "data_fingerprint",
    "is_vllm_engine",
    "library_versions",
    "model_fingerprint",
    "read_results",
    "run_task",
    "sha256_file",
    "validate_backend",
    "validate_run_params",
    "write_json_atomic",
]
