"""RITUAL + VCD: ``(1 + a) logp(y | v, x) + alpha_pos logp(y | T(v), x) - a logp(y | v', x)`` on VCD's head.

RITUAL's score (:mod:`.ritual`) plus VCD's contrast term (:mod:`.vcd`) ``a (logp(y | v, x) - logp(y | v',
x))``: ``a = 0`` gives RITUAL (with the VCD head), ``alpha_pos = 0`` gives VCD exactly. It is the sum of both
methods' deviations from plain decoding in the RITUAL code's own parameters (``ritual_alpha_pos`` weighs the
``T(v)`` branch, ``ritual_alpha_neg`` the ``v'`` branch, whose VCD mode is ``(1 + alpha_neg) l - alpha_neg
l_neg``).

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
class RitualVcdConfig:
    # weight of the transformed-image branch
    ritual_alpha_pos: float = field(default=3.0, metadata=number_range(0.0, MAX_ALPHA))
    # weight of the contrast against the noised image
    vcd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    vcd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))  # plausibility head on p(y | v, x)
    noise_step: int = field(default=500, metadata=number_range(0, NUM_DIFFUSION_STEPS - 1, integer=True))
    noise_schedule: str = field(default="linear", metadata=choice_range(NOISE_SCHEDULES))

    def __post_init__(self) -> None:
        check_range("ritual_alpha_pos", self.ritual_alpha_pos, 0.0, MAX_ALPHA)
        check_range("vcd_alpha", self.vcd_alpha, 0.0, MAX_ALPHA)
        check_range("vcd_beta", self.vcd_beta, 0.0, 1.0)
        check_int("noise_step", self.noise_step, 0, NUM_DIFFUSION_STEPS - 1)
        check_schedule(self.noise_schedule)


def ritual_vcd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image
    transformed_logits: torch.Tensor,  # [B, V] logits given T(image)
    perturbed_logits: torch.Tensor,  # [B, V] logits given the noised image
    cfg: RitualVcdConfig | None = None,
    *,
    ritual_alpha_pos: RowParam | None = None,
    vcd_alpha: RowParam | None = None,
    vcd_beta: RowParam | None = None,
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """RITUAL + VCD: ``(1 + a) logp(y | v, x) + alpha_pos logp(y | T(v), x) - a logp(y | v', x)``.

    RITUAL's score plus VCD's contrast term ``a (logp(y | v, x) - logp(y | v', x))``, on VCD's head:
    ``vcd_alpha = 0`` is RITUAL with the VCD head, ``ritual_alpha_pos = 0`` is :func:`~.vcd.vcd_contrast`. The
    head is taken on ``p(y | v, x)``.
    """
    check_pair(image_logits, transformed_logits, "transformed_logits")
    check_pair(image_logits, perturbed_logits, "perturbed_logits")
    cfg = RitualVcdConfig() if cfg is None else cfg
    alpha_pos = weight(
        "ritual_alpha_pos",
        cfg.ritual_alpha_pos if ritual_alpha_pos is None else ritual_alpha_pos,
        image_logits,
    )
    alpha = weight("vcd_alpha", cfg.vcd_alpha if vcd_alpha is None else vcd_alpha, image_logits)
    beta = cfg.vcd_beta if vcd_beta is None else vcd_beta
    return image_contrast(
        image_logits, beta, added=(alpha_pos, transformed_logits), subtracted=(alpha, perturbed_logits)
    )


SPECS = (
    image_spec(
        "ritual_vcd",
        RitualVcdConfig,
        "both: image + transformed image - noised image",
        "Woo et al., 2024",
        62,
    ),
)
