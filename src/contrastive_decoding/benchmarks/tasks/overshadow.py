"""A synthetic knowledge-overshadowing set for condition contrast, built from MemoTrap's proverb endings.

Each MemoTrap proverb-ending prompt holds two conditions: the instruction (``Write a quote that ends in the word
"heavy":``, the rare condition) and the famous proverb (``Absence makes the heart grow``, the popular one whose
memorized ending overshadows the instruction). Both are marked as conditions for ``condition_contrast``; other
methods see the same prompt, and CAD / AdaCAD take the proverb alone as the context-free prompt (the
instruction as the context), which makes CAD the contrast against a fixed, user-chosen condition. The model generates a few words; per item:

- ``accuracy``: the first generated word is the instructed ending (MemoTrap's desired class, normalized);
- ``memorized``: it is the memorized ending instead;
- ``instruction_overshadowed`` (condition contrast only): the condition with the smallest mean effect is the
  instruction, the hallucination-anticipation signal flagging the item.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from . import register
from ._common import generated_text, read_csv, task_data_file
from .base import Item, ItemOutput, Task

_WORD = re.compile(r"[a-z0-9']+")


def first_word(text: str) -> str:
    match = _WORD.search(text.lower())
    return match.group(0) if match else ""


@register
class OvershadowMemoTrap(Task):
    name = "overshadow-memotrap"
    description = "Knowledge overshadowing: MemoTrap proverb endings with instruction + proverb as conditions"
    data_files = ("memotrap/1-proverb-ending.csv",)
    kind = "generate"
    max_new_tokens = 4

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(self, data_dir, "the MemoTrap proverb-ending CSV")
        items = []
        for index, row in enumerate(read_csv(path, ("prompt", "classes", "answer_index"))):
            prompt = row["prompt"]
            instruction, separator, proverb = prompt.partition('": ')
            if not separator or not proverb.strip():
                raise ValueError(
                    f"{path} row {index}: expected 'Write a quote that ends in the word \"X\": proverb'"
                )
            classes = ast.literal_eval(row["classes"])
            desired = first_word(classes[int(row["answer_index"])])
            memorized = first_word(classes[1 - int(row["answer_index"])])
            instruction_text = instruction + '":'
            items.append(
                Item(
                    id=str(index),
                    kind="generate",
                    context=prompt,
                    references=(desired, memorized),
                    context_free=proverb,  # CAD / AdaCAD on the same items: the instruction as the context
                    meta={"conditions": [instruction_text, proverb], "instruction": instruction_text},
                )
            )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        word = first_word(generated_text(item, output))
        desired, memorized = item.references
        scores = {"accuracy": float(word == desired), "memorized": float(word == memorized)}
        overshadowed = output.extras.get("overshadowed_condition")
        if overshadowed is not None:
            scores["instruction_overshadowed"] = float(overshadowed == item.meta["instruction"])
        return scores
