"""Condition contrast: self-contrastive decoding against knowledge overshadowing.

When a query holds several conditions ("a *female* *Canadian* physicist"), a popular condition can overshadow a
rarer one and the model answers for the popular one. The user marks the conditions; for each marked condition k
the prompt without it, ``x_{-k}``, rides as extra rows of the batch. Per step:

- effect_k = JSD(p(. | x), p(. | x_{-k})) in nats: how much removing condition k moves the next-token
  distribution. Averaged over the answer's steps it is the hallucination-anticipation signal: the condition with
  the smallest effect is the one the model is ignoring (overshadowed).
- score = (1 + a) logp(y | x) - a logp(y | x_{-k*}) on log-probabilities, with k* the condition whose mean effect
  so far (this step included) is smallest, per row (``condition_target="weakest"``), or the mean of
  logp(y | x_{-k}) over every marked condition (``"all"``). Subtracted branches are floored at
  :data:`~._math.LOG_PROB_FLOOR`. ``condition_alpha = 0`` is plain decoding with the full prompt.

Text helpers build the condition-dropped prompts from character spans or a template with named slots.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ._math import LOG_PROB_FLOOR, jensen_shannon_from_logprobs
from ._validation import check_range, choice_range, did_you_mean, number_range
from .spec import CONDITIONS, VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

CONDITION_TARGETS = ("weakest", "all")


@dataclass(frozen=True)
class ConditionContrastConfig:
    # weight of the contrast; 0 gives plain decoding
    condition_alpha: float = field(default=1.0, metadata=number_range(0.0, 100.0))
    # "weakest": the overshadowed condition; "all": every marked condition
    condition_target: str = field(default="weakest", metadata=choice_range(CONDITION_TARGETS))

    def __post_init__(self) -> None:
        check_range("condition_alpha", self.condition_alpha, 0.0, 100.0)
        if self.condition_target not in CONDITION_TARGETS:
            raise ValueError(
                f"condition_target must be one of {', '.join(CONDITION_TARGETS)}, got {self.condition_target!r}."
                f"{did_you_mean(str(self.condition_target), CONDITION_TARGETS)}"
            )


def condition_effects(
    full_logits: torch.Tensor,  # [B, V] logits given the whole prompt
    dropped_logits: torch.Tensor,  # [K, B, V] logits given the prompt without condition k
) -> torch.Tensor:  # [K, B] JSD in nats
    if dropped_logits.dim() != 3 or dropped_logits.shape[1:] != full_logits.shape:
        raise ValueError(
            f"dropped_logits must have shape [K, {full_logits.shape[0]}, {full_logits.shape[1]}], "
            f"got {tuple(dropped_logits.shape)}"
        )
    full = full_logits.float().log_softmax(-1)  # [B, V]
    dropped = dropped_logits.float().log_softmax(-1)  # [K, B, V]
    return jensen_shannon_from_logprobs(full[None], dropped)


def condition_contrast(
    full_logits: torch.Tensor,  # [B, V]
    dropped_logits: torch.Tensor,  # [K, B, V]
    mean_effects: torch.Tensor,  # [K, B] mean effect per condition over the steps so far, this one included
    cfg: ConditionContrastConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # scores [B, V], target condition [B] (-1 for "all")
    cfg = ConditionContrastConfig() if cfg is None else cfg
    full = full_logits.float().log_softmax(-1)  # [B, V]
    dropped = dropped_logits.float().log_softmax(-1).clamp_min(LOG_PROB_FLOOR)  # [K, B, V]
    batch = full.shape[0]
    if cfg.condition_target == "all":
        negative = dropped.mean(0)  # [B, V]
        target = torch.full((batch,), -1, dtype=torch.long, device=full.device)
    else:
        target = mean_effects.argmin(0)  # [B]
        negative = dropped[target, torch.arange(batch, device=full.device)]  # [B, V]
    if cfg.condition_alpha == 0:
        return full, target
    return (1.0 + cfg.condition_alpha) * full - cfg.condition_alpha * negative, target


# ------------------------------------------------------------------------------------------------------------
# Condition-dropped prompts
# ------------------------------------------------------------------------------------------------------------

Span = tuple[int, int]


def _tidy(text: str) -> str:
    """Collapse the double spaces and space-before-punctuation a removed span leaves."""
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" +([,.;:?!])", r"\1", text)
    return text.strip(" ") if text.strip() else text


def prompts_without_spans(prompt: str, spans: Sequence[Span]) -> list[str]:
    """One prompt per span ``(start, end)`` (character offsets, end exclusive) with that span removed."""
    if not spans:
        raise ValueError("condition contrast needs at least one marked condition (a span or a named slot)")
    ordered = sorted(spans)
    for start, end in ordered:
        if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start < end <= len(prompt):
            raise ValueError(
                f"condition span ({start}, {end}) is outside the prompt (length {len(prompt)}): spans are "
                "character offsets with 0 <= start < end <= len(prompt)"
            )
    for (_, first_end), (second_start, _) in zip(ordered, ordered[1:], strict=False):
        if second_start < first_end:
            raise ValueError(f"condition spans overlap: {ordered}")
    return [_tidy(prompt[:start] + prompt[end:]) for start, end in spans]


def fill_template(template: str, conditions: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``("Name a {gender} {field} scientist", {"gender": "female", "field": "Canadian"})`` -> the full prompt
    and, per slot name, the prompt with that slot left empty."""
    names = re.findall(r"\{(\w+)\}", template)
    if not names:
        raise ValueError("condition contrast needs at least one marked condition: the template has no {slot}")
    missing = [name for name in names if name not in conditions]
    if missing:
        raise ValueError(f"template slot(s) {', '.join(missing)} have no value in conditions")
    unknown = [name for name in conditions if name not in names]
    if unknown:
        raise ValueError(
            f"condition(s) {', '.join(unknown)} are not slots of the template ({', '.join(names)})"
            f"{did_you_mean(unknown[0], names)}"
        )
    full = template.format_map(dict(conditions))
    dropped = {name: _tidy(template.format_map({**conditions, name: ""})) for name in dict.fromkeys(names)}
    return full, dropped


SPECS = (
    MethodSpec(
        name="condition_contrast",
        config=ConditionContrastConfig,
        contrasts="the prompt vs. the prompt without its overshadowed condition (knowledge overshadowing)",
        paper="Zhang et al., 2024 (self-contrastive decoding)",
        hf_function="contrastive_decoding.backends.hf.condition:condition_contrast",
        vllm=VllmSupport(
            VLLM_NO,
            "needs (1 + K)-request groups (the prompt and one per dropped condition) scheduled as one; the pair "
            "scheduler does pairs only",
        ),
        scoring=ScoringSupport(
            False,
            "it picks the overshadowed condition from its effect over the answer being "
            "generated, so it defines no fixed distribution to score a given continuation under; generate with "
            "it instead, or score with cad (the prompt without one condition as context_free_contexts)",
        ),
        needs=frozenset({CONDITIONS}),
        order=70,
    ),
)
