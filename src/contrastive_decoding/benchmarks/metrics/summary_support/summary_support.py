"""Summary quality against the gold summary, and support by the source article (a factual-consistency proxy)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{shi-etal-2024-trusting,
    title = "Trusting Your Evidence: Hallucinate Less with Context-aware Decoding",
    author = "Shi, Weijia and Han, Xiaochuang and Lewis, Mike and Tsvetkov, Yulia and Zettlemoyer, Luke and Yih, Wen-tau",
    booktitle = "Proceedings of NAACL 2024 (Short Papers)",
    year = "2024",
}
"""

_DESCRIPTION = """\
Per summary, averaged over summaries:

- rougeL: ROUGE-L F1 (0-100) against the gold summary (rouge-score, Porter stemming).
- supported_bigrams: percent of the summary's word bigrams (lowercased runs of [a-z0-9]) that occur in the
  article. Content the article does not contain is the usual sign of a summarizer's hallucination; it is a proxy
  for the FactKB / BERT-P judges of the CAD paper, which are models we do not ship. Summaries with fewer than two
  words have no bigram and are left out of this mean.
- minilm_support (only with ``embedder``): mean over the summary's sentences of the highest cosine similarity
  to a sentence of the article; ``embedder`` maps N texts to unit vectors [N, D] (e.g. all-MiniLM-L6-v2).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of generated summaries (str).
    references: list of gold summaries (str).
    articles: list of source articles (str), one per prediction.
    embedder: optional callable, list of N texts -> array [N, D] of unit vectors.
Returns:
    dict with "rougeL", "supported_bigrams" (and "minilm_support" with an embedder).
Example:
    >>> metric = load_metric("summary_support")
    >>> metric.compute(predictions=["The cat sat."], references=["The cat sat."], articles=["The cat sat down."])
    {'rougeL': 100.0, 'supported_bigrams': 100.0}
"""

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_bigrams(text: str) -> list[tuple[str, str]]:
    words = _WORD.findall(text.lower())
    return list(zip(words, words[1:], strict=False))


def supported_bigram_percent(summary: str, article: str) -> float | None:
    """Percent of the summary's word bigrams found in the article; None for a summary of < 2 words."""
    bigrams = word_bigrams(summary)
    if not bigrams:
        return None
    article_bigrams = set(word_bigrams(article))
    return 100.0 * sum(bigram in article_bigrams for bigram in bigrams) / len(bigrams)


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def sentence_support(summary: str, article: str, embedder: Callable[[list[str]], Any]) -> float | None:
    """Mean over summary sentences of the best cosine similarity to an article sentence (None: no sentence)."""
    summary_sentences, article_sentences = sentences(summary), sentences(article)
    if not summary_sentences or not article_sentences:
        return None
    summary_vectors = np.asarray(embedder(summary_sentences), dtype=np.float64)  # [S, D]
    article_vectors = np.asarray(embedder(article_sentences), dtype=np.float64)  # [A, D]
    return float((summary_vectors @ article_vectors.T).max(axis=1).mean())


def rouge_l(summary: str, gold: str, scorer: Any = None) -> float:
    if scorer is None:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * scorer.score(gold, summary)["rougeL"].fmeasure


def _mean(values: Sequence[float | None]) -> float:
    kept = [value for value in values if value is not None]
    return sum(kept) / len(kept) if kept else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SummarySupport(evaluate.Metric):
    """ROUGE-L to the gold summary and support of the summary by its article."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/xhan77/context-aware-decoding"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        articles: Sequence[str] | None = None,
        embedder: Callable[[list[str]], Any] | None = None,
    ) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("No summaries to score.")
        if articles is None or len(articles) != len(predictions):
            raise ValueError("articles must give one source article per prediction")
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        results = {
            "rougeL": _mean([rouge_l(p, g, scorer) for p, g in zip(predictions, references, strict=True)]),
            "supported_bigrams": _mean(
                [supported_bigram_percent(p, a) for p, a in zip(predictions, articles, strict=True)]
            ),
        }
        if embedder is not None:
            results["minilm_support"] = _mean(
                [sentence_support(p, a, embedder) for p, a in zip(predictions, articles, strict=True)]
            )
        return results
