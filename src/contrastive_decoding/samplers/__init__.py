"""Token selection on [batch, vocab] scores, shared by the Hugging Face and vLLM backends.

Backend-neutral: imports torch only (never transformers or vLLM). The transformers glue lives in
``contrastive_decoding.backends.hf.sampling``.
"""

from .config import SamplingConfig
from .seeding import (
    draw_generator,
    draw_uniforms,
    make_generator,
    perturbation_generator,
    row_seeds,
    stream_seed,
)
from .select import draw_exponential_race, draw_inverse_cdf, select_tokens
from .warpers import (
    apply_epsilon,
    apply_epsilon_unchecked,
    apply_eta,
    apply_eta_unchecked,
    apply_min_p,
    apply_min_p_unchecked,
    apply_temperature,
    apply_temperature_unchecked,
    apply_top_k,
    apply_top_k_unchecked,
    apply_top_n_sigma,
    apply_top_n_sigma_unchecked,
    apply_top_p,
    apply_top_p_unchecked,
    apply_typical,
    apply_typical_unchecked,
    relative_top_mask,
)

__all__ = [
    "SamplingConfig",
    "apply_epsilon",
    "apply_epsilon_unchecked",
    "apply_eta",
    "apply_eta_unchecked",
    "apply_min_p",
    "apply_min_p_unchecked",
    "apply_temperature",
    "apply_temperature_unchecked",
    "apply_top_k",
    "apply_top_k_unchecked",
    "apply_top_n_sigma",
    "apply_top_n_sigma_unchecked",
    "apply_top_p",
    "apply_top_p_unchecked",
    "apply_typical",
    "apply_typical_unchecked",
    "draw_exponential_race",
    "draw_generator",
    "draw_inverse_cdf",
    "draw_uniforms",
    "make_generator",
    "perturbation_generator",
    "relative_top_mask",
    "row_seeds",
    "select_tokens",
    "stream_seed",
]
