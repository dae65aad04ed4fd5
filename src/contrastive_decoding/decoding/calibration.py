"""Calibrating answer choices against a content-free input: contextual calibration (Zhao et al., 2021, "Calibrate
Before Use") and post-hoc debiasing (Zhang et al., 2024, "Debiasing Multimodal Large Language Models").

Both score a set of answer choices, not a next token: they do not generate. With ``p`` the model's probabilities
of the C choices given the real input, renormalised over the choices, and ``p_cf`` the same given a content-free
input (text: ``"N/A"`` in place of the question; vision: the prompt without its image), the calibrated
distribution over the choices is, per item::

    form="diagonal"  (W = diag(p_cf)^-1, b = 0):  q = normalize(p / p_cf^strength)
    form="identity"  (W = I, b = -p_cf):          q = softmax(p - strength * p_cf)

``p_cf`` is the choices' probabilities averaged over the content-free inputs and renormalised (Zhao's
``get_p_content_free``), plus ``cf_epsilon`` per choice (Zhang's code adds 1e-4). ``strength`` 1 is the papers'
calibration; 0 leaves the diagonal form at the model's own choice distribution (same MC1 / MC2 / accuracy as
plain scoring; the identity form at 0 is ``softmax(p)``, same argmax). :func:`calibrate_choices` returns ``log q`` over ``[items, choices]``.

Where we differ from the reference code:

- the papers write ``q = softmax(W p + b)``; both codes take ``argmax(W p + b)`` (Zhao) or divide ``W p + b``
  by its sum (Zhang). For the diagonal form we renormalise ``W p`` (a distribution, same argmax); for the
  identity form, where ``p - p_cf`` can be negative, we take the paper's softmax (same argmax). Only
  probability-mass metrics (TruthfulQA MC2) see the difference;
- a choice's probability is the product of its tokens' probabilities (the summed log-likelihood ``score``
  returns, so multi-token answers work); the references read the first answer token's probability (Zhang: from
  the top-100 of the first generated token, lowercased; POPE's "yes" / "no" are one token there);
- everything runs in log space in float64, so choices whose log-likelihoods differ by hundreds of nats (long
  TruthfulQA answers) keep exact ratios; ``-inf`` inputs mark absent choices (padding, see ``valid``);
- Zhang's paper also calibrates with a "meaningless" image (noise, zeros, the image tokens replaced by
  ``<unk>``); ``posthoc_debias`` uses the prompt without its image (their "None" setting, VDD's contrast input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from ._validation import check_range, choice_range, number_range, text_list_range
from .spec import IMAGE, VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

FORMS = ("diagonal", "identity")
MAX_STRENGTH = 10.0
# The content-free input of Zhao et al.'s paper; their code averages over ("N/A", "", "[MASK]").
DEFAULT_CONTENT_FREE_INPUTS = ("N/A",)
# Zhang et al.'s eval_pope_calibrate.py adds this to each content-free probability before inverting.
ZHANG_EPSILON = 1e-4


def _check_common(form: str, strength: float, cf_epsilon: float) -> None:
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(repr(f) for f in FORMS)}, got {form!r}")
    check_range("strength", strength, 0.0, MAX_STRENGTH)
    check_range("cf_epsilon", cf_epsilon, 0.0, 1.0)


@dataclass(frozen=True)
class ContextualCalibrationConfig:
    # "diagonal": W = diag(p_cf)^-1, b = 0 (the paper's); "identity": W = I, b = -p_cf
    form: Literal["diagonal", "identity"] = field(default="diagonal", metadata=choice_range(FORMS))
    # weight of the correction (diagonal: exponent of p_cf; identity: factor of b): 0 with the diagonal form = the
    # model's own choice distribution, 1 = the paper's calibration
    strength: float = field(default=1.0, metadata=number_range(0.0, MAX_STRENGTH))
    # the content-free inputs put in place of the question; p_cf is the mean over them
    content_free_inputs: tuple[str, ...] = field(
        default=DEFAULT_CONTENT_FREE_INPUTS, metadata=text_list_range()
    )
    # added to each content-free choice probability (0 in Zhao et al.'s code)
    cf_epsilon: float = field(default=0.0, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        _check_common(self.form, self.strength, self.cf_epsilon)
        inputs = self.content_free_inputs
        if isinstance(inputs, str):
            inputs = (inputs,)
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        if not isinstance(inputs, tuple) or not inputs or not all(isinstance(text, str) for text in inputs):
            raise ValueError(
                f"content_free_inputs must be a text or a non-empty list of texts, got {self.content_free_inputs!r}"
            )
        object.__setattr__(self, "content_free_inputs", inputs)


@dataclass(frozen=True)
class PosthocDebiasConfig:
    # "diagonal": W = diag(p_cf)^-1, b = 0 (the code's default "diagonal_W"); "identity": W = I, b = -p_cf
    form: Literal["diagonal", "identity"] = field(default="diagonal", metadata=choice_range(FORMS))
    # weight of the correction (diagonal: exponent of p_cf; identity: factor of b): 0 with the diagonal form = the
    # model's own choice distribution, 1 = the paper's debiasing
    strength: float = field(default=1.0, metadata=number_range(0.0, MAX_STRENGTH))
    # added to each no-image choice probability (1e-4 in Zhang et al.'s eval_pope_calibrate.py)
    cf_epsilon: float = field(default=ZHANG_EPSILON, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        _check_common(self.form, self.strength, self.cf_epsilon)


CalibrationConfig = ContextualCalibrationConfig | PosthocDebiasConfig


def content_free_choice_logprobs(
    content_free_logprobs: torch.Tensor,  # [K, I, C] choice log-likelihoods given each of K content-free inputs
    valid: torch.Tensor | None = None,  # [I, C] bool, False for padding; None: every choice is real
) -> torch.Tensor:  # [I, C] float64: log p_cf
    """``log p_cf``: the choices' probabilities averaged over the K content-free inputs, then renormalised over
    the valid choices (Zhao et al.'s ``get_p_content_free``: ``mean(all_p_y)`` then ``/ sum``; Zhang et al.'s
    combined settings sum the same way), in log space."""
    if content_free_logprobs.dim() == 2:
        content_free_logprobs = content_free_logprobs[None]
    if content_free_logprobs.dim() != 3:
        raise ValueError(
            "content_free_logprobs must be [inputs, items, choices] or [items, choices], got "
            f"{tuple(content_free_logprobs.shape)}"
        )
    logprobs = content_free_logprobs.double()
    if valid is not None:
        logprobs = logprobs.masked_fill(~valid[None], -math.inf)
    return logprobs.logsumexp(dim=0).log_softmax(dim=-1)  # [I, C] mean over K, renormalised


def calibrate_choices(
    logprobs: torch.Tensor,  # [I, C] choice log-likelihoods given the real input (any per-item offset)
    content_free_logprobs: torch.Tensor,  # [K, I, C] or [I, C] the same given the content-free input(s)
    cfg: CalibrationConfig,
    valid: torch.Tensor | None = None,  # [I, C] bool, False for padded choices; None: all real
) -> (
    torch.Tensor
):  # [I, C] float64 log q, the calibrated distribution over each item's choices (-inf: padding)
    """Calibrated choice log-probabilities ``log q`` (forms in the module docstring).

    >>> import math, torch
    >>> cfg = ContextualCalibrationConfig()
    >>> p = torch.tensor([[0.9, 0.1]]).log()      # a model that says "yes" 90% of the time
    >>> p_cf = torch.tensor([[0.9, 0.1]]).log()   # ... also when it is shown nothing
    >>> calibrate_choices(p, p_cf, cfg).exp()     # calibrated: no preference left
    tensor([[0.5000, 0.5000]], dtype=torch.float64)
    """
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [items, choices], got {tuple(logprobs.shape)}")
    if content_free_logprobs.shape[-2:] != logprobs.shape:
        raise ValueError(
            f"content_free_logprobs must end in the shape of logprobs {tuple(logprobs.shape)}, got "
            f"{tuple(content_free_logprobs.shape)}"
        )
    if valid is not None and valid.shape != logprobs.shape:
        raise ValueError(
            f"valid must have the shape of logprobs {tuple(logprobs.shape)}, got {tuple(valid.shape)}"
        )
    values = logprobs.double()
    if valid is not None:
        values = values.masked_fill(~valid, -math.inf)
    log_p = values.log_softmax(dim=-1)  # [I, C] the model's choice distribution
    log_p_cf = content_free_choice_logprobs(content_free_logprobs, valid)  # [I, C]
    if cfg.cf_epsilon:
        log_p_cf = torch.logaddexp(log_p_cf, torch.full_like(log_p_cf, math.log(cfg.cf_epsilon)))
    absent = torch.isneginf(log_p)  # padding (or a choice the model rules out): q = 0 there
    if cfg.form == "diagonal":
        if cfg.strength == 0:
            return log_p
        # a choice impossible without content (p_cf = 0, no epsilon) is floored, not divided by zero
        floor = torch.finfo(torch.float64).min / (4 * MAX_STRENGTH)
        scores = log_p - cfg.strength * log_p_cf.clamp_min(floor)  # [I, C] log(p / p_cf^s), unnormalised
    else:
        scores = log_p.exp() - cfg.strength * log_p_cf.exp()  # [I, C] W p + b with W = I, b = -s p_cf
    return scores.masked_fill(absent, -math.inf).log_softmax(dim=-1)


_SCORING_ONLY = (
    "a scoring-only method: it calibrates the scores of a set of answer choices against a content-free input "
    "(TruthfulQA MC, FACTOR, POPE) and defines no next-token distribution to decode from"
)
_NOT_PER_CONTINUATION = (
    "it calibrates a set of answer choices together, not one continuation at a time: use "
    "contrastive_decoding.calibration.score_choices (or bench run on a choice task)"
)


SPECS = (
    MethodSpec(
        name="contextual_calibration",
        config=ContextualCalibrationConfig,
        contrasts='answer choices given the input vs. given a content-free input ("N/A")',
        paper="Zhao et al., 2021",
        hf_function=None,
        generates=False,
        vllm=VllmSupport(VLLM_NO, _SCORING_ONLY),
        scoring=ScoringSupport(
            True,
            _NOT_PER_CONTINUATION,
            choice_scorer="contrastive_decoding.calibration:score_choices",
        ),
        order=90,
    ),
    MethodSpec(
        name="posthoc_debias",
        config=PosthocDebiasConfig,
        contrasts="a VLM's answer choices given the image vs. the same prompt without the image",
        paper="Zhang et al., 2024",
        hf_function=None,
        generates=False,
        vllm=VllmSupport(VLLM_NO, _SCORING_ONLY),
        scoring=ScoringSupport(
            True,
            _NOT_PER_CONTINUATION,
            choice_scorer="contrastive_decoding.calibration:score_choices",
        ),
        needs=frozenset({IMAGE}),
        order=91,
    ),
)
