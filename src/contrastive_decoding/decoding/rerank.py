"""Over-generate and rerank, and RankGen's beam search over sampled segments (Krishna et al., 2022, "RankGen:
Improving Text Generation with Large Ranking Models"; code: martiansideofthemoon/rankgen,
``rankgen/rankgen_generator.py``).

Each prompt keeps ``beam_width`` beams (its continuations so far). One round: every unfinished beam samples
``num_samples`` continuations of ``segment_length`` tokens (the model's own sampling, with the user's sampling
parameters and processors); a scorer rates each candidate (the beam's text plus its new segment) against the
prompt; the ``beam_width`` best of all candidates of the prompt (pooled over its beams, finished beams
included with their score) become the beams of the next round. Rounds go on until every beam has ended (EOS)
or reached ``max_new_tokens``; the best beam is the output.

- ``beam_width=1`` with ``segment_length=None`` (one round of ``max_new_tokens``) is over-generate and rerank:
  ``num_samples`` samples, the best by the scorer (RankGen's ``overgenerate_rerank``);
- RankGen's best setting in the paper: ``beam_width=2, num_samples=10, segment_length=20``, nucleus sampling
  ``top_p=0.9``;
- ``num_samples=1, beam_width=1`` is plain sampling (no scorer is loaded).

Scorers (:mod:`contrastive_decoding.rerank_scorers`): ``"rankgen"``, a RankGen encoder (a T5 encoder and a
projection; score = dot product of the vectors of ``"pre " + prefix`` and ``"suffi " + continuation``) loaded
from the local checkpoint ``scorer_path``; ``"minilm"`` (the offline default), the cosine similarity of the
all-MiniLM-L6-v2 embeddings of the prefix and the continuation; ``"contrastive_search"``, the LM's own
contrastive-search score of the candidate's tokens (:func:`candidate_contrastive_scores`), its weight
``scorer_alpha`` (contrastive search's ``penalty_alpha``; named apart because transformers' ``generate`` takes a
``penalty_alpha`` as a request for its own contrastive search).

Sampling is inherent: the candidates are samples, so ``do_sample=False`` is refused (with one sample per beam
every candidate of a greedy run would be the same text and there would be nothing to rank). Seeded runs
reproduce: sample ``j`` of beam slot ``w`` of a prompt seeded ``s`` draws with seed ``s + w * num_samples + j``
at its output positions (:func:`candidate_seeds`), so ``num_samples=1, beam_width=1`` samples exactly what plain
seeded sampling samples, and a prompt gets what it gets alone in any batch.

Where we differ from RankGen's code:

- the candidates' tokens are kept as token ids between rounds (RankGen decodes each segment, concatenates the
  texts and re-tokenizes ``prefix + text`` for the next round, which can re-segment the words); the text a
  scorer sees is the decoding of the whole continuation's ids;
- a finished beam keeps the score it was chosen with (RankGen scores it again with the new candidates each
  round: the same number with a deterministic scorer);
- lengths are counted per prompt (RankGen's ``total_generated_tokens`` is never reset between contexts, so
  its later contexts get shorter rounds);
- ties are broken by the lower (beam, sample) index (a stable sort; ``torch.topk`` leaves ties unspecified).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._validation import (
    check_int,
    check_range,
    check_text,
    choice_range,
    did_you_mean,
    number_range,
    text_range,
)
from .contrastive_search import contrastive_scores
from .spec import VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

SCORER_NAMES = ("minilm", "rankgen", "contrastive_search")
TEXT_SCORERS = ("minilm", "rankgen")  # the ones that read text (and take a scorer_path)


@dataclass(frozen=True)
class RerankConfig:
    # candidates sampled per beam per round (RankGen's num_samples; N of over-generate and rerank)
    num_samples: int = field(default=4, metadata=number_range(1, 1000, integer=True))
    # beams kept after each round (1: over-generate and rerank when there is one round)
    beam_width: int = field(default=1, metadata=number_range(1, 100, integer=True))
    # tokens per round; None: one round of max_new_tokens
    segment_length: int | None = field(
        default=None, metadata=number_range(1, 100_000, integer=True, nullable=True)
    )
    # what rates a candidate against the prompt
    scorer: str = field(default="minilm", metadata=choice_range(SCORER_NAMES))
    # local checkpoint directory of the scorer (rankgen: required; minilm: instead of the packaged model)
    scorer_path: str | None = field(default=None, metadata=text_range("a local directory", nullable=True))
    # the contrastive_search scorer's weight of the degeneration penalty (its penalty_alpha)
    scorer_alpha: float = field(default=0.6, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_int("num_samples", self.num_samples, 1, 1000)
        check_int("beam_width", self.beam_width, 1, 100)
        if self.segment_length is not None:
            check_int("segment_length", self.segment_length, 1, 100_000)
        if self.scorer not in SCORER_NAMES:
            raise ValueError(
                f"scorer must be one of {', '.join(SCORER_NAMES)}, got {self.scorer!r}."
                f"{did_you_mean(str(self.scorer), SCORER_NAMES)}"
            )
        check_text("scorer_path", self.scorer_path, nullable=True)
        if self.scorer_path is not None and self.scorer not in TEXT_SCORERS:
            raise ValueError(
                f"scorer_path is for the {' / '.join(TEXT_SCORERS)} scorers; the {self.scorer} scorer is the "
                "language model itself: drop scorer_path"
            )
        check_range("scorer_alpha", self.scorer_alpha, 0.0, 1.0)

    @property
    def ranks(self) -> bool:
        """Whether there is anything to rank (more than one candidate per round)."""
        return self.num_samples * self.beam_width > 1


def round_lengths(max_new_tokens: int, segment_length: int | None) -> list[int]:
    """How many tokens each round samples: ``segment_length`` per round, the last one cut to fit."""
    check_int("max_new_tokens", max_new_tokens, 1)
    step = max_new_tokens if segment_length is None else segment_length
    return [min(step, max_new_tokens - start) for start in range(0, max_new_tokens, step)]


def candidate_seeds(
    prompt_seeds: Sequence[int], slots: Sequence[Sequence[int]], num_samples: int
) -> list[int]:
    """The seed of each candidate row: sample ``j`` of beam slot ``w`` of prompt ``b`` gets
    ``prompt_seeds[b] + w * num_samples + j``; rows in the order (prompt, slot in ``slots[b]``, sample)."""
    return [
        seed + slot * num_samples + sample
        for seed, prompt_slots in zip(prompt_seeds, slots, strict=True)
        for slot in prompt_slots
        for sample in range(num_samples)
    ]


def choose_beams(
    scores: torch.Tensor,  # [B, W, S] a score per (beam, sample); -inf: no candidate there
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # beam [B, width], sample [B, width], score [B, width]
    """The ``width`` best candidates of each prompt, pooled over its beams (RankGen's ``topk`` over all the
    candidates of a context), best first; ties go to the lower (beam, sample) index.

    A finished beam enters the table once (its score at sample 0, -inf at the others). A row must have at
    least ``width`` finite scores (every round has: each beam contributes one or more candidates)."""
    if scores.dim() != 3:
        raise ValueError(f"scores must be [prompts, beams, samples], got {tuple(scores.shape)}")
    batch, beams, samples = scores.shape
    if not 1 <= width <= beams * samples:
        raise ValueError(f"width must be in [1, {beams * samples}], got {width}")
    flat = scores.reshape(batch, beams * samples)  # [B, W*S]
    if bool((torch.isfinite(flat).sum(-1) < width).any()):
        raise ValueError(f"every prompt needs at least {width} scored candidates")
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[:, :width]  # [B, width]
    return order // samples, order % samples, flat.gather(1, order)


def candidate_contrastive_scores(
    token_probs: torch.Tensor,  # [R, T] probability of each candidate token given all before it
    hidden: torch.Tensor,  # [R, C + T, H] last hidden states of prompt and candidate
    attention_mask: torch.Tensor,  # [R, C + T] 1: a real token (prompt left-padded, candidate right-padded)
    penalty_alpha: float,
) -> torch.Tensor:  # [R]
    """The contrastive-search score of whole candidates: per candidate token ``t`` (the last T columns),
    ``(1 - alpha) p(x_t | x_<t) - alpha max_{j < t} cos(h_t, h_j)`` over the real tokens before it (prompt and
    earlier candidate tokens), averaged over the candidate's real tokens (Su & Collier's step score, here of
    tokens already chosen)."""
    rows, tokens = token_probs.shape
    width = hidden.shape[1]
    context = width - tokens
    unit = hidden / hidden.norm(dim=-1, keepdim=True)  # [R, C+T, H]
    cosine = torch.matmul(unit[:, context:], unit.transpose(1, 2))  # [R, T, C+T]
    columns = torch.arange(width, device=hidden.device)  # [C+T]
    before = columns[None, :] < (context + torch.arange(tokens, device=hidden.device))[:, None]  # [T, C+T]
    real = attention_mask.bool()  # [R, C+T]
    # masked_fill, not an additive -inf: a padded position's hidden state can be NaN
    penalty = cosine.masked_fill(~(before[None] & real[:, None, :]), -math.inf).max(dim=-1).values  # [R, T]
    per_token = contrastive_scores(token_probs.to(penalty.dtype), penalty, penalty_alpha)  # [R, T]
    counted = real[:, context:]  # [R, T]
    return per_token.masked_fill(~counted, 0.0).sum(-1) / counted.sum(-1).clamp_min(1)


SPECS = (
    MethodSpec(
        name="rerank",
        config=RerankConfig,
        contrasts="sampled continuations with each other, ranked by their fit to the prompt (a scorer)",
        paper="Krishna et al., 2022",
        hf_function="contrastive_decoding.backends.hf.rerank:rerank",
        vllm=VllmSupport(
            VLLM_NO,
            "its rounds (sample N, score, keep the best beams, sample again from them) are a loop around the "
            "engine with a scorer model beside it, which the request-at-a-time vLLM backend does not run yet",
        ),
        scoring=ScoringSupport(
            False,
            "it chooses among sampled continuations and defines no distribution over next tokens. Score with "
            "'plain' (the model's own log-likelihood) or a contrastive method.",
        ),
        needs_sampling=True,
        order=15,
    ),
)
