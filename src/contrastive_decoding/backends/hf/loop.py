"""The decode loop shared by every method of the Hugging Face backend.

A method supplies a *stepper* (see :class:`Stepper`): the scores of the next token before the user's
processors, a way to choose the token (default: argmax or a draw), and how to advance its model(s).
The loop owns everything transformers' ``generate`` users expect: logits processors, stopping criteria
(max length, EOS, custom), padding of finished rows, streamers, and ``return_dict_in_generate`` outputs.

Tokens are chosen by :func:`contrastive_decoding.samplers.select_tokens` (the vLLM pair processor's function
too), after the processors, which hold the sampling warpers. Without a ``seed`` sampled rows draw from the
global torch RNG, the same tokens as transformers' ``_sample``; with one, row ``b``'s draw at output position
``t`` is keyed on (its seed, t) (:mod:`contrastive_decoding.samplers.seeding`), so it does not depend on the
batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from ...samplers import SamplingConfig, row_seeds, select_tokens
from ...samplers.seeding import SeedArg, check_seed
from .sampling import (
    SamplingLogitsWarper,
    sampling_config_from_generation_config,
    strip_hf_sampling_warpers,
)


class Stepper(Protocol):
    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill; return (method scores [B, V], raw model logits [B, V]) for the first new token."""

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> torch.Tensor | None:
        """Pick the next tokens [B] from processed scores, or None to let the loop argmax / sample
        (``select_tokens``)."""

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the chosen tokens [B]; return the next (method scores, raw logits)."""


@dataclass
class LoopControls:
    """What transformers' ``generate`` prepared, in the form the loop uses."""

    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList
    generation_config: GenerationConfig
    streamer: object | None = None
    seed: SeedArg = None  # None: the global RNG; an int for every prompt, or one per prompt / row

    @classmethod
    def from_generate(
        cls,
        logits_processor: LogitsProcessorList | None,
        stopping_criteria: StoppingCriteriaList | None,
        generation_config: GenerationConfig,
        streamer: object | None = None,
        seed: SeedArg = None,
    ) -> LoopControls:
        """Replace transformers' sampling warpers by ours (same math, shared with the vLLM backend)."""
        check_seed(seed)
        processors, position = strip_hf_sampling_warpers(LogitsProcessorList(logits_processor or []))
        sampling = sampling_config_from_generation_config(generation_config)
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


def run_decode_loop(
    input_ids: torch.Tensor,  # [B, S] the prompt as given to generate (left-padded)
    stepper: Stepper,
    controls: LoopControls,
) -> torch.Tensor | GenerateDecoderOnlyOutput:
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

    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # [B]
    method_scores, logits = stepper.start()
    while True:
        processed = controls.logits_processor(input_ids, method_scores.to(input_ids.device))  # [B, V]
        if scores is not None:
            scores += (processed,)
        if raw_logits is not None:
            raw_logits += (logits,)
        next_tokens = stepper.choose(input_ids, processed)
        if next_tokens is None:
            next_tokens = select_tokens(processed, draw, positions=input_ids.shape[1] - prompt_width)  # [B]
        if has_eos_stopping:
            next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        if controls.streamer is not None:
            controls.streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~controls.stopping_criteria(input_ids, scores)
        if not bool(unfinished.any()):
            break
        method_scores, logits = stepper.advance(next_tokens)

    if controls.streamer is not None:
        controls.streamer.end()
    if return_dict:
        return GenerateDecoderOnlyOutput(sequences=input_ids, scores=scores, logits=raw_logits)
    return input_ids
