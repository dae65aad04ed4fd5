"""Contrastive search (Su & Collier, 2022): rerank the top-k candidates by model confidence minus a
degeneration penalty, the maximum cosine similarity between a candidate's hidden state and the hidden
states of the context so far.

    score(v) = (1 - penalty_alpha) * p(v | x) - penalty_alpha * max_j cos(h_v, h_j)

Semantics follow transformers 4.55 ``_contrastive_search`` / ``_ranking_fast`` (the reference users know):
``p`` is the softmax of the *processed* scores (user processors applied), hidden states are the model's last
hidden states (after the final norm), padded context positions never count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._validation import check_int, check_range, number_range
from .spec import VLLM_NO, MethodSpec, ScoringSupport, VllmSupport


@dataclass(frozen=True)
class ContrastiveSearchConfig:
    # weight of the degeneration penalty; 0 gives greedy decoding
    penalty_alpha: float = field(default=0.6, metadata=number_range(0.0, 1.0))
    # number of candidates re-ranked per step
    top_k: int = field(default=4, metadata=number_range(1, 1000, integer=True))

    def __post_init__(self) -> None:
        check_range("penalty_alpha", self.penalty_alpha, 0.0, 1.0)
        check_int("top_k", self.top_k, 1, 1000)


def degeneration_penalty(
    context_hidden: torch.Tensor,  # [B, S, H] last hidden states of every context token so far
    context_mask: torch.Tensor,  # [B, S] 1 for real tokens, 0 for padding
    candidate_hidden: torch.Tensor,  # [B, K, H] last hidden state of each candidate token
) -> torch.Tensor:  # [B, K]
    """Max cosine similarity of each candidate with the (unpadded) context."""
    context_unit = context_hidden / context_hidden.norm(dim=-1, keepdim=True)  # [B, S, H]
    candidate_unit = candidate_hidden / candidate_hidden.norm(dim=-1, keepdim=True)  # [B, K, H]
    cosine = torch.matmul(candidate_unit, context_unit.transpose(1, 2))  # [B, K, S]
    # masked_fill, not an additive -inf: hidden states at padded positions can be NaN (a query row with every
    # key masked), and NaN + (-inf) is NaN, which would win the max (transformers 4.55's batched defect).
    padding = ~context_mask.bool()[:, None, :]  # [B, 1, S]
    return cosine.masked_fill(padding, -math.inf).max(dim=-1).values  # [B, K]


def contrastive_scores(
    top_k_probs: torch.Tensor,  # [B, K]
    penalty: torch.Tensor,  # [B, K]
    penalty_alpha: float,
) -> torch.Tensor:  # [B, K]
    return (1.0 - penalty_alpha) * top_k_probs - penalty_alpha * penalty


def select_candidate(
    top_k_probs: torch.Tensor,  # [B, K]
    context_hidden: torch.Tensor,  # [B, S, H]
    context_mask: torch.Tensor,  # [B, S]
    candidate_hidden: torch.Tensor,  # [B, K, H]
    penalty_alpha: float,
) -> torch.Tensor:  # [B] index into the K candidates
    penalty = degeneration_penalty(context_hidden, context_mask, candidate_hidden)
    return contrastive_scores(top_k_probs.to(penalty.dtype), penalty, penalty_alpha).argmax(dim=-1)


SPECS = (
    MethodSpec(
        name="contrastive_search",
        config=ContrastiveSearchConfig,
        contrasts="model confidence vs. similarity to the context so far",
        paper="Su & Collier, 2022",
        hf_function="contrastive_decoding.backends.hf.generate:contrastive_search",
        vllm=VllmSupport(
            VLLM_NO,
            "re-scores the top_k candidates with each candidate's own next hidden state: a forward over k "
            "tokens per row per step whose KV entries are discarded but one, which vLLM's V1 engine cannot "
            "rewind without a fork of its spec-decode path",
        ),
        scoring=ScoringSupport(
            False,
            "it re-ranks the top_k candidates by hidden-state similarity to the context and defines no "
            "distribution over next tokens. Score with 'plain' (the model's own log-likelihood) or a "
            "contrastive method (dola, expert_amateur, cad, adacad, layer_fusion).",
        ),
        samples=False,
        order=10,
    ),
)
