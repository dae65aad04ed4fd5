"""Expert-amateur contrastive decoding.

Li et al. (2023): on the plausible head ``V_head = {v : p_exp(v) >= alpha * max p_exp}``,
score = log p_exp(v) - log p_ama(v); tokens outside the head get -inf.
O'Brien & Lewis (2023): score = (1 + beta) * expert - beta * amateur on the same head.

Both are computed on log-probabilities, which differ from raw logits by a per-row constant: greedy choices
and sampling distributions are the same as with raw logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..samplers.warpers import relative_top_mask
from ._validation import check_range, number_range
from .spec import AMATEUR, VLLM_MODEL, MethodSpec, ScoringSupport, VllmSupport


@dataclass(frozen=True)
class ExpertAmateurConfig:
    # keep tokens with p_exp >= alpha * max p_exp
    plausibility_alpha: float = field(default=0.1, metadata=number_range(0.0, 1.0))
    # softens (>1) or sharpens (<1) the amateur before the contrast
    amateur_temperature: float = field(default=1.0, metadata=number_range(0.0, math.inf, low_inclusive=False))
    # None: Li et al. score; float: O'Brien & Lewis (1+beta) e - beta a
    contrast_beta: float | None = field(default=None, metadata=number_range(0.0, 100.0, nullable=True))

    def __post_init__(self) -> None:
        check_range("plausibility_alpha", self.plausibility_alpha, 0.0, 1.0)
        check_range("amateur_temperature", self.amateur_temperature, 0.0, math.inf, low_inclusive=False)
        if self.contrast_beta is not None:
            check_range("contrast_beta", self.contrast_beta, 0.0, 100.0)


def contrast(
    expert_logits: torch.Tensor,  # [B, V]
    amateur_logits: torch.Tensor,  # [B, V] (same vocabulary)
    cfg: ExpertAmateurConfig,
) -> torch.Tensor:  # [B, V], -inf outside the plausible head
    expert_logprobs = expert_logits.float().log_softmax(dim=-1)
    amateur_logprobs = (amateur_logits.float() / cfg.amateur_temperature).log_softmax(dim=-1)
    if cfg.contrast_beta is None:
        scores = expert_logprobs - amateur_logprobs
    else:
        scores = (1.0 + cfg.contrast_beta) * expert_logprobs - cfg.contrast_beta * amateur_logprobs
    head = relative_top_mask(expert_logprobs, cfg.plausibility_alpha, normalized=True)  # [B, V]
    return scores.masked_fill(~head, -math.inf)


SPECS = (
    MethodSpec(
        name="expert_amateur",
        config=ExpertAmateurConfig,
        contrasts="a large model vs. a small one with the same tokenizer",
        paper="Li et al., 2023; O'Brien & Lewis, 2023",
        hf_function="contrastive_decoding.backends.hf.generate:expert_amateur",
        vllm=VllmSupport(VLLM_MODEL),
        # the plausibility head is a generation-time device: with it a multi-token answer with one token outside
        # the head scores -inf (on FACTOR every choice did); choice tasks score the summed raw contrast
        scoring=ScoringSupport(True, choice_defaults=(("plausibility_alpha", 0.0), ("normalize", False))),
        needs=frozenset({AMATEUR}),
        order=20,
    ),
)
