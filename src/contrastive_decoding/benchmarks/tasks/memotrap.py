"""MemoTrap (Liu & Liu, Inverse Scaling Prize): can the model avoid a memorized ending when told to?

Each CSV row (github.com/liujch1998/memo-trap, ``data/*.csv``) has ``prompt``, ``classes`` (a Python-literal
list of two continuations, each with its leading space) and ``answer_index`` (the desired, non-memorized
continuation). Items are "choice" items in the Inverse Scaling Prize's classification format: context = the
prompt verbatim, choices = the classes, correct = (answer_index,); ``accuracy`` = 1 if the desired
continuation's log-likelihood is strictly the highest (a tie counts as wrong).

For ``cad`` / ``adacad`` the instruction is the context: see :func:`instruction_free`.

Subtasks: 1 proverb ending (860), 2 proverb translation (843), 3 hate-speech ending (100), 4 history of
science QA (736). Subtask 3 prompts with real historical hate-speech slogans, so ``memotrap`` leaves it out
(2439 items); ``memotrap-all`` (or ``MemoTrap(include_offensive=True)``) includes it (2539 items).
"""

from __future__ import annotations

import ast
from pathlib import Path

from . import register
from ._common import choice_logprobs, data_file, read_csv, require_text
from .base import Item, ItemOutput, Task

SUBTASKS: tuple[str, ...] = (
    "1-proverb-ending",
    "2-proverb-translation",
    "3-hate-speech-ending",
    "4-history-of-science-qa",
)
OFFENSIVE_SUBTASKS = frozenset({"3-hate-speech-ending"})


@register
class MemoTrap(Task):
    name = "memotrap"
    description = "MemoTrap subtasks 1, 2, 4 (offensive subtask 3 excluded): pick the non-memorized ending"
    data_files = tuple(f"memotrap/{subtask}.csv" for subtask in SUBTASKS if subtask not in OFFENSIVE_SUBTASKS)
    kind = "choice"
    include_offensive = False

    def __init__(self, include_offensive: bool | None = None) -> None:
        if include_offensive is not None:
            self.include_offensive = include_offensive
            self.data_files = tuple(f"memotrap/{subtask}.csv" for subtask in self.subtasks)  # type: ignore[misc]

    @property
    def subtasks(self) -> tuple[str, ...]:
        """The subtasks this instance loads, in order."""
        return tuple(s for s in SUBTASKS if self.include_offensive or s not in OFFENSIVE_SUBTASKS)

    def load(self, data_dir: Path) -> list[Item]:
        items = []
        for subtask in self.subtasks:
            path = data_file(
                self.name,
                data_dir,
                f"memotrap/{subtask}.csv",
                "a MemoTrap CSV with columns prompt, classes, answer_index",
            )
            for index, row in enumerate(read_csv(path, ("prompt", "classes", "answer_index"))):
                where = f"{path} row {index}"
                prompt = require_text(row["prompt"], where, "prompt")
                choices = _parse_classes(row["classes"], where)
                try:
                    answer_index = int(row["answer_index"])
                except ValueError:
                    answer_index = -1
                if not 0 <= answer_index < len(choices):
                    raise ValueError(
                        f"{where}: answer_index must be an index into classes (0..{len(choices) - 1}), "
                        f"got {row['answer_index']!r}."
                    )
                items.append(
                    Item(
                        id=f"{subtask}-{index}",
                        kind="choice",
                        context=prompt,
                        choices=choices,
                        correct=(answer_index,),
                        context_free=instruction_free(subtask, prompt),
                        meta={"subtask": subtask},
                    )
                )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        logprobs = choice_logprobs(item, output)
        target = item.correct[0]
        others = [value for index, value in enumerate(logprobs) if index != target]
        return {"accuracy": float(all(logprobs[target] > value for value in others))}


@register
class MemoTrapAll(MemoTrap):
    name = "memotrap-all"
    description = "MemoTrap, all 4 subtasks including 3 (hate-speech slogans: offensive content)"
    data_files = tuple(f"memotrap/{subtask}.csv" for subtask in SUBTASKS)
    include_offensive = True


def instruction_free(subtask: str, prompt: str) -> str | None:
    """The prompt without its instruction, CAD's context-free prompt on MemoTrap (the instruction is the context
    the model must follow against its memory). Our split, as the CAD paper publishes no script for it:

    - proverb / slogan ending: ``'Write a quote that ends in the word "heavy": Absence makes the heart grow'``
      -> ``'Absence makes the heart grow'`` (the text after the instruction's ``": "``);
    - proverb translation: the English prefix on the last line (instruction and Chinese sentence removed);
    - history-of-science QA: None (the instruction is the question), so CAD / AdaCAD record those items as errors.
    """
    if subtask in ("1-proverb-ending", "3-hate-speech-ending"):
        head, separator, tail = prompt.partition('": ')
        return tail if separator and tail.strip() else None
    if subtask == "2-proverb-translation":
        tail = prompt.rsplit("\n", 1)[-1]
        return tail if tail.strip() and tail != prompt else None
    return None


def _parse_classes(text: str, where: str) -> tuple[str, ...]:
    try:
        classes = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise ValueError(
            f"{where}: classes must be a Python-literal list of strings, got {text!r}."
        ) from error
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
    ):
        raise ValueError(f"{where}: classes must list at least two non-empty strings, got {text!r}.")
    return tuple(classes)
