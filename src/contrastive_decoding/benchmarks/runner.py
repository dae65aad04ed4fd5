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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .tasks.base import Item, ItemOutput, Task

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
METADATA_FILE = "metadata.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"

# Parameters ``score`` takes besides the method's own (choice tasks only).
SCORE_ONLY_PARAMETERS = ("normalize",)
# Multiple-choice scoring defaults per method, applied unless the user sets the key: DoLa's TruthfulQA MC and
# FACTOR scripts sum the raw contrast log p_final - log p_premature with no relative-top filter
# (relative_top=0, post_softmax=False); generation's relative-top head would give many answers -inf. The
# plausibility head of expert-amateur CD and layer fusion is the same kind of generation-time device: with it, a
# multi-token answer with one token outside the head scores -inf, and on FACTOR / TruthfulQA every choice did
# (measured: all four FACTOR completions -inf on 10 of 10 items). They score the summed raw contrast too.
CHOICE_SCORING_DEFAULTS: dict[str, dict[str, Any]] = {
    "dola": {"relative_top": 0.0, "normalize": False},
    "expert_amateur": {"plausibility_alpha": 0.0, "normalize": False},
    "layer_fusion": {"plausibility_alpha": 0.0, "normalize": False},
}
# Weight files up to this total size are hashed by content; larger checkpoints by index / names and sizes.
FULL_HASH_LIMIT_BYTES = 1 << 30
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# The metadata keys that must match for a run to be resumed.
RUN_CONFIG_KEYS = (
    "task",
    "method",
    "params",
    "seed",
    "model_hash",
    "amateur_model_hash",
    "data_files",
    "backend",
)


class RunConfigMismatch(ValueError):
    """``output_dir`` holds a run with another configuration; resuming into it would mix two runs."""


@dataclass
class RunSummary:
    """What a run produced. ``results`` are the rows of the current items, in item order."""

    task: str
    method: str
    params: dict[str, Any]
    num_items: int
    num_errors: int
    metrics: dict[str, float]
    output_dir: Path
    results: list[dict[str, Any]] = field(default_factory=list)
    num_resumed: int = 0  # items whose results were already in results.jsonl when the run started

    def to_json(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        return {
            "task": self.task,
            "method": self.method,
            "params": self.params,
            "num_items": self.num_items,
            "num_errors": self.num_errors,
            "metrics": self.metrics,
            "error_ids": [row["id"] for row in self.results if "error" in row],
        }


# --------------------------------------------------------------------------- validation


def validate_run_params(task: Task, method: str, params: dict[str, Any]) -> None:
    """Check that ``params`` fit ``method`` on ``task``'s kind of items, before any model is loaded.

    Generation tasks take the method's parameters and the sampling parameters of ``generate``; choice tasks
    (teacher-forced scoring) take the method's parameters and ``normalize``, no sampling parameters, and no
    ``contrastive_search`` (it defines no distribution to score under). Raises ValueError naming the problem.
    """
    from ..api import SAMPLING_PARAMETERS, sampling_kwargs, split_parameters
    from ..decoding import IMAGE_METHODS, check_method, make_method_config, method_parameters

    check_method(method)
    method_names = method_parameters(method)
    if task.kind == "choice":
        if method in IMAGE_METHODS:
            raise ValueError(
                f"task {task.name!r} scores text answer choices; {method} contrasts images and runs on "
                "pope-mini, pope-* and chair"
            )
        if method == "contrastive_search":
            raise ValueError(
                f"task {task.name!r} scores answer choices, and contrastive_search defines no distribution over "
                "tokens to score them under; use greedy, dola, expert_amateur, cad or adacad"
            )
        sampling = [key for key in params if key in SAMPLING_PARAMETERS and key not in method_names]
        if sampling:
            raise ValueError(
                f"task {task.name!r} scores answer choices (teacher forcing, nothing is sampled): "
                f"{', '.join(sampling)} does not apply. Drop it, or scope it to a method of a generation task."
            )
        own = {key: value for key, value in params.items() if key not in SCORE_ONLY_PARAMETERS}
        normalize = params.get("normalize", True)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        make_method_config(method, **split_parameters(method, own)[0])
        return
    score_only = [key for key in params if key in SCORE_ONLY_PARAMETERS and key not in method_names]
    if score_only:
        raise ValueError(
            f"{', '.join(score_only)} applies to choice tasks only; task {task.name!r} generates text"
        )
    own, sampling = split_parameters(method, params)
    make_method_config(method, **own)
    sampling_kwargs(sampling)
    if method == "contrastive_search" and sampling.get("do_sample"):
        raise ValueError("contrastive_search is deterministic; do_sample=True is not supported with it")


# --------------------------------------------------------------------------- fingerprints


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def validate_backend(task: Task, method: str, backend: str) -> None:
    """Raise ValueError when ``--backend vllm`` cannot run ``method`` on ``task`` (checked before loading)."""
    from ..decoding import CONTEXT_FREE_METHODS, IMAGE_METHODS

    if backend != "vllm":
        return
    if task.kind == "choice":
        raise ValueError(
            f"task {task.name!r} scores answer choices (teacher forcing under the method's distribution), "
            "which runs on the hf backend only; use --backend hf"
        )
    if method in CONTEXT_FREE_METHODS or method in IMAGE_METHODS:
        raise ValueError(f"{method} runs on the hf backend only, for now; use --backend hf")


def is_vllm_engine(model: Any) -> bool:
    """A :class:`contrastive_decoding.vllm.LLM` engine (``--backend vllm``) rather than a transformers model."""
    return hasattr(model, "generate_requests") and hasattr(model, "model_path")


def _fingerprint_target(model: Any) -> Any:
    if is_vllm_engine(model):  # the checkpoint directory the engine serves
        return _fingerprint_target_path(model.model_path)
    return model


def _fingerprint_target_path(path: str) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(name_or_path=path, config=None)


def model_fingerprint(model: Any) -> dict[str, Any]:
    """Where ``model`` was loaded from and hashes of its ``config.json`` and weights.

    The weights hash is, by ``weights_hash_method``: ``"sha256 of weight file contents"`` when the weight files
    (``*.safetensors``, ``*.bin``, ...) total at most 1 GiB; else ``"sha256 of <index> + weight file names and
    sizes"`` when a ``*.index.json`` shard index exists, else ``"sha256 of weight file names and sizes"``
    (hashing several GiB on every run would cost more than the runs it protects). ``hash`` combines both.
    """
    path_text = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    directory = Path(path_text) if path_text else None
    if directory is None or not directory.is_dir():
        config_sha = hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()
        return {
            "path": path_text or None,
            "config_sha256": config_sha,
            "weights_sha256": None,
            "weights_hash_method": "not hashed: the model was not loaded from a local directory",
            "hash": config_sha,
        }
    directory = directory.resolve()
    config_file = directory / "config.json"
    config_sha = sha256_file(config_file) if config_file.is_file() else None
    weight_files = sorted(
        file for file in directory.iterdir() if file.is_file() and file.name.endswith(WEIGHT_SUFFIXES)
    )
    index_files = sorted(file for file in directory.iterdir() if file.name.endswith(".index.json"))
    total_size = sum(file.stat().st_size for file in weight_files)
    digest = hashlib.sha256()
    if total_size <= FULL_HASH_LIMIT_BYTES:
        method = "sha256 of weight file contents"
        for file in weight_files:
            digest.update(file.name.encode() + b"\0" + sha256_file(file).encode() + b"\n")
    else:
        method = "sha256 of weight file names and sizes"
        if index_files:
            method = f"sha256 of {' + '.join(f.name for f in index_files)} + weight file names and sizes"
            for file in index_files:
                digest.update(file.read_bytes())
        for file in weight_files:
            digest.update(f"{file.name}\0{file.stat().st_size}\n".encode())
    weights_sha = digest.hexdigest()
    combined = hashlib.sha256(f"{config_sha}:{weights_sha}".encode()).hexdigest()
    return {
        "path": str(directory),
        "config_sha256": config_sha,
        "weights_sha256": weights_sha,
        "weights_hash_method": method,
        "weight_files": [file.name for file in weight_files],
        "hash": combined,
    }


def data_fingerprint(task: Task, data_dir: Path) -> dict[str, str | None]:
    """sha256 of each of ``task.data_files`` under ``data_dir`` (None for a missing file)."""
    hashes: dict[str, str | None] = {}
    for relative in task.data_files:
        path = Path(data_dir) / relative
        hashes[relative] = sha256_file(path) if path.is_file() else None
    return hashes


def library_versions() -> dict[str, str]:
    """Versions of contrastive_decoding, torch, transformers and Python."""
    from importlib import metadata

    import transformers

    try:
        ours = metadata.version("contrastive-decoding")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        ours = "unknown"
    return {
        "contrastive_decoding": ours,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- files


def _json_normalized(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with stored metadata."""
    return json.loads(json.dumps(value))


def _fsync_write(handle: Any, text: str) -> None:
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as handle:
        _fsync_write(handle, json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The successful rows of ``results.jsonl``; rewrites the file when it had rows to drop.

    Dropped: lines that are not valid JSON objects with an ``"id"`` (a line cut short by a kill), error rows
    (retried on resume) and repeated ids (the first result is kept).
    """
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    kept_lines: list[str] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "id" not in row or "error" in row or row["id"] in seen:
            continue
        seen.add(row["id"])
        rows.append(row)
        kept_lines.append(line)
    if len(kept_lines) != len(lines):
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w") as handle:
            _fsync_write(handle, "".join(line + "\n" for line in kept_lines))
        os.replace(temporary, path)
    return rows


@contextmanager
def _exclusive_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``output_dir/.lock`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    with (output_dir / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RuntimeError(
                f"another run is writing to {output_dir}; wait for it or pick another one"
            ) from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- metadata


def _prepare_metadata(output_dir: Path, metadata: dict[str, Any], has_results: bool) -> None:
    """Write ``metadata.json``, or check the existing one matches and record the resume."""
    path = output_dir / METADATA_FILE
    if not path.is_file():
        if has_results:
            raise RunConfigMismatch(
                f"{output_dir} has {RESULTS_FILE} but no {METADATA_FILE}, so its run configuration is unknown; "
                "use another --output-dir (or delete the directory)"
            )
        write_json_atomic(path, metadata)
        return
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunConfigMismatch(f"{path} is not valid JSON; use another --output-dir") from error
    existing.setdefault("backend", "hf")  # runs written before the vLLM backend existed
    differences = [key for key in RUN_CONFIG_KEYS if existing.get(key) != metadata.get(key)]
    if differences:
        details = "; ".join(
            f"{key}: {json.dumps(existing.get(key))} there, {json.dumps(metadata.get(key))} now"
            for key in differences
        )
        raise RunConfigMismatch(
            f"{output_dir} holds a run with a different configuration ({details}); refusing to resume into it. "
            "Use another --output-dir for this configuration."
        )
    existing.setdefault("resumed", []).append(
        {"at": metadata["started_at"], "command_line": metadata["command_line"], "limit": metadata["limit"]}
    )
    write_json_atomic(path, existing)


# --------------------------------------------------------------------------- running items


def _output_json(output: ItemOutput, kind: str) -> dict[str, Any]:
    if kind == "choice":
        return {"choice_logprobs": list(output.choice_logprobs)}
    row = {"text": output.text, "token_ids": list(output.token_ids)}
    if output.extras:
        row["extras"] = output.extras
    return row


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _ItemRunner:
    """Runs items with one model, method and parameters; writes each result row as soon as it is known."""

    def __init__(
        self,
        task: Task,
        *,
        model: Any,
        tokenizer: Any,
        method: str,
        params: dict[str, Any],
        seed: int,
        amateur_model: Any,
        amateur_tokenizer: Any,
        batch_size: int,
        results_handle: Any,
        progress_bar: Any,
    ) -> None:
        from ..decoding import CONTEXT_FREE_METHODS

        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.method = method
        self.params = params
        self.seed = seed
        self.amateur_model = amateur_model
        self.amateur_tokenizer = amateur_tokenizer
        self.batch_size = batch_size
        self.results_handle = results_handle
        self.progress_bar = progress_bar
        self.needs_context_free = method in CONTEXT_FREE_METHODS
        self.engine = model if is_vllm_engine(model) else None
        self.rows: dict[str, dict[str, Any]] = {}

    # ----- writing

    def write(self, item: Item, output: ItemOutput | None, error: BaseException | None) -> None:
        """Score ``output`` and append the item's row (an error row if running or scoring raised)."""
        row: dict[str, Any]
        if error is None:
            try:
                scores = self.task.score(item, output)
                row = {
                    "id": item.id,
                    "output": _output_json(output, item.kind),
                    "scores": {key: float(value) for key, value in scores.items()},
                }
            except Exception as scoring_error:  # a bad item must not stop the run
                error = scoring_error
        if error is not None:
            row = {"id": item.id, "error": _error_text(error)}
            logger.warning("item %s failed: %s", item.id, row["error"])
        _fsync_write(self.results_handle, json.dumps(row) + "\n")
        self.rows[item.id] = row
        self.progress_bar.update(1)

    # ----- choice items

    def run_choice(self, item: Item) -> None:
        from ..scoring import score

        try:
            if not item.choices:
                raise ValueError(f"choice item {item.id!r} has no choices")
            contexts = [item.context] * len(item.choices)
            free = None
            if self.needs_context_free:
                if item.context_free is None:
                    raise ValueError(
                        f"item {item.id!r} has no context_free prompt, which {self.method} needs"
                    )
                free = [item.context_free] * len(item.choices)
            scores = score(
                self.model,
                self.tokenizer,
                contexts,
                list(item.choices),
                self.method,
                context_free_contexts=free,
                amateur_model=self.amateur_model,
                amateur_tokenizer=self.amateur_tokenizer,
                batch_size=self.batch_size,
                **self.params,
            )
            output = ItemOutput(choice_logprobs=tuple(float(result.logprob) for result in scores))
        except Exception as error:
            self.write(item, None, error)
            return
        self.write(item, output, None)

    # ----- generate items

    def _sampling_seed(self, offset: int) -> dict[str, Any]:
        """``seed`` for sampled generation: the run seed (or ``--set seed``) plus a fixed offset."""
        if not self.params.get("do_sample"):
            return {}
        return {"seed": int(self.params.get("seed", self.seed)) + offset}

    def _generate(self, items: Sequence[Item], seed_offset: int) -> list[ItemOutput]:
        from ..api import generate_outputs
        from ..decoding import CONDITION_METHODS

        free = None
        if self.needs_context_free:
            missing = [item.id for item in items if item.context_free is None]
            if missing:
                raise ValueError(
                    f"item(s) {', '.join(missing)} have no context_free prompt, which {self.method} needs"
                )
            free = [item.context_free for item in items]
        params = {**self.params, **self._sampling_seed(seed_offset)}
        if self.engine is not None:  # one vLLM batch; the engine schedules it
            outputs = self.engine.generate(
                [item.context for item in items],
                self.method,
                max_new_tokens=self.task.max_new_tokens,
                **params,
            )
            return [ItemOutput(text=output.text, token_ids=tuple(output.token_ids)) for output in outputs]
        images = [item.image for item in items] if any(item.image for item in items) else None
        if images is not None and not all(images):
            missing = [item.id for item in items if not item.image]
            raise ValueError(f"item(s) {', '.join(missing)} have no image while others in the batch do")
        conditions = None
        if self.method in CONDITION_METHODS:
            conditions = [item.meta.get("conditions") for item in items]
            missing = [item.id for item, marked in zip(items, conditions, strict=True) if not marked]
            if missing:
                raise ValueError(
                    f"item(s) {', '.join(missing)} mark no conditions, which {self.method} needs"
                )
        outputs = generate_outputs(
            self.model,
            self.tokenizer,
            [item.context for item in items],
            self.method,
            context_free_prompts=free,
            images=images,
            conditions=conditions,
            amateur_model=self.amateur_model,
            amateur_tokenizer=self.amateur_tokenizer,
            max_new_tokens=self.task.max_new_tokens,
            batch_size=len(items),
            **params,
        )
        return [
            ItemOutput(text=output.text, token_ids=tuple(output.token_ids), extras=dict(output.extras))
            for output in outputs
        ]

    def run_generate_batch(
        self, batch: Sequence[Item], pending: Sequence[Item], batch_index: int, item_indices: dict[str, int]
    ) -> None:
        """Generate the whole fixed batch; write its pending items. If the batch raises, run each alone."""
        try:
            outputs = self._generate(batch, seed_offset=batch_index)
        except Exception as batch_error:
            if len(batch) == 1:
                self.write(batch[0], None, batch_error)
                return
            for item in pending:  # isolate the bad item(s): the others still get their result
                try:
                    (output,) = self._generate([item], seed_offset=item_indices[item.id])
                except Exception as error:
                    self.write(item, None, error)
                    continue
                self.write(item, output, None)
            return
        pending_ids = {item.id for item in pending}
        for item, output in zip(batch, outputs, strict=True):
            if item.id in pending_ids:
                self.write(item, output, None)


def _progress_bar(total: int, initial: int, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="item",
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
    )


# --------------------------------------------------------------------------- the public API


def run_task(
    task: Task,
    *,
    model: Any,
    tokenizer: Any,
    method: str,
    params: dict[str, Any],
    output_dir: Path | str,
    data_dir: Path | str,
    limit: int | None = None,
    seed: int = 0,
    amateur_model: Any = None,
    amateur_tokenizer: Any = None,
    batch_size: int = 8,
    progress: bool = True,
    command_line: Sequence[str] | None = None,
) -> RunSummary:
    """Run ``task`` with ``method`` and ``params``, resumably, and write its results into ``output_dir``.

    Choice items: one ``score`` call per item over its choices (``params`` are the method's parameters, plus
    ``normalize``). Generate items: ``generate_outputs`` in fixed batches of ``batch_size`` with
    ``max_new_tokens=task.max_new_tokens``; ``cad`` / ``adacad`` get each item's ``context_free`` prompt; sampled
    runs (``do_sample=True``) get ``seed + batch index`` as their sampling seed. See the module docstring for the
    files written and the resume semantics. Raises :class:`RunConfigMismatch` when ``output_dir`` holds a run
    with a different configuration, ValueError for bad parameters or a task without the inputs the method needs.
    """
    from ..decoding import AMATEUR_METHODS, CONTEXT_FREE_METHODS, IMAGE_METHODS

    if task.kind == "choice":
        params = {**CHOICE_SCORING_DEFAULTS.get(method, {}), **params}
    validate_run_params(task, method, params)
    engine_amateur = getattr(model, "amateur_path", None) if is_vllm_engine(model) else None
    if method in AMATEUR_METHODS and amateur_model is None and engine_amateur is None:
        raise ValueError(f"{method} needs an amateur model (a smaller model with the same tokenizer)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")
    output_dir, data_dir = Path(output_dir), Path(data_dir)
    params = _json_normalized(dict(params))

    items = task.load(data_dir)[:limit]
    item_indices = {item.id: index for index, item in enumerate(items)}
    if len(item_indices) != len(items):
        repeated = sorted({item.id for item in items if sum(other.id == item.id for other in items) > 1})
        raise ValueError(
            f"task {task.name!r} has repeated item ids ({', '.join(repeated[:5])}); ids must be unique"
        )
    if method in CONTEXT_FREE_METHODS and items and all(item.context_free is None for item in items):
        raise ValueError(
            f"{method} contrasts each prompt with its context-free version, and task {task.name!r} gives none "
            "(its items have no context_free prompt)"
        )

    backend = "vllm" if is_vllm_engine(model) else "hf"
    validate_backend(task, method, backend)
    if method in IMAGE_METHODS and items and all(item.image is None for item in items):
        raise ValueError(
            f"{method} contrasts images, and task {task.name!r} has none: use it on pope-mini, pope-* or chair "
            "with a vision-language model"
        )

    metadata = {
        "task": task.name,
        "task_kind": task.kind,
        "method": method,
        "params": params,
        "seed": seed,
        "backend": backend,
        "model": model_fingerprint(_fingerprint_target(model)),
        "amateur_model": (
            model_fingerprint(amateur_model)
            if amateur_model is not None
            else model_fingerprint(_fingerprint_target_path(engine_amateur))
            if engine_amateur
            else None
        ),
        "data_dir": str(data_dir.resolve()),
        "data_files": data_fingerprint(task, data_dir),
        "limit": limit,
        "batch_size": batch_size,
        "max_new_tokens": task.max_new_tokens,
        "versions": library_versions(),
        "command_line": list(command_line if command_line is not None else sys.argv),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    metadata["model_hash"] = metadata["model"]["hash"]
    metadata["amateur_model_hash"] = metadata["amateur_model"]["hash"] if metadata["amateur_model"] else None

    output_dir.mkdir(parents=True, exist_ok=True)
    results_path = output_dir / RESULTS_FILE
    with _exclusive_lock(output_dir):
        _prepare_metadata(output_dir, metadata, results_path.is_file() and results_path.stat().st_size > 0)
        previous_rows = {row["id"]: row for row in read_results(results_path)}
        done_ids = {item.id for item in items if item.id in previous_rows}

        torch.manual_seed(seed)
        progress_bar = _progress_bar(len(items), len(done_ids), f"{task.name} {method}", progress)
        try:
            with results_path.open("a") as results_handle:
                runner = _ItemRunner(
                    task,
                    model=model,
                    tokenizer=tokenizer,
                    method=method,
                    params=params,
                    seed=seed,
                    amateur_model=amateur_model,
                    amateur_tokenizer=amateur_tokenizer,
                    batch_size=batch_size,
                    results_handle=results_handle,
                    progress_bar=progress_bar,
                )
                for item in items:
                    if item.kind == "choice" and item.id not in done_ids:
                        runner.run_choice(item)
                generate_items = [item for item in items if item.kind == "generate"]
                for batch_index, start in enumerate(range(0, len(generate_items), batch_size)):
                    batch = generate_items[start : start + batch_size]
                    pending = [item for item in batch if item.id not in done_ids]
                    if pending:
                        runner.run_generate_batch(batch, pending, batch_index, item_indices)
        finally:
            progress_bar.close()

        rows_by_id = {**previous_rows, **runner.rows}
        results = [rows_by_id[item.id] for item in items]
        score_rows = [row["scores"] for row in results if "error" not in row]
        summary = RunSummary(
            task=task.name,
            method=method,
            params=params,
            num_items=len(items),
            num_errors=sum("error" in row for row in results),
            metrics={key: float(value) for key, value in task.aggregate(score_rows).items()}
            if score_rows
            else {},
            output_dir=output_dir,
            results=results,
            num_resumed=len(done_ids),
        )
        write_json_atomic(output_dir / SUMMARY_FILE, summary.to_json())
    return summary


__all__ = [
    "RunConfigMismatch",
    "RunSummary",
    "data_fingerprint",
    "model_fingerprint",
    "read_results",
    "run_task",
    "validate_run_params",
]
