"""The math the image-contrast methods share (:mod:`.vcd`, :mod:`.ritual`, :mod:`.ritual_vcd`, :mod:`.vdd`).

Every score is computed on log-probabilities ``logp = log_softmax(logits)`` in float32, shapes ``[B, V]``, and
restricted to the plausibility head ``{y : p(y | v, x) >= beta * max p(. | v, x)}`` (-inf elsewhere) of the
branch given the image ``v`` and the prompt ``x``:

    (1 + a) logp(y | v, x) + a_pos logp(y | T(v), x) - a logp(y | v', x)

with each method keeping the terms it has (:func:`image_contrast`). The published codes combine raw logits;
log-probabilities differ from them by a per-row constant, so greedy choices, the plausibility head and the
sampling distribution are the same.

Every weight and head threshold may be given per row: each method's contrast function takes a ``[B]`` tensor as
the keyword override of the same name, e.g. ``vcd_contrast(l, l_noisy, cfg, vcd_alpha=torch.tensor([0.0,
1.0]))``. A weight of 0 leaves its branch out exactly, even where that branch has -inf log-probabilities.
Subtracted branches are floored at :data:`~._math.LOG_PROB_FLOOR`, so a token that is impossible under the
perturbed input gets a large finite bonus, never +inf.

The perturbed inputs themselves (noise, transformations, the prompt without its image) are in
:mod:`.perturbations`.
"""

from __future__ import annotations

import math

import torch

from ..samplers.warpers import RowParam, relative_top_mask
from ._math import LOG_PROB_FLOOR
from ._validation import check_range
from .spec import IMAGE, VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

MAX_ALPHA = 100.0

Weight = float | torch.Tensor  # a python float or a [B, 1] float32 column (see weight)


def check_pair(first: torch.Tensor, second: torch.Tensor, second_name: str) -> None:
    """Raise unless ``first`` (``image_logits``) is a float ``[B, V]`` tensor and ``second`` has its shape."""
    if first.dim() != 2 or not first.is_floating_point():
        raise ValueError(f"image_logits must be a float tensor [batch, vocab], got {tuple(first.shape)}")
    if second.shape != first.shape:
        raise ValueError(
            f"{second_name} must have the shape of image_logits {tuple(first.shape)}, "
            f"got {tuple(second.shape)}"
        )


def weight(name: str, value: RowParam, like: torch.Tensor) -> Weight:
    """A weight in [0, MAX_ALPHA] as a python float or a [B, 1] float32 tensor on ``like``'s device."""
    if isinstance(value, torch.Tensor):
        if value.shape != (like.shape[0],):
            raise ValueError(
                f"{name} must be a number or a tensor of shape [{like.shape[0]}], got {value.shape}"
            )
        column = value.to(device=like.device, dtype=torch.float32).reshape(-1, 1)  # [B, 1]
        ok = (column >= 0) & (column <= MAX_ALPHA)
        if not bool(ok.all()):
            raise ValueError(f"{name} must be in [0, {MAX_ALPHA:g}], got {column[~ok][0].item()}")
        return column
    check_range(name, value, 0.0, MAX_ALPHA)
    return float(value)


def _scaled(weight: Weight, logprobs: torch.Tensor) -> torch.Tensor:  # [B, V]
    """``weight * logprobs`` with weight 0 giving exact zeros (no 0 * -inf = nan)."""
    if isinstance(weight, torch.Tensor):
        return torch.where(weight == 0, torch.zeros_like(logprobs), weight * logprobs)
    return torch.zeros_like(logprobs) if weight == 0 else weight * logprobs


def _head(scores: torch.Tensor, image_logprobs: torch.Tensor, beta: RowParam) -> torch.Tensor:  # [B, V]
    if isinstance(beta, torch.Tensor):
        beta = beta.to(device=image_logprobs.device, dtype=torch.float64)
    head = relative_top_mask(image_logprobs, beta, normalized=True)  # [B, V]
    return scores.masked_fill(~head, -math.inf)


def _logprobs(logits: torch.Tensor) -> torch.Tensor:  # [B, V]
    return logits.float().log_softmax(dim=-1)


def image_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    beta: RowParam,  # plausibility head on p(. | v, x): a number or [B]
    *,
    added: tuple[Weight, torch.Tensor] | None = None,  # (a_pos, [B, V] logits given T(v))
    subtracted: tuple[Weight, torch.Tensor] | None = None,  # (a, [B, V] logits given v' or no image)
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """``(1 + a) logp(y | v, x) + a_pos logp(y | T(v), x) - a logp(y | v', x)`` on the head, each branch term
    present when given (without ``subtracted`` the image term has weight 1). Weights come from :func:`weight`."""
    with_image = _logprobs(image_logits)  # [B, V]
    scores = with_image if subtracted is None else _scaled(1.0 + subtracted[0], with_image)  # [B, V]
    if added is not None:
        scores = scores + _scaled(added[0], _logprobs(added[1]))
    if subtracted is not None:
        scores = scores - _scaled(subtracted[0], _logprobs(subtracted[1]).clamp_min(LOG_PROB_FLOOR))
    return _head(scores, with_image, beta)


_IMAGE_NOT_ON_VLLM = (
    "needs a twin request with its own multimodal inputs (the perturbed image, or none) scheduled with the main "
    "one; the pair scheduler makes text-only twins"
)
_IMAGE_NOT_SCORED = (
    "it contrasts images, and scores text only through generate (score() takes text-only methods); for yes/no "
    "image questions (POPE) generate with the image method instead"
)


def image_spec(name: str, config: type, contrasts: str, paper: str, order: int) -> MethodSpec:
    """The spec of an image method: needs an image, runs on the HF backend (``backends.hf.vision:<name>``)."""
    return MethodSpec(
        name=name,
        config=config,
        contrasts=contrasts,
        paper=paper,
        hf_function=f"contrastive_decoding.backends.hf.vision:{name}",
        vllm=VllmSupport(VLLM_NO, _IMAGE_NOT_ON_VLLM),
        scoring=ScoringSupport(False, _IMAGE_NOT_SCORED),
        needs=frozenset({IMAGE}),
        order=order,
    )
