"""``SequenceRunner``: one batch of left-padded sequences of a causal LM, its KV cache, mask and positions.

Every method's decode loop is written in terms of runners (gpt-fast style): ``prefill()`` once, then
``step(tokens)`` per generated token, with the cache advanced explicitly. ``candidates(...)`` runs K
candidate next tokens per row in one forward (tree attention over the shared cache) and ``keep(...)`` keeps
one of them, which is what contrastive search needs.

Steps can run the decoder body only (``body_only=True``): the caller then applies :class:`OutputHead` to
just the hidden states it needs (DoLa stacks the final and early-exit rows in one matmul; contrastive search
projects only the chosen candidate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

ModelOutput = CausalLMOutputWithPast | BaseModelOutputWithPast


def left_pad(
    sequences: list[torch.Tensor], pad_token_id: int, length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad 1-D token tensors into ``input_ids [B, S]`` and ``attention_mask [B, S]`` (S at least
    ``length``)."""
    length = max([length] + [int(seq.numel()) for seq in sequences])
    device = sequences[0].device
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long, device=device)
    for row, seq in enumerate(sequences):
        if seq.numel():
            input_ids[row, length - seq.numel() :] = seq
            attention_mask[row, length - seq.numel() :] = 1
    return input_ids, attention_mask


def unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Inverse of :func:`left_pad`: the real tokens of each row."""
    if attention_mask is None:
        return list(input_ids)
    return [row[mask.bool()] for row, mask in zip(input_ids, attention_mask, strict=True)]


class OutputHead:
    """The model's LM head as a function of final hidden states ``[..., H] -> [..., V]`` (float32).

    Reproduces what the causal-LM ``forward`` does after the decoder: the output embeddings, then the final
    logit soft-capping (Gemma 2/3), ``logit_scale`` (Cohere) or ``logits_scaling`` (Granite) when the config
    has them. :meth:`check` compares it with the model's own logits once, so an architecture with other
    post-processing fails loudly instead of decoding with wrong scores.
    """

    def __init__(self, model: PreTrainedModel):
        self.lm_head = model.get_output_embeddings()
        if self.lm_head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
        config = model.config.get_text_config()
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.multiply = (
            getattr(config, "logit_scale", None) if config.model_type.startswith("cohere") else None
        )
        self.divide = (
            getattr(config, "logits_scaling", None) if config.model_type.startswith("granite") else None
        )
        self.model_name = type(model).__name__

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        if self.multiply is not None:
            logits = logits * self.multiply
        if self.divide is not None:
            logits = logits / self.divide
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float()

    def matches(self, last_hidden: torch.Tensor, model_logits: torch.Tensor) -> bool:
        """Whether ``self(last_hidden)`` [B, V] equals the model's own logits [B, V] at the same positions, up to
        float rounding (relative to the logits' magnitude; looser when the model's logits are not float32)."""
        return self.close(self(last_hidden), model_logits)

    @staticmethod
    def close(ours: torch.Tensor, model_logits: torch.Tensor) -> bool:
        """Whether this head's logits ``ours`` equal the model's own ``model_logits`` up to float rounding."""
        scale = float(model_logits.abs().max().clamp_min(1.0))
        tolerance = (1e-3 if model_logits.dtype == torch.float32 else 3e-2) * scale
        return torch.allclose(ours, model_logits.float(), rtol=0.0, atol=tolerance)

    def check(self, last_hidden: torch.Tensor, model_logits: torch.Tensor) -> None:
        """Raise unless ``self(last_hidden)`` [B, V] matches the model's own last-position logits [B, V]."""
        if not self.matches(last_hidden, model_logits):
            raise ValueError(
                f"{self.model_name}: its logits are not the LM head applied to the last hidden state (custom "
                "logit post-processing), which this method needs to compute itself; this architecture is "
                "not supported."
            )


# Inputs aligned with input_ids, one column per token, that transformers' generate grows by one column per new
# token (``_update_model_kwargs_for_generation``): token_type_ids repeat their last column, mm_token_type_ids get 0.
PER_TOKEN_INPUTS: dict[str, str] = {"token_type_ids": "repeat_last", "mm_token_type_ids": "zeros"}


@dataclass
class PromptInputs:
    """One prompt per row and everything the model is given with it.

    ``position_ids`` are the user's own positions (``None``: derived from the mask, as generate does);
    ``per_token`` inputs are ``[B, S]`` like ``input_ids`` (see :data:`PER_TOKEN_INPUTS`); ``constant`` inputs go
    unchanged into every forward (transformers' ``prepare_inputs_for_generation`` forwards unknown kwargs as is).
    """

    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor | None = None  # [B, S], 1 = real token
    position_ids: torch.Tensor | None = None  # [B, S]
    per_token: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, S]
    constant: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> PromptInputs:
        def move(value):
            return value.to(device) if isinstance(value, torch.Tensor) else value

        return PromptInputs(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.position_ids),
            {name: move(value) for name, value in self.per_token.items()},
            {name: move(value) for name, value in self.constant.items()},
        )


def next_per_token(name: str, values: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, 1]
    """The column transformers' generate appends to a per-token input for the next token."""
    if PER_TOKEN_INPUTS[name] == "zeros":
        return values.new_zeros((values.shape[0], 1))
    return values[:, -1:]


def mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, S]
    """Positions as generate derives them from the mask (``_prepare_position_ids_for_generation``)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


class SequenceRunner:
    """Owns the KV cache of ``input_ids [B, S]`` (left-padded) and feeds it one token per row per step.

    Positions, masks and per-token inputs advance as in transformers' own loop: the mask gains a 1 and the
    position ``last + 1`` per new token, ``token_type_ids`` repeat their last column.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor | PromptInputs,  # [B, S]
        attention_mask: torch.Tensor | None = None,  # [B, S], 1 = real token
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> None:
        prompt = input_ids if isinstance(input_ids, PromptInputs) else PromptInputs(input_ids, attention_mask)
        self.model = model
        self.decoder = model.base_model
        self.input_ids = prompt.input_ids
        mask = prompt.attention_mask
        self.attention_mask = torch.ones_like(self.input_ids) if mask is None else mask.long()
        # Like transformers' generate: no padding -> no mask, which keeps the same (causal) attention kernels.
        self.has_padding = bool((self.attention_mask == 0).any())
        self.prompt_positions = (
            prompt.position_ids if prompt.position_ids is not None else mask_positions(self.attention_mask)
        )  # [B, S]
        self.last_position = self.prompt_positions[:, -1:]  # [B, 1]
        self.per_token = dict(prompt.per_token)  # name -> [B, S] (prefill), then [B, 1] (the next column)
        self.constant = dict(prompt.constant)
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self.cache = DynamicCache(config=model.config)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def _mask_2d(self) -> torch.Tensor | None:
        return self.attention_mask if self.has_padding else None

    def _forward(self, body_only: bool, num_logits: int, **inputs) -> ModelOutput:
        common = dict(
            past_key_values=self.cache,
            use_cache=True,
            output_hidden_states=self.output_hidden_states,
            return_dict=True,
            **self.constant,
            **inputs,
        )
        if self.output_attentions:
            common["output_attentions"] = True
        if body_only:
            return self.decoder(**common)
        return self.model(logits_to_keep=num_logits, **common)

    def _next_per_token(self) -> dict[str, torch.Tensor]:  # name -> [B, 1]
        self.per_token = {name: next_per_token(name, values) for name, values in self.per_token.items()}
        return self.per_token

    def _grow_mask(self) -> None:
        self.attention_mask = torch.cat(
            [self.attention_mask, self.attention_mask.new_ones((self.batch_size, 1))], -1
        )

    def prefill(self, body_only: bool = False) -> ModelOutput:
        """Run the prompt; ``logits`` (full model) holds the last position only: ``[B, 1, V]``."""
        return self._forward(
            body_only,
            1,
            input_ids=self.input_ids,
            attention_mask=self._mask_2d(),
            position_ids=self.prompt_positions,
            **self.per_token,
        )

    def step(self, tokens: torch.Tensor, body_only: bool = False) -> ModelOutput:  # tokens [B]
        """Append one token per row; ``logits`` (full model) is ``[B, 1, V]``."""
        self._grow_mask()
        self.last_position = self.last_position + 1  # [B, 1]
        return self._forward(
            body_only,
            1,
            input_ids=tokens.view(-1, 1),
            attention_mask=self._mask_2d(),
            position_ids=self.last_position,
            **self._next_per_token(),
        )

    def candidates(self, candidate_ids: torch.Tensor, body_only: bool = False) -> ModelOutput:  # [B, K]
        """Run K alternative next tokens per row in one forward; each sees the context, none sees another.

        The K candidates share the position of the next token; a 4-D mask lets candidate k attend to the
        real context tokens and to itself only. Full-model ``logits`` are ``[B, K, V]``; attentions (when asked)
        ``[B, heads, K, S + K]``. Call :meth:`keep` next.
        """
        num_candidates = candidate_ids.shape[1]
        context_len = self.attention_mask.shape[1]
        dtype = self.model.dtype
        allowed_context = self.attention_mask.bool()[:, None, None, :].expand(
            -1, 1, num_candidates, -1
        )  # [B,1,K,S]
        allowed_self = torch.eye(num_candidates, dtype=torch.bool, device=candidate_ids.device)
        allowed_self = allowed_self[None, None].expand(self.batch_size, 1, -1, -1)  # [B, 1, K, K]
        allowed = torch.cat([allowed_context, allowed_self], dim=-1)  # [B, 1, K, S + K]
        mask_4d = torch.zeros(allowed.shape, dtype=dtype, device=candidate_ids.device)
        mask_4d = mask_4d.masked_fill(~allowed, torch.finfo(dtype).min)
        position_ids = (self.last_position + 1).expand(-1, num_candidates)  # [B, K]
        if self.cache.get_seq_length() != context_len:
            raise RuntimeError("KV cache and attention mask are out of step")
        per_token = {
            name: values.expand(-1, num_candidates) for name, values in self._next_per_token().items()
        }  # [B, K]: every candidate is the next token
        return self._forward(
            body_only,
            num_candidates,
            input_ids=candidate_ids,
            attention_mask=mask_4d,
            position_ids=position_ids,
            **per_token,
        )

    def keep(self, chosen: torch.Tensor, num_candidates: int) -> None:  # chosen [B] in [0, K)
        """Keep the chosen candidate's keys/values, drop the others: the cache grows by exactly one token."""
        rows = torch.arange(self.batch_size, device=chosen.device)
        for layer in self.cache.layers:
            kept_keys = layer.keys[:, :, -num_candidates:][rows, :, chosen].unsqueeze(2)  # [B, H, 1, D]
            kept_values = layer.values[:, :, -num_candidates:][rows, :, chosen].unsqueeze(2)
            layer.crop(-num_candidates)
            layer.update(kept_keys, kept_values)
        self._grow_mask()
        self.last_position = self.last_position + 1


def select_cache_rows(cache: DynamicCache, rows: slice, drop_columns: int = 0) -> DynamicCache:
    """Keep ``rows`` of a cache (in place) and drop its first ``drop_columns`` positions: the main rows of a
    stacked batch, in the layout of the prompt the caller gave (the stacking padded it on the left)."""
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", False) or layer.keys is None or layer.keys.numel() == 0:
            continue
        length = layer.get_seq_length()  # a sliding layer keeps only its window of these
        start = max(0, drop_columns - (length - layer.keys.shape[-2]))
        layer.keys = layer.keys[rows, :, start:]
        layer.values = layer.values[rows, :, start:]
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length -= drop_columns
    return cache


def last_logits(outputs: CausalLMOutputWithPast) -> torch.Tensor:  # [B, V] float32
    return outputs.logits[:, -1, :].float()
