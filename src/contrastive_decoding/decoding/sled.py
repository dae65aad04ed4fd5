"""SLED: Self Logits Evolution Decoding (Zhang et al., NeurIPS 2024).

Reference semantics (the public SLED code, github.com/JayZhang42/SLED: ``sled_greedy_decode`` in its transformers
fork and ``lm_score`` in ``sled_decoding.py``), for one row with final logits ``f`` and early-exit logits ``e_l``
of the layers ``l`` in ``sled_layers``:

1. ``K`` = the ``evolution_scale`` tokens of highest final probability;
2. for every early layer ``l`` and top token ``j``, ``c_lj = cos(softmax(e_l) - onehot(j), e_l - f)`` over the
   vocabulary: how well "layer l's logits move toward j" lines up with "how the final layer moved away from l";
3. ``w_lj = max(c_lj, 0) ** 2``; each layer's ``w_l.`` normalized to sum 1 (when not all 0) and weighted by its
   share ``sum_j w_lj / sum_lj w_lj`` of the total: the latent distribution ``P(j) = sum_l w_lj / sum_lj w_lj``
   on ``K`` (0 elsewhere; all 0 when no cosine is positive);
4. ``evolution_steps`` gradient steps of ``KL(P || softmax(h))`` on the logits, from ``h = f``:
   ``h <- h - rate_t * (softmax(h) - P)`` with ``rate_t = evolution_rate * (1 - t / evolution_steps)``;
5. the evolved scores are ``h`` on ``K`` and ``evolution_lower_bound`` everywhere else.

Early exits are ``lm_head(hidden_states[i])`` without the final norm, as SLED's fork (and DoLa's) computes them
(``early_exit_norm=True`` applies the final norm first, an option). Layers: ``"all"`` (the reference's default,
every layer ``0 .. N-1``, 0 = the embeddings), DoLa's ``"low"`` / ``"high"`` buckets, or an explicit list.

Where we differ:

- **Per row.** The reference takes the top-k of the batch's first row (``topk_indices[0]``) and sums the layer
  weights over the batch; it only runs with batch size 1. Every row here gets what it gets alone.
- **No [L, K, V] tensor.** The reference materializes ``softmax(e_l) - onehot(j)`` for every layer and top token;
  the cosine is computed here in closed form from ``p_l . d_l``, ``d_l[j]``, ``|p_l|^2`` and ``p_l[j]``
  (``|p_l - onehot(j)|^2 = |p_l|^2 - p_l[j]^2 + (1 - p_l[j])^2``), O(L V) instead of O(L K V), with each
  layer's argmax token left out of the sums exactly (saturated early exits, see :func:`layer_token_cosines`). The layer
  weighting of step 3 is summed in one division. Both agree with a literal transcription to float rounding
  (``tests/unit/test_sled_math.py``).
- **Top-k on the logits** (the reference ranks softmax probabilities: the same order unless two probabilities
  round to the same float); ``evolution_scale`` above the vocabulary size is clamped to it.
- **Steps.** The fork's generation runs one evolution step, its TruthfulQA ``lm_score`` ten with the linear decay:
  ``evolution_steps`` (default 1) covers both; multiple-choice scoring defaults to the TruthfulQA MC script's
  settings (10 steps, lower bound -100, raw scores summed, ``evolution_scale`` 50, its ``run_tfqa.py`` default).
- **Sampling.** The fork runs SLED for greedy decoding only; here the evolved scores go through the user's logits
  processors and then greedy or the shared samplers (``do_sample=True``), like every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._validation import bool_range, check_bool, check_int, check_range, choice_range, number_range
from .spec import VLLM_MODEL, MethodSpec, ScoringSupport, VllmSupport

LAYER_BUCKETS = ("all", "low", "high")


@dataclass(frozen=True)
class SledConfig:
    # step size of the logits evolution; 0 leaves the final logits as they are (on the top tokens)
    evolution_rate: float = field(default=2.0, metadata=number_range(0.0, 100.0))
    # how many top tokens of the final layer the latent distribution is estimated over
    evolution_scale: int = field(default=10, metadata=number_range(1, integer=True))
    # score of every token outside those top tokens
    evolution_lower_bound: float = field(default=-1000.0, metadata=number_range(-math.inf, 0.0))
    # "all" (0 .. N-1, 0 = embeddings), "low", "high" (DoLa's buckets) or explicit layer indices
    sled_layers: str | tuple[int, ...] = field(
        default="all", metadata=choice_range(LAYER_BUCKETS, items=number_range(0, integer=True))
    )
    # gradient steps of the evolution (the reference: 1 when generating, 10 in its TruthfulQA scoring)
    evolution_steps: int = field(default=1, metadata=number_range(1, 100, integer=True))
    # apply the final norm to early exits (the reference does not)
    early_exit_norm: bool = field(default=False, metadata=bool_range())

    def __post_init__(self) -> None:
        check_range("evolution_rate", self.evolution_rate, 0.0, 100.0)
        check_int("evolution_scale", self.evolution_scale, 1)
        check_range("evolution_lower_bound", self.evolution_lower_bound, -math.inf, 0.0)
        layers = self.sled_layers
        if isinstance(layers, list):
            object.__setattr__(self, "sled_layers", tuple(layers))
            layers = self.sled_layers
        if isinstance(layers, str):
            if layers not in LAYER_BUCKETS:
                raise ValueError(
                    f"sled_layers must be 'all', 'low', 'high' or a list of layer indices, got {layers!r}"
                )
        elif isinstance(layers, tuple):
            if not layers or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
            ):
                raise ValueError(
                    f"sled_layers must be a non-empty list of layer indices >= 0, got {list(layers)!r}"
                )
        else:
            raise ValueError(
                f"sled_layers must be 'all', 'low', 'high' or a list of layer indices, got {layers!r}"
            )
        check_int("evolution_steps", self.evolution_steps, 1, 100)
        check_bool("early_exit_norm", self.early_exit_norm)


def early_exit_layers(
    sled_layers: str | tuple[int, ...], num_layers: int, tie_word_embeddings: bool
) -> list[int]:
    """The early layers SLED evolves with: ``"all"`` is ``0 .. N-1`` (the reference's default, embeddings
    included whatever the embeddings' tying); ``"low"`` / ``"high"`` and lists as DoLa resolves them."""
    if sled_layers == "all":
        return list(range(num_layers))
    from .dola import candidate_layers

    return candidate_layers(sled_layers, num_layers, tie_word_embeddings)


def layer_token_cosines(
    final_logits: torch.Tensor,  # [B, V] float32
    early_logits: torch.Tensor,  # [L, B, V] float32
    top_ids: torch.Tensor,  # [B, K] the final layer's top tokens
    eps: float = 1e-8,
) -> torch.Tensor:  # [L, B, K]
    """``cos(softmax(e_l) - onehot(j), e_l - f)`` over the vocabulary for every layer l and top token j, in
    closed form (no [L, B, K, V] tensor); norms clamped at ``eps`` as ``torch.cosine_similarity`` does.

    With ``p = softmax(e_l)`` and ``d = e_l - f``: the dot product is ``sum_{i != j} p_i d_i + (p_j - 1) d_j``
    and the squared norm ``sum_{i != j} p_i^2 + (1 - p_j)^2``. The sums without j are the full sums minus j's
    term, except for each layer's argmax token m, whose sums are taken with m left out: an early exit with no
    final norm is often saturated (``p_m`` rounds to 1), and ``sum - p_m d_m`` would cancel to 0 there.
    """
    probs = early_logits.softmax(dim=-1)  # [L, B, V]
    diff = early_logits - final_logits[None]  # [L, B, V]
    index = top_ids[None].expand(probs.shape[0], -1, -1)  # [L, B, K]
    probs_top = probs.gather(-1, index)  # [L, B, K]
    diff_top = diff.gather(-1, index)  # [L, B, K]
    top_layer = probs.argmax(dim=-1, keepdim=True)  # [L, B, 1] each layer's own argmax m
    weighted = probs * diff  # [L, B, V]
    squares = probs * probs  # [L, B, V]
    dot_all = weighted.sum(-1, keepdim=True)  # [L, B, 1]
    sq_all = squares.sum(-1, keepdim=True)  # [L, B, 1]
    # in place: both products are ours and no longer needed whole
    dot_without_m = weighted.scatter_(-1, top_layer, 0.0).sum(-1, keepdim=True)  # [L, B, 1]
    sq_without_m = squares.scatter_(-1, top_layer, 0.0).sum(-1, keepdim=True)  # [L, B, 1]
    is_m = index == top_layer  # [L, B, K]
    dot_rest = torch.where(is_m, dot_without_m, dot_all - probs_top * diff_top)  # [L, B, K]
    sq_rest = torch.where(is_m, sq_without_m, (sq_all - probs_top.square()).clamp_min(0.0))  # [L, B, K]
    dot = dot_rest + (probs_top - 1.0) * diff_top  # [L, B, K]
    target_norm = (sq_rest + (1.0 - probs_top).square()).sqrt()  # [L, B, K]
    diff_norm = diff.norm(dim=-1, keepdim=True)  # [L, B, 1]
    return dot / (target_norm.clamp_min(eps) * diff_norm.clamp_min(eps))


def latent_distribution(
    final_logits: torch.Tensor,  # [B, V]
    early_logits: torch.Tensor,  # [L, B, V]
    evolution_scale: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # latent probabilities on the top tokens [B, K], their ids [B, K]
    """SLED's latent distribution over the final layer's ``evolution_scale`` top tokens (steps 1-3 of the module
    docstring): ``P(j) = sum_l w_lj / sum_lj w_lj`` with ``w = relu(cos) ** 2``; all 0 where no cosine is > 0."""
    final = final_logits.float()
    early = early_logits.float()
    k = min(int(evolution_scale), final.shape[-1])
    top_ids = final.topk(k, dim=-1).indices  # [B, K]
    weights = layer_token_cosines(final, early, top_ids).clamp_min(0.0).square()  # [L, B, K]
    per_token = weights.sum(0)  # [B, K]
    total = per_token.sum(-1, keepdim=True)  # [B, 1]
    latent = torch.where(total > 0, per_token / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return latent, top_ids


def evolve_logits(
    final_logits: torch.Tensor,  # [B, V]
    latent: torch.Tensor,  # [B, K] latent probabilities on top_ids
    top_ids: torch.Tensor,  # [B, K]
    evolution_rate: float,
    evolution_steps: int = 1,
) -> torch.Tensor:  # [B, V] evolved logits, every entry (the caller keeps the top tokens)
    """``evolution_steps`` steps ``h <- h - rate_t (softmax(h) - P)`` from ``h = final_logits``, with
    ``rate_t = evolution_rate * (1 - t / evolution_steps)``: gradient descent on ``KL(P || softmax(h))``."""
    target = torch.zeros_like(final_logits, dtype=torch.float32).scatter(-1, top_ids, latent)  # [B, V]
    logits = final_logits.float()
    for step in range(evolution_steps):
        rate = evolution_rate * (1 - step / evolution_steps)
        logits = logits - rate * (logits.softmax(dim=-1) - target)
    return logits


def sled_scores(
    final_logits: torch.Tensor,  # [B, V]
    early_logits: torch.Tensor,  # [L, B, V] one slice per early layer
    cfg: SledConfig,
) -> torch.Tensor:  # [B, V] float32
    """SLED's evolved scores: the evolved final logits on the top ``evolution_scale`` tokens, the lower bound
    elsewhere."""
    latent, top_ids = latent_distribution(final_logits, early_logits, cfg.evolution_scale)  # [B, K] x2
    evolved = evolve_logits(final_logits, latent, top_ids, cfg.evolution_rate, cfg.evolution_steps)  # [B, V]
    scores = torch.full_like(evolved, cfg.evolution_lower_bound)  # [B, V]
    return scores.scatter(-1, top_ids, evolved.gather(-1, top_ids))


SPECS = (
    MethodSpec(
        name="sled",
        config=SledConfig,
        contrasts="the final logits evolved toward a latent distribution estimated from the early layers",
        paper="Zhang et al., 2024",
        hf_function="contrastive_decoding.backends.hf.generate:sled",
        vllm=VllmSupport(VLLM_MODEL),
        # SLED's TruthfulQA MC script (run_tfqa.py / lm_score): 10 decaying steps, lower bound -100, the raw
        # evolved scores summed (post_softmax=False), evolution_scale 50
        scoring=ScoringSupport(
            True,
            choice_defaults=(
                ("evolution_steps", 10),
                ("evolution_lower_bound", -100.0),
                ("evolution_scale", 50),
                ("normalize", False),
            ),
        ),
        order=32,
    ),
)
