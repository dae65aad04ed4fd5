"""Plain decoding: the model's own distribution, greedy or sampled as the sampling parameters say.

The baseline every method is compared with; on the Hugging Face backend it is transformers' own ``generate``,
on vLLM the engine's own sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import VLLM_PLAIN, MethodSpec, ScoringSupport, VllmSupport


@dataclass(frozen=True)
class PlainConfig:
    """No parameters: plain decoding (greedy or sampled, as the sampling parameters say)."""


SPECS = (
    MethodSpec(
        name="plain",
        aliases=("greedy",),
        config=PlainConfig,
        contrasts="nothing: the model's own distribution (the baseline)",
        paper="-",
        hf_function="contrastive_decoding.backends.hf.generate:greedy",
        vllm=VllmSupport(VLLM_PLAIN),
        scoring=ScoringSupport(True),
        order=0,
    ),
)
