"""``rerank`` on the Hugging Face backend: RankGen's over-generate-and-rerank / beam search over sampled
segments (the method and its math: :mod:`contrastive_decoding.decoding.rerank`; the scorers:
:mod:`contrastive_decoding.rerank_scorers`).

    model.generate(**inputs, custom_generate=contrastive_decoding.hf.rerank, do_sample=True, top_p=0.9,
                   num_samples=8, scorer="minilm", lm_tokenizer=tokenizer, max_new_tokens=64)

Each round runs every sample of every unfinished beam of every prompt as one batch of rows (the prompt and
the beam's tokens so far, repeated ``num_samples`` times) through the shared decode loop, with the user's
processors and sampling warpers and each row's own seed; the rows are then scored and the best beams kept.
Each round prefills its rows afresh (no cache is carried between rounds). Candidates end at an EOS token or at
their round's length: ``stop_strings`` are refused, and a custom stopping criterion that stops a row without an
EOS is not seen as its end.

``lm_tokenizer``: the language model's tokenizer, which the text scorers (minilm, rankgen) decode the prompts
and candidates with; when not given it is loaded from the model's local checkpoint directory. (transformers
keeps a ``tokenizer=`` argument for itself, so it never reaches this function.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria
from transformers.generation.utils import GenerateDecoderOnlyOutput

from ...decoding import rerank as rerank_math
from ...rerank_scorers import Candidates, Scorer, load_scorer
from ...samplers import row_seeds
from ...samplers.seeding import SeedArg
from ...vocabulary import checkpoint_tokenizer
from .generate import GenerateResult, _prepare
from .loop import LoopControls, run_decode_loop
from .runner import PromptInputs, unpad
from .steppers import PlainStepper


@dataclass
class Beam:
    tokens: torch.Tensor  # [T] what the beam generated so far (up to and with its EOS)
    finished: bool = False
    score: float = 0.0


def rerank(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    num_samples: int = rerank_math.RerankConfig.num_samples,
    beam_width: int = rerank_math.RerankConfig.beam_width,
    segment_length: int | None = rerank_math.RerankConfig.segment_length,
    scorer: str = rerank_math.RerankConfig.scorer,
    scorer_path: str | None = rerank_math.RerankConfig.scorer_path,
    scorer_alpha: float = rerank_math.RerankConfig.scorer_alpha,
    lm_tokenizer: Any = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """Over-generate and rerank (``beam_width=1``, ``segment_length=None``) or RankGen's beam search: keep the
    ``beam_width`` best of ``num_samples`` sampled ``segment_length``-token continuations per beam per round,
    rated by ``scorer`` (``"minilm"``, ``"rankgen"`` with ``scorer_path``, ``"contrastive_search"`` with
    ``scorer_alpha``, its penalty weight). Needs ``do_sample=True``.

    Returns the best beam of each prompt (right-padded with ``pad_token_id``); with
    ``return_dict_in_generate`` only ``sequences`` is filled (the per-step scores, hidden states and cache
    of the candidate rounds are not returned)."""
    cfg = rerank_math.RerankConfig(
        num_samples=num_samples,
        beam_width=beam_width,
        segment_length=segment_length,
        scorer=scorer,
        scorer_path=scorer_path,
        scorer_alpha=scorer_alpha,
    )
    controls, prompt = _prepare(
        model,
        "rerank",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    _check_supported(controls, prompt)
    search_scorer = load_scorer(cfg, model) if cfg.ranks else None
    tokenizer = None
    if search_scorer is not None and search_scorer.reads_text:
        tokenizer = lm_tokenizer or checkpoint_tokenizer(getattr(model.config, "_name_or_path", None))
        if tokenizer is None:
            raise ValueError(
                f"rerank's {cfg.scorer} scorer reads text: pass lm_tokenizer=<the model's tokenizer> (the "
                "model's checkpoint directory has none)"
            )
    sequences = rerank_rows(model, prompt, controls, cfg, search_scorer, tokenizer)
    if controls.streamer is not None:
        controls.streamer.put(sequences[:, input_ids.shape[1] :].cpu())
        controls.streamer.end()
    if controls.generation_config.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(sequences=sequences)
    return sequences


def _check_supported(controls: LoopControls, prompt: PromptInputs) -> None:
    config = controls.generation_config
    if not config.do_sample:
        raise ValueError(
            "rerank ranks sampled candidates; do_sample=False is not supported: pass do_sample=True (RankGen "
            "samples with top_p=0.9)"
        )
    if (config.num_return_sequences or 1) > 1:
        raise ValueError(
            f"rerank returns the best beam of each prompt; num_return_sequences={config.num_return_sequences} "
            "is not supported"
        )
    if getattr(config, "stop_strings", None):
        raise ValueError(
            "rerank's candidates end at an EOS token or at their length; stop_strings are not supported"
        )
    if config.return_dict_in_generate:
        asked = [
            name
            for name in ("output_scores", "output_logits", "output_hidden_states", "output_attentions")
            if getattr(config, name, False)
        ]
        if asked:
            raise ValueError(
                f"rerank returns sequences only; {', '.join(asked)} (per-step outputs of its candidate "
                "rounds) are not supported"
            )
    extra = [
        *(["position_ids"] if prompt.position_ids is not None else []),
        *prompt.per_token,
        *prompt.constant,
    ]
    if extra:
        raise ValueError(
            f"rerank repeats and extends the prompt rows each round and does not carry {', '.join(extra)}: "
            "drop it (positions follow the attention mask)"
        )


def _eos_ids(config: GenerationConfig) -> set[int]:
    eos = config.eos_token_id
    if eos is None:
        return set()
    return {int(token) for token in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _until_eos(tokens: torch.Tensor, eos: set[int]) -> tuple[torch.Tensor, bool]:
    """The tokens up to and with the first EOS, and whether there was one."""
    for index, token in enumerate(tokens.tolist()):
        if token in eos:
            return tokens[: index + 1], True
    return tokens, False


def rerank_rows(
    model: PreTrainedModel,
    prompt: PromptInputs,  # [B, C] left-padded prompts
    controls: LoopControls,
    cfg: rerank_math.RerankConfig,
    scorer: Scorer | None,
    tokenizer: Any = None,
) -> torch.Tensor:  # [B, C + T] the best beam of each prompt, right-padded
    config = controls.generation_config
    input_ids = prompt.input_ids
    batch, prompt_width = input_ids.shape
    device = input_ids.device
    prompt_mask = (
        prompt.attention_mask.long() if prompt.attention_mask is not None else torch.ones_like(input_ids)
    )  # [B, C]
    pad_token_id = config.pad_token_id
    pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
    eos = _eos_ids(config)
    max_new_tokens = (config.max_length or prompt_width) - prompt_width
    if max_new_tokens < 1:
        return input_ids
    seeds = row_seeds(controls.seed, batch)  # one per prompt, or None (the global RNG)
    width, samples = cfg.beam_width, cfg.num_samples
    empty = input_ids.new_empty((0,))
    beams = [[Beam(empty) for _ in range(width)] for _ in range(batch)]
    prefixes = None
    if scorer is not None and scorer.reads_text:
        prefixes = [
            tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in unpad(input_ids, prompt_mask)
        ]

    generated = 0
    for length in rerank_math.round_lengths(max_new_tokens, cfg.segment_length):
        slots = [[w for w, beam in enumerate(row) if not beam.finished] for row in beams]  # [B][W']
        owners = [(b, w, j) for b in range(batch) for w in slots[b] for j in range(samples)]  # one per row
        if not owners:
            break
        rows = torch.tensor([b for b, _, _ in owners], device=device)  # [R]
        grown = torch.stack([beams[b][w].tokens for b, w, _ in owners]) if generated else None  # [R, g]
        ids = input_ids[rows] if grown is None else torch.cat([input_ids[rows], grown], dim=1)  # [R, C+g]
        mask = torch.cat([prompt_mask[rows], torch.ones_like(ids[:, prompt_width:])], dim=1)  # [R, C+g]
        row_seeds_ = None if seeds is None else rerank_math.candidate_seeds(seeds, slots, samples)  # [R]
        candidate_ids = _sample_round(model, ids, mask, controls, length, generated, row_seeds_)  # [R, C+g+t]
        new = candidate_ids[:, ids.shape[1] :]  # [R, t]
        table = torch.full((batch, width, samples), -torch.inf)  # [B, W, S]
        for b, row in enumerate(beams):
            for w, beam in enumerate(row):
                if beam.finished:
                    table[b, w, 0] = beam.score
        candidates: list[Beam] = []
        for index, (b, w, _) in enumerate(owners):
            tokens, ended = _until_eos(new[index], eos)
            candidates.append(Beam(torch.cat([beams[b][w].tokens, tokens]), ended))
        new_mask = _real_mask(new, candidates, generated)  # [R, t]
        scores = (
            _score(
                scorer, candidates, owners, prefixes, tokenizer, candidate_ids, mask, new_mask, prompt_width
            )
            if scorer is not None
            else torch.zeros(len(owners))
        )  # [R]
        by_owner = {}
        for index, (b, w, j) in enumerate(owners):
            table[b, w, j] = scores[index]
            candidates[index].score = float(scores[index])
            by_owner[(b, w, j)] = candidates[index]
        beam_index, sample_index, _ = rerank_math.choose_beams(table, width)  # [B, W] each
        generated += length
        beams = [
            [
                beams[b][w] if beams[b][w].finished else by_owner[(b, w, j)]
                for w, j in zip(beam_index[b].tolist(), sample_index[b].tolist(), strict=True)
            ]
            for b in range(batch)
        ]
        for row in beams:
            for beam in row:
                beam.finished = beam.finished or beam.tokens.numel() >= max_new_tokens
        if all(beam.finished for row in beams for beam in row):
            break

    best = [row[0].tokens for row in beams]
    longest = max(int(tokens.numel()) for tokens in best)
    out = torch.full((batch, prompt_width + longest), pad_token_id, dtype=input_ids.dtype, device=device)
    out[:, :prompt_width] = input_ids
    for b, tokens in enumerate(best):
        out[b, prompt_width : prompt_width + tokens.numel()] = tokens
    return out


def _sample_round(
    model: PreTrainedModel,
    ids: torch.Tensor,  # [R, C + g] prompt and beam so far
    mask: torch.Tensor,  # [R, C + g]
    controls: LoopControls,
    length: int,
    generated: int,
    seeds: list[int] | None,
) -> torch.Tensor:  # [R, C + g + t], t <= length
    """``length`` more tokens per row, sampled by the shared loop with the user's processors; seeded rows
    draw at their output positions ``generated`` onwards, as if the round had never been split."""
    config = copy.copy(controls.generation_config)
    config.max_new_tokens = length
    config.max_length = ids.shape[1] + length
    config.return_dict_in_generate = False  # the rows' tokens only
    criteria = StoppingCriteriaList([*controls.stopping_criteria, MaxLengthCriteria(ids.shape[1] + length)])
    round_controls = LoopControls(controls.logits_processor, criteria, config, None, seeds)
    stepper = PlainStepper(model, PromptInputs(ids, mask if bool((mask == 0).any()) else None))
    with torch.no_grad():
        return run_decode_loop(ids, stepper, round_controls, mask, first_position=generated)


def _real_mask(new: torch.Tensor, candidates: list[Beam], generated: int) -> torch.Tensor:  # [R, t]
    """1 for the tokens each candidate generated this round (up to its EOS), 0 for the padding after."""
    kept = torch.tensor([beam.tokens.numel() - generated for beam in candidates], device=new.device)  # [R]
    return (torch.arange(new.shape[1], device=new.device)[None, :] < kept[:, None]).long()


def _score(
    scorer: Scorer,
    candidates: list[Beam],
    owners: list[tuple[int, int, int]],
    prefixes: list[str] | None,
    tokenizer: Any,
    candidate_ids: torch.Tensor,  # [R, C + g + t]
    mask: torch.Tensor,  # [R, C + g]
    new_mask: torch.Tensor,  # [R, t]
    prompt_width: int,  # C
) -> torch.Tensor:  # [R]
    texts = (
        [tokenizer.decode(beam.tokens.tolist(), skip_special_tokens=True) for beam in candidates]
        if scorer.reads_text
        else []
    )
    return scorer(
        Candidates(
            prefixes=prefixes or [],
            texts=texts,
            prompt_index=[b for b, _, _ in owners],
            sequences=candidate_ids,
            attention_mask=torch.cat([mask, new_mask], dim=1),  # [R, C + g + t]
            continuation_length=candidate_ids.shape[1] - prompt_width,
        )
    ).float()
