"""Checks made before a run loads a model or writes a file: the parameters fit the method on the task's kind of
items (:func:`validate_run_params`), the backend can run them (:func:`validate_backend`), the run's arguments
and items give the method what it needs; and the choice-scoring defaults per method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tasks.base import Item, Task

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


def validate_run_params(task: Task, method: str, params: dict[str, Any]) -> None:
    """Check that ``params`` fit ``method`` on ``task``'s kind of items, before any model is loaded.

    Generation tasks take the method's parameters and the sampling parameters of ``generate``; choice tasks
    (teacher-forced scoring) take the method's parameters and ``normalize``, no sampling parameters, and no
    ``contrastive_search`` (it defines no distribution to score under). Raises ValueError naming the problem.
    """
    from ...api import SAMPLING_PARAMETERS, sampling_kwargs, split_parameters
    from ...decoding import IMAGE_METHODS, check_method, make_method_config, method_parameters

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


def validate_backend(task: Task, method: str, backend: str) -> None:
    """Raise ValueError when ``--backend vllm`` cannot run ``method`` on ``task`` (checked before loading)."""
    from ...decoding import CONTEXT_FREE_METHODS, IMAGE_METHODS

    if backend != "vllm":
        return
    if task.kind == "choice":
        raise ValueError(
            f"task {task.name!r} scores answer choices (teacher forcing under the method's distribution), "
            "which runs on the hf backend only; use --backend hf"
        )
    if method in CONTEXT_FREE_METHODS or method in IMAGE_METHODS:
        raise ValueError(f"{method} runs on the hf backend only, for now; use --backend hf")


def check_run_arguments(
    method: str, amateur_model: Any, engine_amateur: str | None, batch_size: Any, limit: Any
) -> None:
    """Raise ValueError when ``method`` needs an amateur and has none (``engine_amateur``: the one a vLLM
    engine holds), or ``batch_size`` / ``limit`` are not integers in range."""
    from ...decoding import AMATEUR_METHODS

    if method in AMATEUR_METHODS and amateur_model is None and engine_amateur is None:
        raise ValueError(f"{method} needs an amateur model (a smaller model with the same tokenizer)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")


def check_items(task: Task, method: str, items: Sequence[Item], backend: str) -> None:
    """Raise ValueError when ``task``'s loaded ``items`` repeat an id or lack what ``method`` needs (a
    context-free prompt, an image), or ``backend`` cannot run ``method`` on ``task``."""
    from ...decoding import CONTEXT_FREE_METHODS, IMAGE_METHODS

    if len({item.id for item in items}) != len(items):
        repeated = sorted({item.id for item in items if sum(other.id == item.id for other in items) > 1})
        raise ValueError(
            f"task {task.name!r} has repeated item ids ({', '.join(repeated[:5])}); ids must be unique"
        )
    if method in CONTEXT_FREE_METHODS and items and all(item.context_free is None for item in items):
        raise ValueError(
            f"{method} contrasts each prompt with its context-free version, and task {task.name!r} gives none "
            "(its items have no context_free prompt)"
        )
    validate_backend(task, method, backend)
    if method in IMAGE_METHODS and items and all(item.image is None for item in items):
        raise ValueError(
            f"{method} contrasts images, and task {task.name!r} has none: use it on pope-mini, pope-* or chair "
            "with a vision-language model"
        )
