"""No-image contrast, VDD (Zhang et al., 2024, "Debiasing Multimodal Large Language Models": post-hoc debiasing
and Visual Debias Decoding): ``(1 + a) logp(y | v, x) - a logp(y | x)`` with ``x`` the prompt without its image
placeholders (:func:`~.perturbations.no_image.strip_image_tokens`), on VCD's plausibility head (their code
applies VCD's cutoff, ``cd_beta``).

Log-probabilities, per-row weights and the floor of the subtracted branch: see :mod:`._image_contrast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..samplers.warpers import RowParam
from ._image_contrast import MAX_ALPHA, check_pair, image_contrast, image_spec, weight
from ._validation import check_range, number_range


@dataclass(frozen=True)
class VddConfig:
    # weight of the contrast against the prompt without its image
    vdd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head (the VDD code's cd_beta); 0 keeps every token
    vdd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_range("vdd_alpha", self.vdd_alpha, 0.0, MAX_ALPHA)
        check_range("vdd_beta", self.vdd_beta, 0.0, 1.0)


def vdd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    no_image_logits: torch.Tensor,  # [B, V] logits given the prompt without its image (strip_image_tokens)
    cfg: VddConfig | None = None,
    *,
    vdd_alpha: RowParam | None = None,  # per-row override of cfg.vdd_alpha
    vdd_beta: RowParam | None = None,  # per-row override of cfg.vdd_beta
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """No-image contrast, VDD (Zhang et al., 2024): ``(1 + a) logp(y | v, x) - a logp(y | x)`` on the head."""
    check_pair(image_logits, no_image_logits, "no_image_logits")
    cfg = VddConfig() if cfg is None else cfg
    alpha = weight("vdd_alpha", cfg.vdd_alpha if vdd_alpha is None else vdd_alpha, image_logits)
    beta = cfg.vdd_beta if vdd_beta is None else vdd_beta
    return image_contrast(image_logits, beta, subtracted=(alpha, no_image_logits))


SPECS = (
    image_spec(
        "vdd",
        VddConfig,
        "a VLM given the image vs. the same prompt without the image",
        "Zhang et al., 2024",
        63,
    ),
)
