"""CNN/DailyMail summarization subset of Context-Aware Decoding (Shi et al., NAACL 2024; 300 articles).

Items come from CAD's own input file (``cad_cnndm/cnndm_1_0.jsonl``, github.com/xhan77/context-aware-decoding):
context = the with-article prompt (``"Article: ... Summarize the article in three sentences. Summary:"``),
``context_free`` = the prompt-only stream (``"Summarize the article in three sentences. Summary:"``), references =
the gold highlights. CAD's paper uses ``cad_alpha = 0.5`` for summarization (pass ``--set cad_alpha=0.5``).

Scores, with the ``summary_support`` metric's per-summary functions (the paper's FactKB / BERT-P judges are
models we do not ship, so factual consistency is a proxy):
- ``rougeL``: ROUGE-L F1 (0-100) against the gold highlights (rouge-score, stemming as in CAD's script);
- ``supported_bigrams``: percent of the summary's word bigrams (lowercased alphanumeric words) that occur in the
  article: what the summary says that the article does not is the usual hallucination signal of summarizers;
- ``minilm_support``: mean over the summary's sentences of the highest cosine similarity (all-MiniLM-L6-v2,
  offline) to a sentence of the article, set ``task.embedder = None`` to leave it out.
Generation stops at 64 new tokens (CAD generates 100) to keep CPU runs short; the summary is cut at a blank line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..metrics.summary_support.summary_support import (
    rouge_l,
    sentence_support,
    supported_bigram_percent,
)
from . import register
from ._common import generated_text, read_jsonl, require_text, task_data_file
from .base import Item, ItemOutput, Task


@register
class CnnDailyMail(Task):
    name = "cnndm"
    description = "CNN/DM summaries (CAD's 300 articles): ROUGE-L, supported bigrams, MiniLM support"
    data_files = ("cad_cnndm/cnndm_1_0.jsonl",)
    kind = "generate"
    max_new_tokens = 64

    def __init__(self, embedder: Any = "minilm") -> None:
        self.embedder = embedder
        self._scorer = None

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(
            self,
            data_dir,
            "CAD's CNN/DM input: JSON Lines {input_index, assigned_process, context_string, gold_answers, article}",
        )
        streams: dict[str, dict[int, dict]] = {}
        for line, row in read_jsonl(path):
            where = f"{path}:{line}"
            index = str(row.get("input_index"))
            process = int(row.get("assigned_process", -1))
            if process not in (0, 1):
                raise ValueError(f"{where}: assigned_process must be 0 (with article) or 1 (prompt only)")
            require_text(row.get("context_string"), where, "context_string")
            streams.setdefault(index, {})[process] = row
        items = []
        for index, pair in streams.items():
            if set(pair) != {0, 1}:
                raise ValueError(f"{path}: input_index {index} needs both streams (assigned_process 0 and 1)")
            with_article = pair[0]
            items.append(
                Item(
                    id=index,
                    kind="generate",
                    context=with_article["context_string"],
                    context_free=pair[1]["context_string"],
                    references=(require_text(with_article.get("gold_answers"), index, "gold_answers"),),
                    meta={"article": require_text(with_article.get("article"), index, "article")},
                )
            )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        if self._scorer is None:
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        summary = generated_text(item, output).strip().split("\n\n")[0].strip()
        article = item.meta["article"]
        scores = {"rougeL": rouge_l(summary, item.references[0], self._scorer)}
        supported = supported_bigram_percent(summary, article)
        if supported is not None:
            scores["supported_bigrams"] = supported
        if self.embedder is not None:
            from ..embeddings import resolve_embedder

            embedder = resolve_embedder(self.embedder)
            support = sentence_support(summary, article, embedder)
            if support is not None:
                scores["minilm_support"] = support
        scores["length"] = float(len(summary.split()))
        return scores
