"""The run itself: items loaded, checked, then scored (choice items) or generated in fixed batches (generate
items), each row written as soon as it is known; the summary at the end. See the package docstring for the files
and the resume semantics."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...prefix_cache import PrefixCache
from ..tasks.base import Item, ItemOutput, Task
from .fingerprint import is_vllm_engine, run_metadata
from .store import (
    RESULTS_FILE,
    SUMMARY_FILE,
    exclusive_lock,
    fsync_write,
    json_normalized,
    prepare_metadata,
    read_results,
    write_json_atomic,
)
from .validation import (
    SCORE_ONLY_PARAMETERS,
    check_items,
    check_run_arguments,
    choice_scoring_defaults,
    validate_run_params,
)

logger = logging.getLogger(__package__)  # "contrastive_decoding.benchmarks.runner", as before the split


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
    elapsed_s: float = 0.0  # wall time of this call's items (those not resumed), model loading excluded

    @property
    def items_per_s(self) -> float | None:
        """Throughput of this call: items computed (not resumed) per second; None when none were."""
        computed = self.num_items - self.num_resumed
        return computed / self.elapsed_s if computed and self.elapsed_s > 0 else None

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


def _output_json(output: ItemOutput, kind: str) -> dict[str, Any]:
    if kind == "choice":
        return {"choice_logprobs": list(output.choice_logprobs)}
    row: dict[str, Any] = {"text": output.text, "token_ids": list(output.token_ids)}
    if output.choice_logprobs:  # a generate task answered by scoring its answer choices (POPE, calibrated)
        row["choice_logprobs"] = list(output.choice_logprobs)
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
        from ...decoding import CONTEXT_FREE_METHODS
        from ...method_call import method_call

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
        # the method's config, built once here and reused by every item (score / generate_outputs take it)
        self.call = method_call(method, **{k: v for k, v in params.items() if k not in SCORE_ONLY_PARAMETERS})
        self.score_options = {key: params[key] for key in SCORE_ONLY_PARAMETERS if key in params}
        self.engine = model if is_vllm_engine(model) else None
        # every item's context starts with the task's shared instruction / few-shot stem: run it once per run
        self.prefix_cache = PrefixCache() if self.engine is None else None
        self.rows: dict[str, dict[str, Any]] = {}
        # scoring-only methods (calibration) score every item's answer choices with their own scorer
        self.choice_scorer = self.call.spec.scoring.choice_scorer

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
        fsync_write(self.results_handle, json.dumps(row) + "\n")
        self.rows[item.id] = row
        self.progress_bar.update(1)

    # ----- choice items

    def run_calibrated(self, item: Item) -> None:
        """A scoring-only method: the calibrated log-probabilities of the item's choices (a generate task's
        ``answer_choices``, the best one as its text)."""
        from ...decoding import registry
        from ...decoding.spec import IMAGE

        try:
            choices = item.choices if item.kind == "choice" else self.task.answer_choices
            if not choices:
                raise ValueError(f"item {item.id!r} has no answer choices to score")
            free = images = None
            if self.call.spec.takes(IMAGE):
                if not item.image:
                    raise ValueError(
                        f"item {item.id!r} has no image, which {self.method} calibrates against (the prompt "
                        "without it)"
                    )
                images = [item.image]
            else:
                free = [
                    self.task.content_free_context(item, text)
                    for text in self.call.config.content_free_inputs
                ]
                if any(context is None for context in free):
                    raise ValueError(
                        f"task {self.task.name!r} does not say how to build a content-free prompt for "
                        f"{self.method} (Task.content_free_context)"
                    )
                free = [free]
            scorer = registry.load(self.choice_scorer)
            (values,) = scorer(
                self.model,
                self.tokenizer,
                [item.context],
                [list(choices)],
                self.call,
                content_free_contexts=free,
                images=images,
                batch_size=self.batch_size,
            )
            if item.kind == "choice":
                output = ItemOutput(choice_logprobs=tuple(values))
            else:
                best = max(range(len(values)), key=values.__getitem__)
                output = ItemOutput(text=choices[best].strip(), choice_logprobs=tuple(values))
        except Exception as error:
            self.write(item, None, error)
            return
        self.write(item, output, None)

    def run_choice(self, item: Item) -> None:
        from ...scoring import score

        if self.choice_scorer is not None:
            self.run_calibrated(item)
            return
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
                self.call,
                context_free_contexts=free,
                amateur_model=self.amateur_model,
                amateur_tokenizer=self.amateur_tokenizer,
                batch_size=max(self.batch_size, len(item.choices)),  # the item's choices are one batch
                prefix_cache=self.prefix_cache,
                **self.score_options,
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
        from ...api import generate_outputs
        from ...decoding import CONDITION_METHODS

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
        call = dataclasses.replace(
            self.call, sampling={**self.call.sampling, **self._sampling_seed(seed_offset)}
        )
        outputs = generate_outputs(
            self.model,
            self.tokenizer,
            [item.context for item in items],
            call,
            context_free_prompts=free,
            images=images,
            conditions=conditions,
            amateur_model=self.amateur_model,
            amateur_tokenizer=self.amateur_tokenizer,
            max_new_tokens=self.task.max_new_tokens,
            batch_size=len(items),
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

    Choice items: one ``score`` call per item over its choices, all of them one batch (one forward per model,
    at least ``batch_size`` continuations), on one :class:`~contrastive_decoding.prefix_cache.PrefixCache` for
    the run (``params`` are the method's parameters, plus ``normalize``); scoring-only methods (calibration) call their ``choice_scorer`` per item instead, on choice
    items and on generate items of tasks with ``answer_choices`` (POPE: the calibrated winner is the text). Generate items: ``generate_outputs`` in fixed batches of ``batch_size`` with
    ``max_new_tokens=task.max_new_tokens``; ``cad`` / ``adacad`` get each item's ``context_free`` prompt; sampled
    runs (``do_sample=True``) get ``seed + batch index`` as their sampling seed. See the package docstring
    (:mod:`contrastive_decoding.benchmarks.runner`) for the files written and the resume semantics. Raises
    :class:`RunConfigMismatch` when ``output_dir`` holds a run with a different configuration, ValueError for bad
    parameters or a task without the inputs the method needs.
    """
    if task.kind == "choice":
        params = {**choice_scoring_defaults(method), **params}
    validate_run_params(task, method, params)
    engine_amateur = getattr(model, "amateur_path", None) if is_vllm_engine(model) else None
    check_run_arguments(method, amateur_model, engine_amateur, batch_size, limit)
    output_dir, data_dir = Path(output_dir), Path(data_dir)
    params = json_normalized(dict(params))

    items = task.load(data_dir)[:limit]
    item_indices = {item.id: index for index, item in enumerate(items)}
    backend = "vllm" if is_vllm_engine(model) else "hf"
    check_items(task, method, items, backend)

    metadata = run_metadata(
        task,
        method=method,
        params=params,
        seed=seed,
        backend=backend,
        model=model,
        amateur_model=amateur_model,
        engine_amateur=engine_amateur,
        data_dir=data_dir,
        limit=limit,
        batch_size=batch_size,
        command_line=command_line,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    results_path = output_dir / RESULTS_FILE
    with exclusive_lock(output_dir):
        prepare_metadata(output_dir, metadata, results_path.is_file() and results_path.stat().st_size > 0)
        previous_rows = {row["id"]: row for row in read_results(results_path)}
        done_ids = {item.id for item in items if item.id in previous_rows}

        torch.manual_seed(seed)
        started = time.perf_counter()
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
                scores_only = runner.choice_scorer is not None  # answers generate items by scoring choices
                for item in items:
                    if (item.kind == "choice" or scores_only) and item.id not in done_ids:
                        runner.run_choice(item)
                generate_items = [item for item in items if item.kind == "generate" and not scores_only]
                for batch_index, start in enumerate(range(0, len(generate_items), batch_size)):
                    batch = generate_items[start : start + batch_size]
                    pending = [item for item in batch if item.id not in done_ids]
                    if pending:
                        runner.run_generate_batch(batch, pending, batch_index, item_indices)
        finally:
            progress_bar.close()
        elapsed_s = time.perf_counter() - started

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
            elapsed_s=elapsed_s,
        )
        write_json_atomic(output_dir / SUMMARY_FILE, summary.to_json())
    return summary
