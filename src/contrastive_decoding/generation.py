"""What every backend's text generation shares: the sampling parameters, their validation, the output record.

Backend-neutral (imports neither backend): :mod:`contrastive_decoding.api` (the Hugging Face text API)
and :mod:`contrastive_decoding.backends.vllm.engine` (the vLLM engine helper) both take these names, validate
them here and return :class:`GenerationOutput` rows. ``contrastive_decoding.api`` re-exports all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .samplers.config import SamplingConfig

# The sampling filters beside temperature / top_k / top_p: transformers' ``GenerationConfig`` names
# (top_n_sigma, which transformers lacks, is llama.cpp's), each off at its default.
FILTER_PARAMETERS = ("typical_p", "min_p", "top_n_sigma", "epsilon_cutoff", "eta_cutoff")
# Parameters of plain generation that every method accepts (contrastive search's own ``top_k`` wins).
SAMPLING_PARAMETERS = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "min_p",
    "top_n_sigma",
    "epsilon_cutoff",
    "eta_cutoff",
    "seed",
    "repetition_penalty",
)


@dataclass
class GenerationOutput:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    extras: dict[str, Any] = field(default_factory=dict)


def sampling_kwargs(sampling_params: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Validate sampling parameters; return (kwargs for ``model.generate``, seed or None).

    When sampling, the kwargs hold temperature / top_k / top_p / typical_p always and min_p / top_n_sigma /
    epsilon_cutoff / eta_cutoff only when they are on (``top_n_sigma`` is not a transformers generate argument:
    only our ``custom_generate`` callables take it)."""
    params = dict(sampling_params)
    repetition_penalty = params.pop("repetition_penalty", None)
    config = SamplingConfig(**params)  # validates ranges
    kwargs: dict[str, Any] = {"do_sample": config.do_sample}
    if config.do_sample:
        kwargs.update(
            temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, typical_p=config.typical_p
        )
        kwargs.update(
            {name: getattr(config, name) for name in FILTER_PARAMETERS[1:] if getattr(config, name) != 0.0}
        )
    if repetition_penalty is not None:
        if not isinstance(repetition_penalty, (int, float)) or repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be in (0, inf), got {repetition_penalty!r}")
        kwargs["repetition_penalty"] = float(repetition_penalty)
    return kwargs, config.seed
