"""Knowledge-conflict QA for context-aware decoding: NQ-Swap and AdaCAD's synthetic NQ set.

Both use the prompt format of the CAD / AdaCAD "group decode file-io" inputs (Shi et al., NAACL 2024,
github.com/xhan77/context-aware-decoding; Wang et al., AdaCAD, github.com/HanNight/AdaCAD), as found verbatim
in AdaCAD's ``data/nq_synth_2_-1.jsonl`` (shipped in ``adacad_nq_synth/``)::

    {evidence} \\nUsing only the references listed above, answer the following question: \\nQuestion: {q}\\nAnswer:

and, without the evidence (``context_free``, for ``cad`` / ``adacad``)::

    Answer the following question: \\nQuestion: {q}\\nAnswer:

(the `` \\n`` are a space and a newline, the question is followed by ``" ?"`` as in AdaCAD's file). The
prompt-formatted NQ-Swap file of CAD/AdaCAD is not available, so ``nq-swap`` builds the same format from the
raw NQ-Swap rows: evidence = ``sub_context`` verbatim (NQ's HTML-like tags such as ``<P>`` / ``<Td>`` kept, as
AdaCAD's contexts keep them), question = the lower-case NQ question with its first letter capitalized.

Scoring: the generation is cut at its first newline and stripped, then ``exact_match`` and
``contains_answer`` against the references with SQuAD normalization (``exact_match_any`` metric).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from . import register
from ._common import (
    cut_at,
    generated_text,
    read_jsonl,
    require_text,
    require_text_list,
    task_data_file,
)
from .base import Item, ItemOutput, Task

INSTRUCTION_WITH_CONTEXT = "Using only the references listed above, answer the following question: "
INSTRUCTION_WITHOUT_CONTEXT = "Answer the following question: "
STOP_SEQUENCES: tuple[str, ...] = ("\n",)


def format_question(question: str) -> str:
    """An NQ question as in AdaCAD's prompts: first letter capitalized, ``" ?"`` appended."""
    question = question.strip().rstrip("?").rstrip()
    return f"{question[:1].upper()}{question[1:]} ?"


def build_prompts(evidence: str, question: str) -> tuple[str, str]:
    """(prompt with the evidence, prompt without it) in the CAD/AdaCAD format above."""
    question_block = f"\nQuestion: {format_question(question)}\nAnswer:"
    with_context = f"{evidence.strip()} \n{INSTRUCTION_WITH_CONTEXT}{question_block}"
    return with_context, f"{INSTRUCTION_WITHOUT_CONTEXT}{question_block}"


class _ShortAnswerTask(Task):
    kind = "generate"
    max_new_tokens = 16  # short answers; CAD's NQ-Swap script generates 10 tokens
    stop_sequences = STOP_SEQUENCES

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        from ..metrics.exact_match_any.exact_match_any import contains_any_answer, exact_match_any

        answer = cut_at(generated_text(item, output), STOP_SEQUENCES).strip()
        return {
            "exact_match": float(exact_match_any(answer, item.references)),
            "contains_answer": float(contains_any_answer(answer, item.references)),
        }


@register
class NQSwap(_ShortAnswerTask):
    """NQ-Swap (Longpre et al., 2021): answer from a context whose answer entity was substituted."""

    name = "nq-swap"
    description = "NQ-Swap knowledge conflicts: answer from the substituted context (4746 questions)"
    data_files = ("nq_swap/merged.jsonl",)

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(
            self,
            data_dir,
            "NQ-Swap JSON Lines with question, org_context, org_answer, sub_context, sub_answer",
        )
        items = []
        for index, (line_number, row) in enumerate(read_jsonl(path)):
            where = f"{path}:{line_number}"
            question = require_text(row.get("question"), where, "question")
            evidence = require_text(row.get("sub_context"), where, "sub_context")
            answers = require_text_list(row.get("sub_answer"), where, "sub_answer")
            context, context_free = build_prompts(evidence, question)
            items.append(
                Item(
                    id=str(index),
                    kind="generate",
                    context=context,
                    context_free=context_free,
                    references=answers,
                    meta={"question": question, "original_answers": list(row.get("org_answer") or [])},
                )
            )
        return items


@register
class AdaCADNQSynth(_ShortAnswerTask):
    """AdaCAD's synthetic NQ conflict set: the file's own prompts (two lines per example)."""

    name = "adacad-nq-synth"
    description = "AdaCAD synthetic NQ knowledge conflicts, prompts as in the file (1000 examples)"
    data_files = ("adacad_nq_synth/nq_synth_2_-1.jsonl",)

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(
            self,
            data_dir,
            "AdaCAD file-io JSON Lines: two lines per input_index (assigned_process 0 with the context, "
            "1 without), each with context_string and gold_answers",
        )
        streams: dict[int, dict[int, tuple[str, dict]]] = defaultdict(dict)
        order: list[int] = []
        for line_number, row in read_jsonl(path):
            where = f"{path}:{line_number}"
            index, process = row.get("input_index"), row.get("assigned_process")
            if not isinstance(index, int) or process not in (0, 1):
                raise ValueError(
                    f"{where}: expected an integer input_index and assigned_process 0 or 1, "
                    f"got {index!r} and {process!r}."
                )
            if process in streams[index]:
                raise ValueError(
                    f"{where}: a second assigned_process {process} line for input_index {index}."
                )
            if not streams[index]:
                order.append(index)
            streams[index][process] = (where, row)
        items = []
        for index in order:
            pair = streams[index]
            if set(pair) != {0, 1}:
                raise ValueError(
                    f"{path}: input_index {index} needs one line with assigned_process 0 (with context) "
                    f"and one with 1 (without); found only {sorted(pair)}."
                )
            (where_with, with_row), (where_without, without_row) = pair[0], pair[1]
            gold = require_text(with_row.get("gold_answers"), where_with, "gold_answers")
            if without_row.get("gold_answers") != gold:
                raise ValueError(f"{where_without}: gold_answers differs from its context line {where_with}.")
            context = require_text(with_row.get("context_string"), where_with, "context_string")
            context_free = require_text(without_row.get("context_string"), where_without, "context_string")
            question = context_free.rsplit("\nQuestion: ", 1)[-1].removesuffix("\nAnswer:")
            items.append(
                Item(
                    id=str(index),
                    kind="generate",
                    context=context,
                    context_free=context_free,
                    references=(gold,),
                    meta={"question": question},
                )
            )
        return items
