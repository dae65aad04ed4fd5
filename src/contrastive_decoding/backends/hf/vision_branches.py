"""The branches of an image contrast and the stepper that advances them in lockstep.

A :class:`Branch` is a batch of VLM prompts with their model inputs: the image branch (the rows given to
``generate``) or a perturbed one. :class:`ImageContrastStepper` groups the branches whose prompt tokens are the
image branch's into one forward (extra rows), gives each other branch its own, drives every group with a
:class:`BranchRunner` (its own KV cache, the model's own generation hooks) and forms the scores from their
last-position logits with the method's ``combine``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from .runner import select_cache_rows

# Keys that generate() adds for its own loop; every branch rebuilds them for itself.
GENERATE_STATE_KEYS = frozenset(
    {"past_key_values", "use_cache", "position_ids", "logits_to_keep", "cache_position"}
)


@dataclass
class Branch:
    """The inputs of one branch: ``input_ids`` [B, S] and model inputs (mask, image inputs or embeds)."""

    input_ids: torch.Tensor
    inputs: dict[str, Any]

    def with_inputs(self, changed: dict[str, Any]) -> Branch:
        """The same prompt with some of its model inputs replaced (e.g. perturbed ``pixel_values``)."""
        return Branch(self.input_ids, {**self.inputs, **changed})


class BranchRunner:
    """A batch of VLM prompts with its own KV cache, advanced one token per row per step.

    It calls the model the way ``generate``'s own loop does: positions prepared by the model
    (``_prepare_position_ids_for_generation``: 3-D rotary positions for Qwen2-VL), inputs by
    ``prepare_inputs_for_generation`` (image inputs on the prefill only), and the model kwargs advanced with
    ``_update_model_kwargs_for_generation``. Zero contrast therefore gives plain ``generate``'s tokens.
    """

    def __init__(self, model: PreTrainedModel, input_ids: torch.Tensor, inputs: dict[str, Any]):
        self.model = model
        kwargs = {k: v for k, v in inputs.items() if v is not None and k not in GENERATE_STATE_KEYS}
        embeds = kwargs.get("inputs_embeds")
        batch, length = embeds.shape[:2] if embeds is not None else input_ids.shape
        self.input_ids = input_ids if embeds is None else input_ids.new_zeros((batch, 0))
        if kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones((batch, length), dtype=torch.long, device=input_ids.device)
        if "position_ids" in inspect.signature(model.forward).parameters:
            first = embeds if embeds is not None else input_ids
            kwargs["position_ids"] = model._prepare_position_ids_for_generation(first, kwargs)
        if bool((kwargs["attention_mask"] == 1).all()):
            kwargs["attention_mask"] = None  # as generate: no padding, no mask (same attention kernels)
        kwargs["past_key_values"] = DynamicCache(config=model.config)
        kwargs["use_cache"] = True
        if model._supports_logits_to_keep():
            kwargs["logits_to_keep"] = 1
        self.kwargs = kwargs
        self.outputs = None  # the latest forward's (hidden states / attentions when generate asked for them)

    def _run(self, **prepare: Any) -> torch.Tensor:  # [B, V] float32
        inputs = self.model.prepare_inputs_for_generation(self.input_ids, **prepare, **self.kwargs)
        outputs = self.model(**inputs, return_dict=True)
        self.kwargs = self.model._update_model_kwargs_for_generation(outputs, self.kwargs)
        self.outputs = outputs
        return outputs.logits[:, -1].float()

    def prefill(self) -> torch.Tensor:  # [B, V]
        return self._run(is_first_iteration=True)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens [B] -> [B, V]
        self.input_ids = torch.cat([self.input_ids, tokens[:, None].to(self.input_ids.device)], dim=-1)
        return self._run(next_sequence_length=1)


def _can_share_forward(first: Branch, other: Branch) -> bool:
    """Same prompt tokens, same kinds of inputs: the other branch can ride as extra rows."""
    if "inputs_embeds" in first.inputs or "inputs_embeds" in other.inputs:
        return False
    if first.input_ids.shape != other.input_ids.shape or not torch.equal(first.input_ids, other.input_ids):
        return False
    return set(first.inputs) == set(other.inputs)


def _concat_inputs(branches: list[Branch]) -> Branch:
    input_ids = torch.cat([b.input_ids for b in branches])
    inputs = {}
    for key, value in branches[0].inputs.items():
        if isinstance(value, torch.Tensor):
            inputs[key] = torch.cat([b.inputs[key] for b in branches])
        else:
            inputs[key] = value
    return Branch(input_ids, inputs)


class ImageContrastStepper:
    """The image branch and its perturbed branches advanced in lockstep; ``combine`` forms the scores
    from their last-position logits (image branch first)."""

    def __init__(
        self,
        model: PreTrainedModel,
        branches: list[Branch],
        combine: Callable[[list[torch.Tensor]], torch.Tensor],
    ):
        self.combine = combine
        self.batch_size = branches[0].input_ids.shape[0]
        # Group branches that can share the image branch's forward; the rest run their own.
        shared = [index for index, b in enumerate(branches) if _can_share_forward(branches[0], b)]
        groups = [shared] + [[index] for index in range(len(branches)) if index not in shared]
        self.groups = groups
        self.runners = [
            BranchRunner(model, merged.input_ids, merged.inputs)
            for merged in (_concat_inputs([branches[i] for i in group]) for group in groups)
        ]

    def _scores(self, per_runner: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits: dict[int, torch.Tensor] = {}
        for group, runner_logits in zip(self.groups, per_runner, strict=True):
            for position, index in enumerate(group):
                rows = slice(position * self.batch_size, (position + 1) * self.batch_size)
                logits[index] = runner_logits[rows]
        ordered = [logits[index].to(logits[0].device) for index in range(len(logits))]
        return self.combine(ordered), ordered[0]

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores([runner.prefill() for runner in self.runners])

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(
            [
                runner.step(tokens.repeat(len(group)))
                for group, runner in zip(self.groups, self.runners, strict=True)
            ]
        )

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        """The image branch's (its rows lead the first runner, in the caller's layout)."""
        outputs, rows = self.runners[0].outputs, slice(0, self.batch_size)
        hidden = getattr(outputs, "hidden_states", None)
        attentions = getattr(outputs, "attentions", None)
        return (
            None if hidden is None else tuple(h[rows] for h in hidden),
            None if attentions is None else tuple(a[rows] for a in attentions),
        )

    def past_key_values(self):
        return select_cache_rows(self.runners[0].kwargs["past_key_values"], slice(0, self.batch_size))
