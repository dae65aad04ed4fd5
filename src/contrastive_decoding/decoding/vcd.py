"""VCD (Leng et al., CVPR 2024, "Mitigating Object Hallucinations in Large Vision-Language Models through Visual
Contrastive Decoding"): ``(1 + a) logp(y | v, x) - a logp(y | v', x)`` with ``v'`` the image after forward
diffusion noise (:func:`~.perturbations.noise.diffusion_noise`), restricted to the plausibility head
``{y : p(y | v, x) >= beta * max p(. | v, x)}``; -inf elsewhere.

Log-probabilities, per-row weights and the floor of the subtracted branch: see :mod:`._image_contrast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..samplers.warpers import RowParam
from ._image_contrast import MAX_ALPHA, check_pair, image_contrast, image_spec, weight
from ._validation import check_int, check_range, choice_range, number_range
from .perturbations.noise import NOISE_SCHEDULES, NUM_DIFFUSION_STEPS, check_schedule


@dataclass(frozen=True)
class VcdConfig:
    # weight of the contrast against the noised image; 0 gives plain decoding on the head
    vcd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head: keep tokens with p(y | v, x) >= beta * max p
    vcd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))
    # diffusion step t of the noised image, 0-based out of 1000
    noise_step: int = field(default=500, metadata=number_range(0, NUM_DIFFUSION_STEPS - 1, integer=True))
    # "linear" (DDPM) or "vcd_sigmoid" (VCD's public code)
    noise_schedule: str = field(default="linear", metadata=choice_range(NOISE_SCHEDULES))

    def __post_init__(self) -> None:
        check_range("vcd_alpha", self.vcd_alpha, 0.0, MAX_ALPHA)
        check_range("vcd_beta", self.vcd_beta, 0.0, 1.0)
        check_int("noise_step", self.noise_step, 0, NUM_DIFFUSION_STEPS - 1)
        check_schedule(self.noise_schedule)


def vcd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    perturbed_logits: torch.Tensor,  # [B, V] logits given the noised image and the same prompt
    cfg: VcdConfig | None = None,
    *,
    vcd_alpha: RowParam | None = None,  # per-row override of cfg.vcd_alpha
    vcd_beta: RowParam | None = None,  # per-row override of cfg.vcd_beta
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """VCD (Leng et al., 2024): ``(1 + a) logp(y | v, x) - a logp(y | v', x)`` on the head of p(. | v, x)."""
    check_pair(image_logits, perturbed_logits, "perturbed_logits")
    cfg = VcdConfig() if cfg is None else cfg
    alpha = weight("vcd_alpha", cfg.vcd_alpha if vcd_alpha is None else vcd_alpha, image_logits)
    beta = cfg.vcd_beta if vcd_beta is None else vcd_beta
    return image_contrast(image_logits, beta, subtracted=(alpha, perturbed_logits))


SPECS = (
    image_spec(
        "vcd",
        VcdConfig,
        "a VLM given the image vs. given the image under diffusion noise",
        "Leng et al., 2024",
        60,
    ),
)
