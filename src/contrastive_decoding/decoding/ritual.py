"""RITUAL (Woo et al., 2024, "RITUAL: Random Image Transformations as a Universal Anti-hallucination Lever in
LVLMs"): ``logp(y | v, x) + alpha_pos logp(y | T(v), x)`` with ``T`` one random transformation of the image
(:func:`~.perturbations.transforms.random_transform`).

Where we differ from the paper: it writes no plausibility head, but the authors' code
(``ritual_utils/ritual_sample.py``) applies VCD's head, ``ritual_beta = 0.1``, in every mode;
:class:`RitualConfig` matches that code by default and ``ritual_beta = 0`` removes the head.

Log-probabilities and per-row weights: see :mod:`._image_contrast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..samplers.warpers import RowParam
from ._image_contrast import MAX_ALPHA, check_pair, image_contrast, image_spec, weight
from ._validation import check_range, number_range


@dataclass(frozen=True)
class RitualConfig:
    # weight of the transformed-image branch
    ritual_alpha_pos: float = field(default=3.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head as in RITUAL's code; 0 keeps every token (the paper's formula)
    ritual_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_range("ritual_alpha_pos", self.ritual_alpha_pos, 0.0, MAX_ALPHA)
        check_range("ritual_beta", self.ritual_beta, 0.0, 1.0)


def ritual_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    transformed_logits: torch.Tensor,  # [B, V] logits given T(image) and the same prompt
    cfg: RitualConfig | None = None,
    *,
    ritual_alpha_pos: RowParam | None = None,  # per-row override of cfg.ritual_alpha_pos
    ritual_beta: RowParam | None = None,  # per-row override of cfg.ritual_beta
) -> torch.Tensor:  # [B, V]
    """RITUAL (Woo et al., 2024): ``logp(y | v, x) + alpha_pos logp(y | T(v), x)``.

    The paper's formula has no head; the authors' code keeps tokens with
    ``p(y | v, x) >= ritual_beta * max p`` (0.1, the default here). ``ritual_beta = 0`` gives the paper's
    head-less score (-inf only where a branch is -inf).
    """
    check_pair(image_logits, transformed_logits, "transformed_logits")
    cfg = RitualConfig() if cfg is None else cfg
    alpha_pos = weight(
        "ritual_alpha_pos",
        cfg.ritual_alpha_pos if ritual_alpha_pos is None else ritual_alpha_pos,
        image_logits,
    )
    beta = cfg.ritual_beta if ritual_beta is None else ritual_beta
    return image_contrast(image_logits, beta, added=(alpha_pos, transformed_logits))


SPECS = (
    image_spec(
        "ritual",
        RitualConfig,
        "a VLM given the image plus given a random transformation of it",
        "Woo et al., 2024",
        61,
    ),
)
