"""Condition contrast for ``model.generate``: the prompt and its K condition-dropped versions in one batch.

    model.generate(**inputs, custom_generate=contrastive_decoding.hf.condition_contrast,
                   condition_free_input_ids=[ids_without_condition_1, ids_without_condition_2],
                   condition_alpha=1.0, return_dict_in_generate=True)

With ``return_dict_in_generate=True`` the output also holds ``condition_effects`` [B, K]: per row, the JSD between
the next-token distributions with and without condition k, averaged over the row's generated steps (up to its
EOS): the hallucination-anticipation signal (the smallest is the overshadowed condition).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from ...decoding import condition as condition_math
from ...samplers.seeding import SeedArg
from .generate import _prepare, variant_rows
from .inputs import Variant, stack_prompts
from .loop import NO_OUTPUTS, OutputRequest, run_decode_loop
from .runner import PromptInputs, last_logits
from .steppers import StackedStepper


@dataclass
class ConditionContrastOutput(GenerateDecoderOnlyOutput):
    """``generate``'s output plus ``condition_effects`` [B, K] (mean JSD per marked condition, in nats)."""

    condition_effects: torch.Tensor | None = None


class ConditionStepper(StackedStepper):
    """Rows: the B full prompts, then K blocks of B condition-dropped prompts; one forward, one cache."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        dropped: list[Variant],  # K blocks of B rows
        cfg: condition_math.ConditionContrastConfig,
        pad_token_id: int,
        eos_token_ids: set[int],
        requested: OutputRequest = NO_OUTPUTS,
    ):
        stacked = stack_prompts("condition_contrast", prompt, dropped, pad_token_id)  # [(1 + K) B, S]
        super().__init__(model, stacked, requested)
        self.cfg = cfg
        self.num_conditions = len(dropped)
        device = prompt.input_ids.device
        self.effect_sums = torch.zeros((self.num_conditions, self.batch_size), device=device)  # [K, B]
        self.steps = torch.zeros(self.batch_size, device=device)  # [B] steps counted per row
        self.active = torch.ones(self.batch_size, dtype=torch.bool, device=device)  # [B] before its EOS
        self.eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)
        self.targets: list[torch.Tensor] = []  # per step: [B] the contrasted condition (-1: all)

    def _scores(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        logits = last_logits(outputs)  # [(1 + K) B, V]
        full = logits[: self.batch_size]  # [B, V]
        dropped = logits[self.batch_size :].reshape(self.num_conditions, self.batch_size, -1)  # [K, B, V]
        effects = condition_math.condition_effects(full, dropped)  # [K, B]
        weight = self.active.float()
        self.effect_sums += effects * weight
        self.steps += weight
        mean = self.effect_sums / self.steps.clamp_min(1.0)
        scores, target = condition_math.condition_contrast(full, dropped, mean, self.cfg)
        self.targets.append(target)
        return scores, full

    @property
    def mean_effects(self) -> torch.Tensor:  # [B, K]
        return (self.effect_sums / self.steps.clamp_min(1.0)).T

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.prefill())

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eos.numel():
            self.active &= ~torch.isin(tokens, self.eos)
        return self._scores(self.step(tokens))


def condition_contrast(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    condition_free_input_ids: list[torch.Tensor] | torch.Tensor | None = None,
    condition_free_attention_mask: list[torch.Tensor | None] | torch.Tensor | None = None,
    condition_free_token_type_ids: list[torch.Tensor] | torch.Tensor | None = None,
    condition_alpha: float = 1.0,
    condition_target: str = "weakest",
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> Any:
    """Condition contrast: ``(1 + condition_alpha) l(y|x) - condition_alpha l(y|x without condition k*)``.

    ``condition_free_input_ids``: one left-padded ``[B, S_k]`` tensor per marked condition (a list, or a
    ``[K, B, S]`` tensor), the prompt without that condition, tokenized like ``input_ids``. ``k*`` is per row the
    condition whose removal moved the distribution least so far (``condition_target="weakest"``), or every
    condition, averaged (``"all"``). With ``token_type_ids``, give each condition-dropped prompt its own in
    ``condition_free_token_type_ids`` (one per entry of ``condition_free_input_ids``)."""
    cfg = condition_math.ConditionContrastConfig(
        condition_alpha=condition_alpha, condition_target=condition_target
    )
    if condition_free_input_ids is None or len(condition_free_input_ids) == 0:
        raise ValueError(
            "condition_contrast needs condition_free_input_ids: one tokenized prompt without each marked "
            "condition (at least one marked condition)"
        )
    ids_list = list(condition_free_input_ids)
    masks = _per_condition(condition_free_attention_mask, len(ids_list), "condition_free_attention_mask")
    token_types = _per_condition(
        condition_free_token_type_ids, len(ids_list), "condition_free_token_type_ids"
    )
    dropped = [
        variant_rows("condition_free", input_ids, ids, mask, types)
        for ids, mask, types in zip(ids_list, masks, token_types, strict=True)
    ]
    controls, prompt = _prepare(
        model,
        "condition_contrast",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    config = controls.generation_config
    pad_token_id = 0 if config.pad_token_id is None else int(config.pad_token_id)
    eos = config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    stepper = ConditionStepper(model, prompt, dropped, cfg, pad_token_id, eos_ids, controls.outputs)
    result = run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)
    if isinstance(result, GenerateDecoderOnlyOutput):
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
        return ConditionContrastOutput(**fields, condition_effects=stepper.mean_effects)
    return result


def _per_condition(values, count: int, name: str) -> list:
    """One entry per condition (a list, or a tensor stacked over conditions), or ``None`` for each."""
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{name} must have one entry per condition_free_input_ids entry")
    return values
