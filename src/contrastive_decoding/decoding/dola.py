"""DoLa: Decoding by Contrasting Layers (Chuang et al., ICLR 2024).

Reference semantics (the published DoLa code and transformers <= 4.55 ``_dola_decoding`` agree on them):

- early exits are ``lm_head(hidden_states[i])`` with hidden_states[i] the output of layer i *without* the
  final norm (``early_exit_norm=True`` applies the final norm first, an option);
- candidate layers: ``"low"`` / ``"high"`` buckets (see :func:`candidate_layers`) or an explicit list;
- the premature layer is the argmax over candidates of ``0.5 * (KL(M || p_final) + KL(M || p_early))``
  averaged over the vocabulary, with ``M`` the mean distribution (what the reference's ``F.kl_div`` calls
  compute); ``layer_choice="jsd"`` uses the textbook Jensen-Shannon divergence (summed) instead;
- relative-top filtering: final log-probs below ``log(relative_top) + max`` become -inf and the premature
  log-probs there become -1e-3; score = final - premature.

Unlike transformers 4.55, which picks one premature layer for the whole batch from the batch-mean
divergence, the layer is chosen per row, so every row gets what it gets alone. Where the LM head has
post-processing (Gemma 2/3's final logit soft-capping, Cohere / Granite logit scales), early exits get it too,
on both backends (the HF backend's ``OutputHead``, vLLM's ``compute_logits``): the reference code applies the bare
``lm_head`` and had no such model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..samplers.warpers import relative_top_mask
from ._math import jensen_shannon_from_logprobs, probs_from_logprobs
from ._validation import bool_range, check_bool, check_range, choice_range, number_range
from .spec import VLLM_MODEL, MethodSpec, ScoringSupport, VllmSupport

PREMATURE_FILTER_VALUE = -1e-3
# elements of [layers, rows, vocab] per chunk of the layer choice (8 MiB of float32: cache-sized temporaries)
CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class DolaConfig:
    # "low", "high" or explicit layer indices (0 = embeddings)
    dola_layers: str | tuple[int, ...] = field(
        default="high", metadata=choice_range(("low", "high"), items=number_range(0, integer=True))
    )
    # plausibility head of the final layer
    relative_top: float = field(default=0.1, metadata=number_range(0.0, 1.0))
    # "dola": the reference divergence; "jsd": textbook JSD
    layer_choice: Literal["dola", "jsd"] = field(default="dola", metadata=choice_range(("dola", "jsd")))
    # apply the final norm to early exits (the reference does not)
    early_exit_norm: bool = field(default=False, metadata=bool_range())

    def __post_init__(self) -> None:
        layers = self.dola_layers
        if isinstance(layers, list):
            object.__setattr__(self, "dola_layers", tuple(layers))
            layers = self.dola_layers
        if isinstance(layers, str):
            if layers not in ("low", "high"):
                raise ValueError(
                    f"dola_layers must be 'low', 'high' or a list of layer indices, got {layers!r}"
                )
        elif isinstance(layers, tuple):
            if not layers or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
            ):
                raise ValueError(
                    f"dola_layers must be a non-empty list of layer indices >= 0, got {list(layers)!r}"
                )
        else:
            raise ValueError(f"dola_layers must be 'low', 'high' or a list of layer indices, got {layers!r}")
        check_range("relative_top", self.relative_top, 0.0, 1.0)
        if self.layer_choice not in ("dola", "jsd"):
            raise ValueError(f"layer_choice must be 'dola' or 'jsd', got {self.layer_choice!r}")
        check_bool("early_exit_norm", self.early_exit_norm)


def candidate_layers(
    dola_layers: str | tuple[int, ...], num_layers: int, tie_word_embeddings: bool
) -> list[int]:
    """Candidate premature layers, exactly as transformers 4.55 resolves them.

    With tied embeddings the embedding output (layer 0) is skipped: start at 2 (1 for 2-layer models).
    For N <= 40 layers: low = range(start, N // 2, 2), high = range(N // 2, N, 2); for N > 40:
    low = range(start, 20, 2), high = range(N - 20, N, 2). Explicit lists drop indices >= N.
    """
    if not tie_word_embeddings:
        start = 0
    elif num_layers > 2:
        start = 2
    elif num_layers == 2:
        start = 1
    else:
        start = 0
    if dola_layers == "low":
        if start == num_layers // 2:
            return [start]
        layers = list(range(start, num_layers // 2 if num_layers <= 40 else 20, 2))
        if not layers:
            raise ValueError(
                f"dola_layers='low' has no candidate layer for a {num_layers}-layer model with tied embeddings; "
                "pass explicit layer indices"
            )
        return layers
    if dola_layers == "high":
        return list(
            range(num_layers // 2, num_layers, 2)
            if num_layers <= 40
            else range(num_layers - 20, num_layers, 2)
        )
    if isinstance(dola_layers, str):
        raise ValueError(f"dola_layers must be 'low', 'high' or a list of layer indices, got {dola_layers!r}")
    layers = [i for i in dola_layers if i < num_layers]
    if not layers:
        raise ValueError(
            f"dola_layers {list(dola_layers)} has no layer below the model's {num_layers} layers"
        )
    return layers


def layer_divergence(
    final_logprobs: torch.Tensor,  # [B, V] log-softmax of the final layer
    early_logprobs: torch.Tensor,  # [L, B, V] log-softmax of each candidate layer
    layer_choice: str = "dola",
) -> torch.Tensor:  # [L, B]
    """Divergence between the final and each candidate layer's next-token distribution.

    ``"dola"``: ``0.5 * (mean_v KL_v(M || p_final) + mean_v KL_v(M || p_early))`` with ``M`` the mean
    distribution, the quantity the DoLa code's ``F.kl_div(log p, M)`` calls compute, written as
    ``mean_v [M log M - 0.5 M (log p_final + log p_early)]``. ``"jsd"``: the textbook Jensen-Shannon
    divergence ``0.5 * (KL(p_final || M) + KL(p_early || M))`` summed over the vocabulary.
    """
    if layer_choice != "dola":
        return jensen_shannon_from_logprobs(final_logprobs[None], early_logprobs)
    # Probabilities floored (no denormals, see _math); the log-probs in the cross term are not: where one
    # layer is confident and the other is not, M is large and log p of the unlikely side carries the divergence.
    mean_probs = 0.5 * (
        probs_from_logprobs(final_logprobs)[None] + probs_from_logprobs(early_logprobs)
    )  # [L,B,V]
    cross = mean_probs * (final_logprobs[None] + early_logprobs)  # [L, B, V]
    return (mean_probs * mean_probs.log() - 0.5 * cross).mean(-1)  # mean_probs > 0: M log M needs no xlogy


def relative_top_filter(
    final_logprobs: torch.Tensor,  # [B, V]
    premature_logprobs: torch.Tensor,  # [B, V]
    relative_top: float | torch.Tensor,  # scalar or [B]
) -> tuple[torch.Tensor, torch.Tensor]:  # final log-probs, premature log-probs, both [B, V]
    """Final log-probs below ``log(relative_top) + max`` become -inf, premature ones there -1e-3."""
    outside = ~relative_top_mask(final_logprobs, relative_top, normalized=True)  # [B, V]
    return (
        final_logprobs.masked_fill(outside, -math.inf),
        premature_logprobs.masked_fill(outside, PREMATURE_FILTER_VALUE),
    )


def select_premature_layer(
    final_logprobs: torch.Tensor,  # [B, V]
    early_logprobs: torch.Tensor,  # [L, B, V]
    layer_choice: str = "dola",
) -> torch.Tensor:  # [B] index into the L candidates
    if early_logprobs.shape[0] == 1:
        return torch.zeros(final_logprobs.shape[0], dtype=torch.long, device=final_logprobs.device)
    return layer_divergence(final_logprobs, early_logprobs, layer_choice).argmax(dim=0)


def contrast(
    final_logits: torch.Tensor,  # [B, V]
    early_logits: torch.Tensor,  # [L, B, V] one slice per candidate layer
    cfg: DolaConfig,
) -> tuple[torch.Tensor, torch.Tensor]:  # scores [B, V], chosen candidate index [B]
    """DoLa scores ``log p_final - log p_premature`` on the relative-top head, premature layer chosen per row.

    Rows go through the layer choice in chunks of at most :data:`CHUNK_ELEMENTS` elements of ``[L, rows, V]``
    (each row's arithmetic is the same, so the result is bit-identical to one pass): the divergence's ~10
    elementwise temporaries then stay in cache instead of each being a fresh ``[L, B, V]`` allocation, which on
    a CPU made the choice cost more than the early exits' LM heads (a 64-row batch: ~100 MB per temporary).
    """
    final_logprobs = final_logits.float().log_softmax(dim=-1)  # [B, V]
    num_layers, num_rows, vocab = early_logits.shape
    step = max(1, CHUNK_ELEMENTS // max(1, num_layers * vocab))
    chosen_parts, premature_parts = [], []
    for start in range(0, num_rows, step):
        early_logprobs = early_logits[:, start : start + step].float().log_softmax(dim=-1)  # [L, b, V]
        chosen = select_premature_layer(
            final_logprobs[start : start + step], early_logprobs, cfg.layer_choice
        )  # [b]
        rows = torch.arange(early_logprobs.shape[1], device=final_logits.device)
        chosen_parts.append(chosen)
        premature_parts.append(early_logprobs[chosen, rows])  # [b, V]
    chosen = torch.cat(chosen_parts)  # [B]
    premature_logprobs = torch.cat(premature_parts)  # [B, V]
    final_logprobs, premature_logprobs = relative_top_filter(
        final_logprobs, premature_logprobs, cfg.relative_top
    )
    return final_logprobs - premature_logprobs, chosen


SPECS = (
    MethodSpec(
        name="dola",
        config=DolaConfig,
        contrasts="the final layer vs. an early layer chosen per row",
        paper="Chuang et al., 2024",
        hf_function="contrastive_decoding.backends.hf.generate:dola",
        vllm=VllmSupport(VLLM_MODEL),
        # DoLa's TruthfulQA MC / FACTOR scripts sum the raw contrast with no relative-top filter
        scoring=ScoringSupport(True, choice_defaults=(("relative_top", 0.0), ("normalize", False))),
        order=30,
    ),
)
