"""The model inputs ``generate`` hands a drop-in, and the one way methods stack several prompts per row.

``generate`` passes the callables what its own loop would give the model (``model_kwargs``): the attention
mask, positions it derived from the mask, ``token_type_ids`` and any other input the model's ``forward``
accepts, plus its loop state (an empty cache, ``use_cache``, ``logits_to_keep``, the ``output_*`` flags).
:func:`prompt_inputs` sorts them into a :class:`~.runner.PromptInputs` so that every input reaches the model
(or one clear error names the input a method cannot carry).

Methods that contrast each prompt with K variants of it (CAD's context-free prompt, condition contrast's
condition-dropped prompts, layer fusion's induced / refocus prompts) run the main rows and the variant rows in
one batch of ``(1 + K) * B`` rows: :func:`stack_prompts` builds it (left padding, masks, positions, per-token
inputs) and remembers where the main rows sit, so their outputs can be handed back in the caller's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from .runner import PER_TOKEN_INPUTS, PromptInputs, left_pad, mask_positions

# generate's own loop state: rebuilt by every runner (an empty cache, no logits beyond the last position) or
# read from the generation config (the output flags).
LOOP_STATE_KEYS = frozenset(
    {
        "past_key_values",
        "use_cache",
        "logits_to_keep",
        "output_attentions",
        "output_hidden_states",
        "cache_position",
    }
)


def prompt_inputs(method: str, input_ids: torch.Tensor, model_kwargs: dict[str, Any]) -> PromptInputs:
    """Sort generate's ``model_kwargs`` into what the runners feed the model.

    - ``attention_mask``; ``position_ids`` only when they are not the ones generate derives from the mask;
    - per-token inputs (``token_type_ids``, ``mm_token_type_ids``), grown per step as generate grows them;
    - any other input, forwarded unchanged to every forward, as ``prepare_inputs_for_generation`` does.

    A cache that already holds tokens (continuing from ``past_key_values``) is refused by name.
    """
    mask = model_kwargs.get("attention_mask")
    cache = model_kwargs.get("past_key_values")
    if cache is not None and cache.get_seq_length() > 0:
        raise ValueError(
            f"{method} starts from the prompt: past_key_values that already hold {cache.get_seq_length()} tokens "
            "cannot be continued; pass the whole sequence as input_ids without past_key_values"
        )
    positions = model_kwargs.get("position_ids")
    if positions is not None:
        derived = mask_positions(mask if mask is not None else torch.ones_like(input_ids))
        if positions.shape[-1] == derived.shape[-1] and torch.equal(positions.expand_as(derived), derived):
            positions = None  # generate's own positions, which the runners derive the same way
        elif positions.shape != input_ids.shape:
            raise ValueError(
                f"{method}: position_ids must be [batch, sequence] like input_ids {list(input_ids.shape)}, "
                f"got {list(positions.shape)}"
            )
    per_token, constant = {}, {}
    for name, value in model_kwargs.items():
        if name in LOOP_STATE_KEYS or name in ("attention_mask", "position_ids") or value is None:
            continue
        if isinstance(value, dict) and not value:  # e.g. the empty mm_encoder_outputs of a text-only prompt
            continue
        if name in PER_TOKEN_INPUTS:
            if value.shape[:2] != input_ids.shape:
                raise ValueError(
                    f"{method}: {name} must be [batch, sequence] like input_ids {list(input_ids.shape)}, "
                    f"got {list(value.shape)}"
                )
            per_token[name] = value
        else:
            constant[name] = value
    return PromptInputs(input_ids, mask, positions, per_token, constant)


def check_model_accepts(model: PreTrainedModel, prompt: PromptInputs, method: str, role: str) -> None:
    """A clear error when ``model`` (e.g. the amateur) does not take an input the prompt carries."""
    accepted = set(_forward_parameters(model))
    for name in [*prompt.per_token, *prompt.constant]:
        if name not in accepted:
            raise ValueError(
                f"{method}: the {role} ({type(model).__name__}) does not take {name}, which the prompt carries"
            )


def _forward_parameters(model: PreTrainedModel) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)


@dataclass
class Variant:
    """K x B variant rows of a method (one block of B rows per variant), named as the method's arguments are:
    ``name`` is the argument prefix (``context_free`` for ``context_free_input_ids`` / ``..._attention_mask`` /
    ``..._token_type_ids``)."""

    name: str
    input_ids: torch.Tensor  # [B, S_k]
    attention_mask: torch.Tensor | None = None
    per_token: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StackedPrompts:
    """``blocks`` blocks of ``batch_size`` rows, left-padded to one length: block 0 is the main rows."""

    prompt: PromptInputs  # [blocks * B, S]
    batch_size: int
    blocks: int
    main_offset: (
        int  # columns of left padding the stacking added to the main rows (their own length is S - this)
    )

    def block(self, tensor: torch.Tensor, index: int) -> torch.Tensor:
        """Rows of block ``index`` of a ``[blocks * B, ...]`` tensor."""
        return tensor[index * self.batch_size : (index + 1) * self.batch_size]

    @property
    def main_rows(self) -> slice:
        return slice(0, self.batch_size)

    def main_outputs(self, outputs: Any, prefill: bool) -> tuple[tuple | None, tuple | None]:
        """The main rows' (hidden states, attentions) of a forward over the stacked batch, in the caller's
        layout: the stacking's extra left padding is dropped from the prompt positions."""
        rows, offset = self.main_rows, self.main_offset
        hidden = getattr(outputs, "hidden_states", None)
        attentions = getattr(outputs, "attentions", None)
        if hidden is not None:
            hidden = tuple(h[rows, offset:] if prefill else h[rows] for h in hidden)
        if attentions is not None:
            attentions = tuple(
                a[rows, :, offset:, offset:] if prefill else a[rows, :, :, offset:] for a in attentions
            )
        return hidden, attentions


def variant_per_token(
    method: str, main: PromptInputs, variant: Variant, main_input: str = "input_ids"
) -> dict[str, torch.Tensor]:
    """The variant prompt's per-token inputs, checked against the main prompt's: each input the main rows
    carry must come for the variant too (``<variant>_token_type_ids``), except all-zero ``mm_token_type_ids``
    (text only), which are zero for the variant as well."""
    batch = main.input_ids.shape[0]
    if variant.input_ids.shape[0] != batch:
        raise ValueError(
            f"{variant.name}_input_ids has {variant.input_ids.shape[0]} rows but the prompt batch has {batch}"
        )
    per_token = dict(variant.per_token)
    for name, values in main.per_token.items():
        if name in per_token:
            continue
        if PER_TOKEN_INPUTS[name] == "zeros" and not bool(values.any()):
            per_token[name] = values.new_zeros(variant.input_ids.shape)
            continue
        raise ValueError(
            f"{method}: {main_input} come with {name}; pass {variant.name}_{name} for "
            f"{variant.name}_input_ids too (the variant prompt needs its own)"
        )
    for name, values in per_token.items():
        if name not in main.per_token:
            raise ValueError(
                f"{method}: {variant.name}_{name} is given but {main_input} have no {name}; pass {name} "
                "to generate too, or drop it"
            )
        if values.shape[:2] != variant.input_ids.shape:
            raise ValueError(
                f"{method}: {variant.name}_{name} must be shaped like {variant.name}_input_ids "
                f"{list(variant.input_ids.shape)}, got {list(values.shape)}"
            )
    return per_token


def stack_prompts(
    method: str,
    main: PromptInputs,
    variants: Sequence[Variant],
    pad_token_id: int,
    *,
    main_input: str = "input_ids",
) -> StackedPrompts:
    """One batch: the B main rows, then each variant's B rows, left-padded to a common length.

    Each row keeps its own tokens (padding dropped, then left-padded again), mask and positions, so it is
    computed as it would be alone. Per-token inputs of the main rows must come for every variant too (they
    are the variant prompt's own, e.g. ``context_free_token_type_ids``); ``mm_token_type_ids`` that are all 0
    (text only) are 0 for the variants as well. Without variants the prompt is used as it is.
    """
    if not variants:
        return StackedPrompts(main, main.input_ids.shape[0], 1, 0)
    if main.position_ids is not None:
        raise ValueError(
            f"{method} runs variant prompts of other lengths in the same batch; custom position_ids are not "
            "supported (drop them: positions follow the attention mask)"
        )
    if main.constant:
        names = ", ".join(sorted(main.constant))
        raise ValueError(
            f"{method} stacks other prompts with {main_input} in one batch and cannot give them {names}: "
            "drop it, or decode without the contrast"
        )
    batch = main.input_ids.shape[0]
    blocks = [Variant("main", main.input_ids, main.attention_mask, dict(main.per_token))]
    for variant in variants:
        per_token = variant_per_token(method, main, variant, main_input)
        blocks.append(Variant(variant.name, variant.input_ids, variant.attention_mask, per_token))

    def real(block: Variant, values: torch.Tensor) -> list[torch.Tensor]:
        if block.attention_mask is None:
            return list(values)
        return [row[keep.bool()] for row, keep in zip(values, block.attention_mask, strict=True)]

    # At least the main prompt's width, so the main rows only gain padding on the left (their outputs are then
    # the caller's layout after dropping `main_offset` columns).
    main_length = main.input_ids.shape[1]
    rows = [row for block in blocks for row in real(block, block.input_ids)]
    input_ids, attention_mask = left_pad(rows, pad_token_id, main_length)  # [blocks * B, S]
    per_token_stacked = {}
    for name in main.per_token:
        rows = [row for block in blocks for row in real(block, block.per_token[name])]
        per_token_stacked[name], _ = left_pad(rows, 0, main_length)
    stacked = PromptInputs(
        input_ids,
        attention_mask if bool((attention_mask == 0).any()) else None,
        None,
        per_token_stacked,
        {},
    )
    return StackedPrompts(stacked, batch, len(blocks), input_ids.shape[1] - main_length)
