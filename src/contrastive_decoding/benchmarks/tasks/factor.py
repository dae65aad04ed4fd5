"""FACTOR (Muhlgay et al., EACL 2024): does the model prefer the true completion over three contradictions?

Each row of a FACTOR CSV (github.com/AI21Labs/factor, ``data/{expert,news,wiki}_factor.csv``) gives a document
prefix, the true ``completion`` and three minimally edited false ``contradiction_0..2``. The item is a
"choice" item: context = the prefix, choices = (completion, contradiction_0, contradiction_1,
contradiction_2), correct = (0,).

Prefix column: ``turncated_prefixes`` (sic) for expert and wiki, as both FACTOR's ``eval_factuality.py`` and
DoLa's ``factor_eval.py`` do; ``full_prefix`` for news, as DoLa's ``factor_eval.py`` does (``'news' in
file_path``), which is where the contrastive-decoding papers' FACTOR-news numbers come from. FACTOR's own
script uses ``turncated_prefixes`` everywhere: pass ``prefix_column="turncated_prefixes"`` to get that.

Joining prefix and continuation (the scorer appends the continuation's tokens to the context's): a prefix
ending in a space loses that space and every choice gets a leading space (FACTOR's ``format_data``); a prefix
ending in a newline is joined directly (FACTOR); any other prefix (69 expert rows end in "Asnwer:" / ":") gets
a leading space on the choices, as DoLa always does (FACTOR would join "Asnwer:Becoming").

Score: ``accuracy`` = 1 if the completion's log-likelihood is >= every contradiction's (a tie counts as
correct, as ``np.argmin`` in FACTOR and ``<`` in DoLa do) and finite. The log-likelihoods are whatever the
runner computed (``contrastive_decoding.score``: summed over tokens, as DoLa); FACTOR's own script compares
per-token mean losses instead.

Contextual calibration: the content-free context is the content-free input (``"N/A"``) in place of the whole
prefix (a trailing newline kept), so each choice is calibrated by its likelihood with no document before it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from . import register
from ._common import choice_logprobs, read_csv, require_text, task_data_file
from .base import Item, ItemOutput, Task

CHOICE_COLUMNS = ("completion", "contradiction_0", "contradiction_1", "contradiction_2")


def join_prefix(prefix: str, continuations: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(context, choices) for a FACTOR prefix and its continuations (rules in the module docstring)."""
    continuations = tuple(continuation.lstrip(" ") for continuation in continuations)
    if prefix.endswith(" "):
        return prefix[:-1], tuple(" " + continuation for continuation in continuations)
    if prefix.endswith("\n"):
        return prefix, continuations
    return prefix, tuple(" " + continuation for continuation in continuations)


class _FactorTask(Task):
    kind = "choice"
    prefix_column: ClassVar[str] = "turncated_prefixes"
    source_path: ClassVar[str]  # path of the CSV in github.com/AI21Labs/factor

    def __init__(self, prefix_column: str | None = None) -> None:
        if prefix_column is not None:
            self.prefix_column = prefix_column

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(
            self,
            data_dir,
            f"a FACTOR CSV with columns {self.prefix_column}, completion, contradiction_0..2",
            hint=(
                f"It is not shipped with the benchmark data: put {self.source_path} of "
                f"github.com/AI21Labs/factor there."
            ),
        )
        rows = read_csv(path, (self.prefix_column, *CHOICE_COLUMNS))
        items = []
        for index, row in enumerate(rows):
            where = f"{path} row {index}"
            prefix = require_text(row[self.prefix_column], where, self.prefix_column)
            texts = tuple(require_text(row[column], where, column) for column in CHOICE_COLUMNS)
            context, choices = join_prefix(prefix, texts)
            items.append(
                Item(
                    id=str(index),
                    kind="choice",
                    context=context,
                    choices=choices,
                    correct=(0,),
                    meta={"doc_id": row.get("doc_id", "")},
                )
            )
        return items

    def content_free_context(self, item: Item, content_free_input: str) -> str:
        """The content-free input in place of the document prefix, ending as the prefix ends (a newline stays,
        so the choices join it as they join the prefix)."""
        return content_free_input + ("\n" if item.context.endswith("\n") else "")

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        logprobs = choice_logprobs(item, output)
        true_score, false_scores = logprobs[0], logprobs[1:]
        correct = math.isfinite(true_score) and all(true_score >= value for value in false_scores)
        return {"accuracy": float(correct)}


@register
class FactorExpert(_FactorTask):
    name = "factor-expert"
    description = "FACTOR expert: true completion vs 3 contradictions (236 rows)"
    data_files = ("factor/expert_factor.csv",)
    source_path = "data/expert_factor.csv"


@register
class FactorNews(_FactorTask):
    name = "factor-news"
    description = "FACTOR news: true completion vs 3 contradictions (data not shipped)"
    data_files = ("factor/news_factor.csv",)
    source_path = "data/news_factor.csv"
    prefix_column = "full_prefix"


@register
class FactorWiki(_FactorTask):
    name = "factor-wiki"
    description = "FACTOR wiki: true completion vs 3 contradictions (data not shipped)"
    data_files = ("factor/wiki_factor.csv",)
    source_path = "data/wiki_factor.csv"
