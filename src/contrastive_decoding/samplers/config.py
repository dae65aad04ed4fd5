"""Sampling parameters shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .warpers import (
    apply_epsilon_unchecked,
    apply_eta_unchecked,
    apply_min_p_unchecked,
    apply_temperature_unchecked,
    apply_top_k_unchecked,
    apply_top_n_sigma_unchecked,
    apply_top_p_unchecked,
    apply_typical_unchecked,
)

# Parameter -> (range as written in errors, check); each is off at 0.
_ZERO_OFF = {
    "min_p": ("[0, 1] (0 disables it)", lambda v: 0 <= v <= 1),
    "top_n_sigma": ("[0, inf) (0 disables it)", lambda v: 0 <= v < float("inf")),
    "epsilon_cutoff": ("[0, 1) (0 disables it)", lambda v: 0 <= v < 1),
    "eta_cutoff": ("[0, 1) (0 disables it)", lambda v: 0 <= v < 1),
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``do_sample=False`` means greedy; the other fields then do nothing.

    Off values: temperature 1.0, top_k 0, top_p 1.0, typical_p 1.0, min_p 0, top_n_sigma 0, epsilon_cutoff 0,
    eta_cutoff 0 (the names are transformers' ``GenerationConfig`` fields; top_n_sigma is llama.cpp's). ``seed`` makes the row's draws keyed on
    (seed, output position), see :mod:`contrastive_decoding.samplers.seeding`; None draws from the global RNG.
    Validated here, once: :meth:`warp` and the selection that uses it do no further checks (no host syncs).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    min_p: float = 0.0
    top_n_sigma: float = 0.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be a bool, got {self.do_sample!r}")
        if not _is_number(self.temperature) or not 0 < self.temperature < float("inf"):
            raise ValueError(f"temperature must be in (0, inf), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int in [0, inf) (0 disables it), got {self.top_k!r}")
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        for name, (valid, ok) in _ZERO_OFF.items():
            value = getattr(self, name)
            if not _is_number(value) or not ok(value):
                raise ValueError(f"{name} must be in {valid}, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        for name in (
            "temperature",
            "top_p",
            "typical_p",
            *_ZERO_OFF,
        ):  # ints -> floats (transformers: floats)
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def is_greedy(self) -> bool:
        return not self.do_sample

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """Apply temperature -> top_n_sigma -> top_k -> top_p -> min_p -> typical -> epsilon -> eta to [B, V]
        scores: transformers' order (``GenerationMixin._get_logits_processor``), with top-nσ, which transformers
        lacks, right after temperature (where transformers puts its other logit-space filter, top-h), so its σ
        is taken over the whole vocabulary, as in the paper.

        Returns ``scores`` itself when greedy or when every warper is off; otherwise a new [B, V] tensor.
        Uses the warpers' unchecked forms (the fields were validated at construction): no host sync.
        """
        if not self.do_sample:
            return scores
        scores = apply_temperature_unchecked(scores, self.temperature)
        scores = apply_top_n_sigma_unchecked(scores, self.top_n_sigma)
        scores = apply_top_k_unchecked(scores, self.top_k)
        scores = apply_top_p_unchecked(scores, self.top_p)
        scores = apply_min_p_unchecked(scores, self.min_p)
        scores = apply_typical_unchecked(scores, self.typical_p)
        scores = apply_epsilon_unchecked(scores, self.epsilon_cutoff)
        return apply_eta_unchecked(scores, self.eta_cutoff)
