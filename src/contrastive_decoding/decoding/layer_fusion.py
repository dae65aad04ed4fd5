"""Multi-layer fusion contrast (LOL-style: "LOL: Large Language Models Lower-Layer Contrastive Decoding").

Contrastive decoding between an expert and an amateur at two depths, fused:

    score = cd_final + fusion_lambda * cd_lower (+ refocus_weight * refocus)
    cd_final  = logp_E(y | x) - logp_A(y | x')                      (final layers)
    cd_lower  = logq_E^l(y | x) - logq_A^m(y | x')                  (early exits: layer l of the expert, m of the
                                                                     amateur, through the final norm and LM head)
    refocus   = logp_E(y | t + x) - logp_E(y | x)                   (t: a truthfulness instruction; optional)

on the plausibility head {y : p_E(y | x) >= plausibility_alpha * max p_E} (-inf elsewhere), as expert-amateur
CD. The amateur is a user-given smaller model with the same tokenizer (``x' = x``), or the expert itself under a
hallucination-inducing instruction (``x' = a + x``).

What follows the paper and what is ours: the paper (its code is unpublished) describes the two-depth contrast,
the fusion of the final-layer and lower-layer contrasts and the truthfulness-refocused branch; the log-prob
difference form, the plausibility head, the default lower layer (half the depth, and the same relative depth for
an amateur of another depth), ``fusion_lambda = 1``, the instruction texts and the refocus form as a difference
of log-probs are our choices, made to match expert-amateur CD and DoLa's early exits in this package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..samplers.warpers import relative_top_mask
from ._math import LOG_PROB_FLOOR
from ._validation import check_int, check_range, number_range
from .spec import AMATEUR, VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

DEFAULT_AMATEUR_INSTRUCTION = (
    "You are a careless assistant who often makes up facts. Answer with plausible but false information.\n\n"
)
DEFAULT_TRUTHFUL_INSTRUCTION = (
    "You are a truthful assistant. Answer accurately, and only with facts you are sure of.\n\n"
)


@dataclass(frozen=True)
class LayerFusionConfig:
    # weight of the lower-layer contrast
    fusion_lambda: float = field(default=1.0, metadata=number_range(0.0, 100.0))
    # expert's lower layer (1 .. N - 1); None: N // 2
    fusion_layer: int | None = field(default=None, metadata=number_range(1, integer=True, nullable=True))
    # head: p_E(y | x) >= alpha * max p_E
    plausibility_alpha: float = field(default=0.1, metadata=number_range(0.0, 1.0))
    # weight of the truthfulness-refocus branch; 0 leaves it out
    refocus_weight: float = field(default=0.0, metadata=number_range(0.0, 100.0))

    def __post_init__(self) -> None:
        check_range("fusion_lambda", self.fusion_lambda, 0.0, 100.0)
        if self.fusion_layer is not None:
            check_int("fusion_layer", self.fusion_layer, 1)
        check_range("plausibility_alpha", self.plausibility_alpha, 0.0, 1.0)
        check_range("refocus_weight", self.refocus_weight, 0.0, 100.0)


def lower_layers(cfg: LayerFusionConfig, expert_layers: int, amateur_layers: int) -> tuple[int, int]:
    """(expert layer, amateur layer) of the lower contrast; the amateur's sits at the same relative depth."""
    layer = cfg.fusion_layer if cfg.fusion_layer is not None else expert_layers // 2
    if not 1 <= layer < expert_layers:
        raise ValueError(
            f"fusion_layer must be in [1, {expert_layers - 1}] (the expert has {expert_layers} layers), got {layer}"
        )
    amateur_layer = max(1, min(amateur_layers - 1, round(layer * amateur_layers / expert_layers)))
    return layer, amateur_layer


def _logprobs(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().log_softmax(-1)


def layer_fusion_contrast(
    expert_final: torch.Tensor,  # [B, V]
    amateur_final: torch.Tensor,  # [B, V]
    expert_lower: torch.Tensor,  # [B, V] early exit of the expert
    amateur_lower: torch.Tensor,  # [B, V] early exit of the amateur
    cfg: LayerFusionConfig | None = None,
    refocused: torch.Tensor | None = None,  # [B, V] expert given the truthfulness instruction + x
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    cfg = LayerFusionConfig() if cfg is None else cfg
    expert = _logprobs(expert_final)
    scores = expert - _logprobs(amateur_final).clamp_min(LOG_PROB_FLOOR)
    if cfg.fusion_lambda:
        lower = _logprobs(expert_lower).clamp_min(LOG_PROB_FLOOR) - _logprobs(amateur_lower).clamp_min(
            LOG_PROB_FLOOR
        )
        scores = scores + cfg.fusion_lambda * lower
    if cfg.refocus_weight:
        if refocused is None:
            raise ValueError(
                "refocus_weight > 0 needs the refocused logits (the truthfulness-instruction branch)"
            )
        scores = scores + cfg.refocus_weight * (_logprobs(refocused).clamp_min(LOG_PROB_FLOOR) - expert)
    head = relative_top_mask(expert, cfg.plausibility_alpha, normalized=True)  # [B, V]
    return scores.masked_fill(~head, -math.inf)


SPECS = (
    MethodSpec(
        name="layer_fusion",
        config=LayerFusionConfig,
        contrasts="expert vs. amateur at the final layer + a lower layer (early exit), fused",
        paper="LOL (Chen et al., 2024)",
        hf_function="contrastive_decoding.backends.hf.layer_fusion:layer_fusion",
        vllm=VllmSupport(
            VLLM_NO,
            "needs the amateur's early exits inside the expert-amateur model wrapper (or the inducing-instruction "
            "prompt as a twin request)",
        ),
        # like expert-amateur: choice tasks score the summed raw contrast without the plausibility head
        scoring=ScoringSupport(True, choice_defaults=(("plausibility_alpha", 0.0), ("normalize", False))),
        accepts=frozenset({AMATEUR}),
        order=80,
    ),
)
