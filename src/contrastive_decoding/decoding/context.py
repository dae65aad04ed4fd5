"""Context-aware decoding.

CAD (Shi et al., 2023): score = (1 + cad_alpha) * l(y | context, x) - cad_alpha * l(y | x).
AdaCAD (Wang et al., 2024): the same with a per-step, per-row weight alpha_t = JSD(p(. | context, x), p(. | x))
in nats (0.5 KL(p || m) + 0.5 KL(q || m)), floored at ``adacad_threshold``: steps whose divergence is below
the threshold use alpha 0 (no contrast).

CAD is computed on log-probabilities, which makes it equal to transformers' classifier-free guidance with
``guidance_scale = 1 + cad_alpha`` and the context-free prompt as negative prompt. AdaCAD follows its public
code and applies the weight to raw logits. Both differ from the other form only by a per-row constant: same
greedy tokens, same sampling distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._math import jensen_shannon_from_logprobs
from ._validation import check_range, number_range
from .spec import CONTEXT_FREE_PROMPT, VLLM_PAIR, MethodSpec, ScoringSupport, VllmSupport


@dataclass(frozen=True)
class CadConfig:
    # 0 gives plain decoding with the context; 0.5 is advised for summarization
    cad_alpha: float = field(default=1.0, metadata=number_range(0.0, 100.0))

    def __post_init__(self) -> None:
        check_range("cad_alpha", self.cad_alpha, 0.0, 100.0)


@dataclass(frozen=True)
class AdaCadConfig:
    # divergences below it give alpha_t = 0
    adacad_threshold: float = field(default=0.0, metadata=number_range(0.0, math.log(2.0)))

    def __post_init__(self) -> None:
        check_range("adacad_threshold", self.adacad_threshold, 0.0, math.log(2.0))


def cad_contrast(
    context_logits: torch.Tensor,  # [B, V] logits given context + input
    context_free_logits: torch.Tensor,  # [B, V] logits given the input alone
    cad_alpha: float | torch.Tensor,  # scalar or [B]
) -> torch.Tensor:  # [B, V]
    alpha = _as_column(cad_alpha, context_logits)
    with_context = context_logits.float().log_softmax(dim=-1)
    without_context = context_free_logits.float().log_softmax(dim=-1)
    return (1.0 + alpha) * with_context - alpha * without_context


def jensen_shannon(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:  # [B, V] x2 -> [B] nats
    return jensen_shannon_from_logprobs(
        p_logits.float().log_softmax(dim=-1), q_logits.float().log_softmax(dim=-1)
    )


def adacad_alpha(
    context_logits: torch.Tensor,  # [B, V]
    context_free_logits: torch.Tensor,  # [B, V]
    adacad_threshold: float = 0.0,
) -> torch.Tensor:  # [B]
    divergence = jensen_shannon(context_logits, context_free_logits)
    return torch.where(divergence < adacad_threshold, torch.zeros_like(divergence), divergence)


def adacad_contrast(
    context_logits: torch.Tensor,  # [B, V]
    context_free_logits: torch.Tensor,  # [B, V]
    cfg: AdaCadConfig,
) -> tuple[torch.Tensor, torch.Tensor]:  # scores [B, V], alpha_t [B]
    alpha = adacad_alpha(context_logits, context_free_logits, cfg.adacad_threshold)  # [B]
    column = alpha[:, None]
    return (1.0 + column) * context_logits.float() - column * context_free_logits.float(), alpha


def _as_column(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=torch.float32).reshape(-1, 1)
    return value


def cad_pair_scores(
    context_logits: torch.Tensor,  # [B, V]
    context_free_logits: torch.Tensor,  # [B, V]
    cfg: CadConfig,
) -> torch.Tensor:  # [B, V]
    """CAD's scores of paired rows (the vLLM backend's pair processor calls this)."""
    return cad_contrast(context_logits, context_free_logits, cfg.cad_alpha)


def adacad_pair_scores(
    context_logits: torch.Tensor,  # [B, V]
    context_free_logits: torch.Tensor,  # [B, V]
    cfg: AdaCadConfig,
) -> torch.Tensor:  # [B, V]
    """AdaCAD's scores of paired rows (the vLLM backend's pair processor calls this)."""
    return adacad_contrast(context_logits, context_free_logits, cfg)[0]


SPECS = (
    MethodSpec(
        name="cad",
        config=CadConfig,
        contrasts="the prompt with its context vs. without it",
        paper="Shi et al., 2024",
        hf_function="contrastive_decoding.backends.hf.generate:cad",
        vllm=VllmSupport(VLLM_PAIR, pair_scores="contrastive_decoding.decoding.context:cad_pair_scores"),
        scoring=ScoringSupport(True),
        needs=frozenset({CONTEXT_FREE_PROMPT}),
        order=40,
    ),
    MethodSpec(
        name="adacad",
        config=AdaCadConfig,
        contrasts="as CAD, weight = Jensen-Shannon divergence per step",
        paper="Wang et al., 2025",
        hf_function="contrastive_decoding.backends.hf.generate:adacad",
        vllm=VllmSupport(VLLM_PAIR, pair_scores="contrastive_decoding.decoding.context:adacad_pair_scores"),
        scoring=ScoringSupport(True),
        needs=frozenset({CONTEXT_FREE_PROMPT}),
        order=50,
    ),
)
