"""The decode loop shared by every method of the Hugging Face backend.

A method supplies a *stepper* (see :class:`Stepper`): the scores of the next token before the user's
processors, a way to choose the token (default: argmax or a draw), and how to advance its model(s).
The loop owns everything transformers' ``generate`` users expect: logits processors, stopping criteria
(max length, EOS, custom), padding of finished rows, streamers, and ``return_dict_in_generate`` outputs
(scores, logits, the main model's hidden states / attentions per step, its cache).

Processors and stopping criteria see each row's own history, never its left padding
(:class:`RowHistories`): a padded row gets what it gets alone.

Tokens are chosen by :func:`contrastive_decoding.samplers.select_tokens` (the vLLM pair processor's function
too), after the processors, which hold the sampling warpers. Without a ``seed`` sampled rows draw from the
global torch RNG, the same tokens as transformers' ``_sample``; with one, row ``b``'s draw at output position
``t`` is keyed on (its seed, t) (:mod:`contrastive_decoding.samplers.seeding`), so it does not depend on the
batch.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.logits_process import (
    ExponentialDecayLengthPenalty,
    ForcedEOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
)
from transformers.generation.stopping_criteria import MaxLengthCriteria
from transformers.generation.utils import GenerateDecoderOnlyOutput

from ...samplers import SamplingConfig, row_seeds, select_tokens
from ...samplers.seeding import SeedArg, check_seed
from .sampling import (
    SamplingLogitsWarper,
    sampling_config_from_generation_config,
    strip_hf_sampling_warpers,
    warper_position,
)


class Stepper(Protocol):
    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill; return (method scores [B, V], raw model logits [B, V]) for the first new token."""

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> torch.Tensor | None:
        """Pick the next tokens [B] from processed scores, or None to let the loop argmax / sample
        (``select_tokens``)."""

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the chosen tokens [B]; return the next (method scores, raw logits)."""

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        """The main model's (hidden states, attentions) of the forward behind the latest scores, in transformers'
        per-step format (one tensor per layer, ``[B, new positions, H]`` / ``[B, heads, new, total]``); only
        called when :class:`OutputRequest` asked for them."""

    def past_key_values(self) -> Any:
        """The main model's cache after the last step, covering ``sequences[:, :-1]`` (only called when asked)."""


@dataclass(frozen=True)
class OutputRequest:
    """Which per-step model outputs ``return_dict_in_generate`` asks for; steppers compute only these."""

    hidden_states: bool = False
    attentions: bool = False
    past_key_values: bool = False

    @classmethod
    def from_generation_config(cls, config: GenerationConfig) -> OutputRequest:
        if not config.return_dict_in_generate:
            return cls()
        return cls(
            hidden_states=bool(config.output_hidden_states),
            attentions=bool(config.output_attentions),
            past_key_values=config.use_cache is not False,
        )


NO_OUTPUTS = OutputRequest()


@dataclass
class LoopControls:
    """What transformers' ``generate`` prepared, in the form the loop uses."""

    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    generation_config: GenerationConfig
    streamer: object | None = None
    seed: SeedArg = None  # None: the global RNG; an int for every prompt, or one per prompt / row

    @property
    def outputs(self) -> OutputRequest:
        return OutputRequest.from_generation_config(self.generation_config)

    @classmethod
    def from_generate(
        cls,
        logits_processor: LogitsProcessorList | None,
        stopping_criteria: StoppingCriteriaList | None,
        generation_config: GenerationConfig,
        streamer: object | None = None,
        seed: SeedArg = None,
        top_n_sigma: float | None = None,
    ) -> LoopControls:
        """Replace transformers' sampling warpers by ours (same math, shared with the vLLM backend).

        ``top_n_sigma`` (transformers has no warper for it): the ``custom_generate`` keyword argument, None to
        read ``generation_config.top_n_sigma`` when set."""
        check_seed(seed)
        processors, position = strip_hf_sampling_warpers(LogitsProcessorList(logits_processor or []))
        sampling = sampling_config_from_generation_config(generation_config, top_n_sigma)
        if sampling.do_sample and position is None and sampling != SamplingConfig(do_sample=True):
            position = warper_position(processors)  # e.g. top_n_sigma alone: transformers built no warper
        if sampling.do_sample and position is not None:
            processors.insert(position, SamplingLogitsWarper(sampling))
        return cls(processors, stopping_criteria or StoppingCriteriaList(), generation_config, streamer, seed)

    def draw_configs(self, batch_size: int) -> SamplingConfig | list[SamplingConfig]:
        """What ``select_tokens`` needs once the processors have warped: greedy or sampled, and each row's seed."""
        if not self.generation_config.do_sample:
            return SamplingConfig()
        seeds = row_seeds(self.seed, batch_size, self.generation_config.num_return_sequences or 1)
        if seeds is None:
            return SamplingConfig(do_sample=True)
        return [SamplingConfig(do_sample=True, seed=seed) for seed in seeds]


def generate_streamer() -> object | None:
    """The ``streamer`` given to ``model.generate``.

    transformers 5.x passes a callable ``custom_generate`` only the kwargs named in its signature that are
    not in ``_sample``'s, so ``streamer`` (a named argument of ``generate``) never reaches it. We read it
    from the calling ``generate`` frame; ``generate`` itself already streamed the prompt.
    """
    frame = inspect.currentframe()
    try:
        caller = frame.f_back if frame is not None else None
        while caller is not None:
            if caller.f_code.co_name == "generate" and "custom_generate" in caller.f_locals:
                return caller.f_locals.get("streamer")
            caller = caller.f_back
        return None
    finally:
        del frame


class RowHistories:
    """Each row's own history (its prompt without padding, then what it generated), for processors and stopping
    criteria.

    Rows with the same amount of prompt padding form a group; the processors run once per group on the
    group's unpadded ids ``[G, own length]`` and scores ``[G, V]``, so a repetition penalty never counts a pad
    token, a min-length rule counts the row's own length, and so on: every row gets what it gets alone. An
    unpadded batch is one group, called once with the ids as they are (transformers' own call).

    What generate computed from the padded prompt length is moved to each group's own length: the prompt
    length of ``min_new_tokens`` / ``exponential_decay_length_penalty`` / ``begin_suppress_tokens``, and
    ``max_length`` / ``min_length`` when they came from ``max_new_tokens`` / ``min_new_tokens``. The batch index
    given to ``prefix_allowed_tokens_fn`` stays the row's index in the whole batch. Other processors are
    called once per group per step (a stateful user processor sees each group in turn).
    """

    def __init__(
        self,
        input_ids: torch.Tensor,  # [B, S] the prompt
        attention_mask: torch.Tensor | None,  # [B, S]
        controls: LoopControls,
    ) -> None:
        self.controls = controls
        self.prompt_length = input_ids.shape[1]
        self.groups: list[_Group] | None = None
        if attention_mask is None or bool(attention_mask.all()):
            return
        mask = attention_mask.to(input_ids.device).bool()
        pads = (~mask).sum(-1)  # [B]
        config = controls.generation_config
        self.groups = []
        for pad in sorted(set(pads.tolist())):
            rows = (pads == pad).nonzero().squeeze(1)  # [G]
            columns = mask[rows].nonzero()[:, 1].view(len(rows), -1)  # [G, S - pad] real prompt positions
            left_padded = bool((columns == torch.arange(pad, self.prompt_length, device=mask.device)).all())
            self.groups.append(
                _Group(
                    rows=rows,
                    prompt_columns=None if left_padded else columns,
                    pad=pad,
                    processors=_for_group(controls.logits_processor, pad, rows, config, self.prompt_length),
                    criteria=_for_group(controls.stopping_criteria, pad, rows, config, self.prompt_length),
                )
            )

    def _history(self, group: _Group, input_ids: torch.Tensor) -> torch.Tensor:  # [G, own length]
        ids = input_ids[group.rows]
        if group.prompt_columns is None:
            return ids[:, group.pad :]
        prompt = ids[:, : self.prompt_length].gather(1, group.prompt_columns)
        return torch.cat([prompt, ids[:, self.prompt_length :]], dim=1)

    def process(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # [B, V]
        if self.groups is None:
            return self.controls.logits_processor(input_ids, scores)
        processed: torch.Tensor | None = None
        for group in self.groups:
            out = group.processors(self._history(group, input_ids), scores[group.rows])
            if processed is None:
                processed = out.new_empty((scores.shape[0], *out.shape[1:]))
            processed[group.rows] = out
        return processed

    def stop(self, input_ids: torch.Tensor, scores: tuple | None) -> torch.Tensor:  # [B] bool
        if self.groups is None:
            return self.controls.stopping_criteria(input_ids, scores)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for group in self.groups:
            done[group.rows] = group.criteria(self._history(group, input_ids), scores).to(done.device)
        return done


@dataclass
class _Group:
    rows: torch.Tensor  # [G] row indices
    prompt_columns: (
        torch.Tensor | None
    )  # [G, S - pad] positions of the real prompt tokens (None: left padding)
    pad: int
    processors: LogitsProcessorList
    criteria: StoppingCriteriaList


def _for_group(objects, pad: int, rows: torch.Tensor, config: GenerationConfig, prompt_length: int):
    """Copies of the processors / criteria whose lengths generate measured on the padded prompt, moved to the
    group's own prompt length; the others as they are."""
    if pad == 0 and not any(isinstance(o, PrefixConstrainedLogitsProcessor) for o in objects):
        return objects
    max_from_prompt = config.max_new_tokens is not None or (
        # generate's default when neither is set: max_length = prompt + 20 new tokens
        config.max_length is not None and config.max_length - prompt_length == _DEFAULT_NEW_TOKENS
    )
    min_from_prompt = config.min_new_tokens is not None
    moved = type(objects)()
    for item in objects:
        shifted = item
        if isinstance(item, MinNewTokensLengthLogitsProcessor):
            shifted = _with(item, prompt_length_to_skip=item.prompt_length_to_skip - pad)
        elif isinstance(item, ExponentialDecayLengthPenalty):
            shifted = _with(item, regulation_start=item.regulation_start - pad)
        elif isinstance(item, SuppressTokensAtBeginLogitsProcessor):
            shifted = _with(item, begin_index=item.begin_index - pad)
        elif isinstance(item, MinLengthLogitsProcessor) and min_from_prompt:
            shifted = _with(item, min_length=item.min_length - pad)
        elif isinstance(item, (ForcedEOSTokenLogitsProcessor, MaxLengthCriteria)) and max_from_prompt:
            shifted = _with(item, max_length=item.max_length - pad)
        elif isinstance(item, PrefixConstrainedLogitsProcessor):
            shifted = _with(
                item, _prefix_allowed_tokens_fn=_batch_index(item._prefix_allowed_tokens_fn, rows)
            )
        moved.append(shifted)
    return moved


def _batch_index(function, rows: torch.Tensor):
    """``prefix_allowed_tokens_fn`` called with the row's index in the whole batch, not in its group."""
    batch_rows = rows.tolist()
    return lambda index, ids: function(batch_rows[index], ids)


_DEFAULT_NEW_TOKENS = 20  # GenerationConfig's default max_length, which generate counts from the prompt


def _with(item, **attributes):
    item = copy.copy(item)
    for name, value in attributes.items():
        setattr(item, name, value)
    return item


def run_decode_loop(
    input_ids: torch.Tensor,  # [B, S] the prompt as given to generate (left-padded)
    stepper: Stepper,
    controls: LoopControls,
    attention_mask: torch.Tensor | None = None,  # [B, S] the prompt's mask (None: no padding)
    first_position: int = 0,
) -> torch.Tensor | GenerateDecoderOnlyOutput:
    """Decode until every row stops; ``first_position``: the output position of the first new token (the
    number of tokens the rows generated before ``input_ids`` was handed over, which keys seeded draws; rerank
    continues its beams from there)."""
    config = controls.generation_config
    draw = controls.draw_configs(input_ids.shape[0])  # warpers off: the processors already warped
    prompt_width = input_ids.shape[1]
    pad_token_id = config._pad_token_tensor
    has_eos_stopping = any(hasattr(criteria, "eos_token_id") for criteria in controls.stopping_criteria)
    if has_eos_stopping and pad_token_id is None:
        raise ValueError("pad_token_id must be set when generation can stop at an EOS token")
    return_dict = bool(config.return_dict_in_generate)
    scores: tuple[torch.Tensor, ...] | None = () if return_dict and config.output_scores else None
    raw_logits: tuple[torch.Tensor, ...] | None = () if return_dict and config.output_logits else None
    requested = controls.outputs
    hidden_states: tuple | None = () if requested.hidden_states else None
    attentions: tuple | None = () if requested.attentions else None
    histories = RowHistories(input_ids, attention_mask, controls)

    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # [B]
    method_scores, logits = stepper.start()
    while True:
        if hidden_states is not None or attentions is not None:
            step_hidden, step_attentions = stepper.model_outputs()
            if hidden_states is not None:
                hidden_states += (step_hidden,)
            if attentions is not None:
                attentions += (step_attentions,)
        processed = histories.process(input_ids, method_scores.to(input_ids.device))  # [B, V]
        if scores is not None:
            scores += (processed,)
        if raw_logits is not None:
            raw_logits += (logits,)
        next_tokens = stepper.choose(input_ids, processed)
        if next_tokens is None:
            position = first_position + input_ids.shape[1] - prompt_width
            next_tokens = select_tokens(processed, draw, positions=position)  # [B]
        if has_eos_stopping:
            next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        if controls.streamer is not None:
            controls.streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~histories.stop(input_ids, scores)
        if not bool(unfinished.any()):
            break
        method_scores, logits = stepper.advance(next_tokens)

    if controls.streamer is not None:
        controls.streamer.end()
    if return_dict:
        return GenerateDecoderOnlyOutput(
            sequences=input_ids,
            scores=scores,
            logits=raw_logits,
            attentions=attentions,
            hidden_states=hidden_states,
            past_key_values=stepper.past_key_values() if requested.past_key_values else None,
        )
    return input_ids
