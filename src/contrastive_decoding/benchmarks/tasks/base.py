"""The task interface: a task loads items from a data file and scores one item's output; the runner does the rest.

Two kinds of items:
- ``"choice"``: score each of ``choices`` as a continuation of ``context`` with ``contrastive_decoding.score``
  (teacher forcing, under the method's contrasted distribution) and pick / compare (TruthfulQA MC, FACTOR);
- ``"generate"``: generate from ``context`` with ``contrastive_decoding.generate`` and compare the text with
  ``references`` (NQ-Swap, MemoTrap, GSM8K, open-ended quality, ...).

CAD-style tasks give ``context_free`` (the prompt without its context) for ``cad`` / ``adacad``. Calibration
(``contextual_calibration``) asks the task for ``content_free_context(item, "N/A")``, the prompt with a
content-free input in place of the item's content; ``posthoc_debias`` scores a generate task's
``answer_choices`` (POPE: yes / no) given the image and without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

ItemKind = Literal["choice", "generate"]


@dataclass(frozen=True)
class Item:
    """One benchmark item. ``id`` is stable across runs (resuming matches on it)."""

    id: str
    kind: ItemKind
    context: str
    choices: tuple[str, ...] = ()  # "choice": continuations to score
    correct: tuple[int, ...] = ()  # "choice": indices of the correct choices (the first is the best answer)
    references: tuple[str, ...] = ()  # "generate": gold answers / human continuation
    context_free: str | None = None  # the context without its evidence (CAD / AdaCAD)
    image: str | None = None  # path of the item's image (vision-language tasks: POPE, CHAIR)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemOutput:
    """What the runner computed for an item: per-choice log-likelihoods, or the generated text."""

    choice_logprobs: tuple[float, ...] = ()
    text: str | None = None
    token_ids: tuple[int, ...] = ()
    extras: dict[str, Any] = field(
        default_factory=dict
    )  # what a method returns besides text (condition effects)


class Task(ABC):
    """Subclass per benchmark; register in ``contrastive_decoding.benchmarks.tasks.TASKS``."""

    name: ClassVar[str]
    description: ClassVar[str]
    data_files: ClassVar[tuple[str, ...]]  # relative to the data directory (default: ../shared/data layout)
    kind: ClassVar[ItemKind]
    max_new_tokens: ClassVar[int] = 64
    # Generate tasks whose answer is one of a few words (POPE: yes / no): the continuations a scoring-only
    # method (calibration) scores; the best one becomes the item's output text, scored as a generation is.
    answer_choices: ClassVar[tuple[str, ...]] = ()

    def content_free_context(self, item: Item, content_free_input: str) -> str | None:
        """``item``'s prompt with ``content_free_input`` (e.g. ``"N/A"``) in place of its content, for contextual
        calibration (Zhao et al., 2021); None when the task does not define one."""
        return None

    @abstractmethod
    def load(self, data_dir: Path) -> list[Item]:
        """Every item of the task, in a fixed order (``--limit N`` takes the first N)."""

    @abstractmethod
    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        """Per-item metrics (numbers) for one item's output, e.g. ``{"mc1": 1.0, "mc2": 0.8, "mc3": 0.5}``."""

    def aggregate(self, rows: list[dict[str, float]]) -> dict[str, float]:
        """Task metrics from the per-item rows; the default is the mean of every key."""
        keys = sorted({key for row in rows for key in row})
        return {
            key: sum(row[key] for row in rows if key in row) / sum(key in row for row in rows) for key in keys
        }
