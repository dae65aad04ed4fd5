"""The glue that puts the backend-neutral samplers in transformers' ``LogitsProcessorList``.

``model.generate`` builds its own temperature / top-k / top-p / min-p / typical / epsilon / eta warpers; the
decode loop swaps them for one :class:`SamplingLogitsWarper` (the same math, shared with the vLLM backend) at the
place where the first one stood, and draws with :func:`contrastive_decoding.samplers.select_tokens`.
transformers has no top-nσ: ``top_n_sigma`` comes from the ``custom_generate`` keyword argument, else from a
``generation_config`` attribute of that name (``GenerationConfig(top_n_sigma=1.0)`` keeps unknown fields).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitNormalization,
    MinPLogitsWarper,
    SynthIDTextWatermarkLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    WatermarkLogitsProcessor,
)

from ...samplers import SamplingConfig

_HF_SAMPLING_WARPERS = (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    MinPLogitsWarper,
    TypicalLogitsWarper,
    EpsilonLogitsWarper,
    EtaLogitsWarper,
)

# What generate appends after its warpers (watermarking, then renormalisation).
_LAST_PROCESSORS = (WatermarkLogitsProcessor, SynthIDTextWatermarkLogitsProcessor, LogitNormalization)


class SamplingLogitsWarper(LogitsProcessor):
    """A ``LogitsProcessor`` applying ``SamplingConfig.warp`` to scores [B, V]."""

    def __init__(self, config: SamplingConfig):
        if not isinstance(config, SamplingConfig):
            raise TypeError(f"config must be a SamplingConfig, got {type(config).__name__}")
        self.config = config

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.config.warp(scores)


def sampling_config_from_generation_config(
    generation_config: GenerationConfig, top_n_sigma: float | None = None
) -> SamplingConfig:
    """Read do_sample / temperature / top_k / top_p / min_p / typical_p / epsilon_cutoff / eta_cutoff (None =
    off) and ``top_n_sigma`` (the explicit argument, else the config's attribute of that name, else off).
    Greedy configs give defaults."""
    if not generation_config.do_sample:
        return SamplingConfig()

    def get(name: str, off: float | int) -> float | int:
        value = getattr(generation_config, name, None)
        return off if value is None else value

    return SamplingConfig(
        do_sample=True,
        temperature=get("temperature", 1.0),
        top_k=get("top_k", 0),
        top_p=get("top_p", 1.0),
        typical_p=get("typical_p", 1.0),
        min_p=get("min_p", 0.0),
        top_n_sigma=get("top_n_sigma", 0.0) if top_n_sigma is None else top_n_sigma,
        epsilon_cutoff=get("epsilon_cutoff", 0.0),
        eta_cutoff=get("eta_cutoff", 0.0),
    )


def strip_hf_sampling_warpers(processors: LogitsProcessorList) -> tuple[LogitsProcessorList, int | None]:
    """Remove transformers' temperature / top-k / top-p / min-p / typical / epsilon / eta warpers.

    Returns the remaining processors (order kept) and the index where the first removed one stood, which
    is where a ``SamplingLogitsWarper`` should be inserted (None when nothing was removed).
    """
    kept = LogitsProcessorList()
    position: int | None = None
    for processor in processors:
        if isinstance(processor, _HF_SAMPLING_WARPERS):
            if position is None:
                position = len(kept)
        else:
            kept.append(processor)
    return kept, position


def warper_position(processors: LogitsProcessorList) -> int:
    """Where transformers would have put its warpers in ``processors``: after every processor, before the
    trailing watermark / ``LogitNormalization`` ones that ``generate`` appends last."""
    position = len(processors)
    while position and isinstance(processors[position - 1], _LAST_PROCESSORS):
        position -= 1
    return position
