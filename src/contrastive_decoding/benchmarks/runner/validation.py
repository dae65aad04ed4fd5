"""Checks made before a run loads a model or writes a file: the parameters fit the method on the task's kind of
items (:func:`validate_run_params`), the backend can run them (:func:`validate_backend`), the run's arguments
and items give the method what it needs; and the choice-scoring defaults per method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...decoding import registry
from ...decoding.spec import AMATEUR, CONTEXT_FREE_PROMPT, IMAGE
from ..tasks.base import Item, Task

# Parameters ``score`` takes besides the method's own (choice tasks only).
SCORE_ONLY_PARAMETERS = ("normalize",)


def choice_scoring_defaults(method: str) -> dict[str, Any]:
    """Multiple-choice scoring defaults of ``method`` (``MethodSpec.scoring.choice_defaults``), applied unless the
    user sets the key: e.g. DoLa's TruthfulQA MC and FACTOR scripts sum the raw contrast with no relative-top
    filter, and expert-amateur / layer fusion score without their generation-time plausibility head."""
    return registry.choice_defaults(method)


def validate_run_params(task: Task, method: str, params: dict[str, Any]) -> None:
    """Check that ``params`` fit ``method`` on ``task``'s kind of items, before any model is loaded.

    Generation tasks take the method's parameters and the sampling parameters of ``generate``; choice tasks
    (teacher-forced scoring) take the method's parameters and ``normalize``, no sampling parameters, and no
    ``contrastive_search`` (it defines no distribution to score under). Raises ValueError naming the problem.
    """
    from ...decoding import make_method_config, method_parameters
    from ...method_call import SAMPLING_PARAMETERS, check_sampling, split_parameters

    spec = registry.get_spec(method)
    method_names = method_parameters(method)
    if not spec.generates:
        _validate_scoring_only(task, method, params)
        return
    if task.kind == "choice":
        if spec.takes(IMAGE):
            raise ValueError(
                f"task {task.name!r} scores text answer choices; {method} contrasts images and runs on "
                "pope-mini, pope-* and chair"
            )
        if not spec.scoring.scores:
            scorers = ", ".join(s.name for s in registry.specs() if s.scoring.scores)
            raise ValueError(
                f"task {task.name!r} scores answer choices, and {method} cannot score: {spec.scoring.reason} "
                f"Methods that score: {scorers}"
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
    check_sampling(method, sampling)


def _validate_scoring_only(task: Task, method: str, params: dict[str, Any]) -> None:
    """A scoring-only method (calibration): a choice task, or a generate task with ``answer_choices``; only the
    method's own parameters."""
    from ...decoding import make_method_config, method_parameters

    spec = registry.get_spec(method)
    if task.kind == "generate" and not task.answer_choices:
        raise ValueError(
            f"{method} scores answer choices and does not generate; task {task.name!r} generates free text. "
            "Run it on a choice task (truthfulqa-mc, factor-*) or on pope-*"
        )
    if task.kind == "choice" and spec.takes(IMAGE):
        raise ValueError(
            f"task {task.name!r} scores text answer choices; {method} calibrates against the prompt without its "
            "image and runs on pope-mini and pope-*. For text tasks use contextual_calibration"
        )
    if not spec.takes(IMAGE) and type(task).content_free_context is Task.content_free_context:
        raise ValueError(
            f"{method} calibrates against a content-free prompt, and task {task.name!r} does not define one "
            "(Task.content_free_context; truthfulqa-mc and factor-* do). For POPE use posthoc_debias"
        )
    names = method_parameters(method)
    score_only = [key for key in params if key in SCORE_ONLY_PARAMETERS and key not in names]
    if score_only:
        raise ValueError(
            f"{', '.join(score_only)} does not apply to {method}: it returns calibrated choice log-probabilities"
        )
    make_method_config(method, **params)  # unknown parameters raise there, with a did-you-mean


def validate_backend(task: Task, method: str, backend: str) -> None:
    """Raise ValueError when ``--backend vllm`` cannot run ``method`` on ``task`` (checked before loading)."""
    if backend != "vllm":
        return
    if task.kind == "choice":
        raise ValueError(
            f"task {task.name!r} scores answer choices (teacher forcing under the method's distribution), "
            "which runs on the hf backend only; use --backend hf"
        )
    spec = registry.get_spec(method)
    if not spec.generates:
        raise ValueError(
            f"{method} scores answer choices on the hf backend ({spec.vllm.reason}); use --backend hf"
        )
    if not spec.vllm.served:
        raise ValueError(
            f"{method} runs on the hf backend only, for now ({spec.vllm.reason}); use --backend hf"
        )


def check_run_arguments(
    method: str, amateur_model: Any, engine_amateur: str | None, batch_size: Any, limit: Any
) -> None:
    """Raise ValueError when ``method`` needs an amateur and has none (``engine_amateur``: the one a vLLM
    engine holds), or ``batch_size`` / ``limit`` are not integers in range."""
    if AMATEUR in registry.get_spec(method).needs and amateur_model is None and engine_amateur is None:
        raise ValueError(f"{method} needs an amateur model (a smaller model with the same tokenizer)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")


def check_items(task: Task, method: str, items: Sequence[Item], backend: str) -> None:
    """Raise ValueError when ``task``'s loaded ``items`` repeat an id or lack what ``method`` needs (a
    context-free prompt, an image), or ``backend`` cannot run ``method`` on ``task``."""
    spec = registry.get_spec(method)
    if len({item.id for item in items}) != len(items):
        repeated = sorted({item.id for item in items if sum(other.id == item.id for other in items) > 1})
        raise ValueError(
            f"task {task.name!r} has repeated item ids ({', '.join(repeated[:5])}); ids must be unique"
        )
    if spec.takes(CONTEXT_FREE_PROMPT) and items and all(item.context_free is None for item in items):
        raise ValueError(
            f"{method} contrasts each prompt with its context-free version, and task {task.name!r} gives none "
            "(its items have no context_free prompt)"
        )
    validate_backend(task, method, backend)
    if spec.takes(IMAGE) and items and all(item.image is None for item in items):
        raise ValueError(
            f"{method} contrasts images, and task {task.name!r} has none: use it on pope-mini, pope-* or chair "
            "with a vision-language model"
        )
