"""Multi-layer fusion contrast for ``model.generate`` (see :mod:`contrastive_decoding.decoding.layer_fusion`).

    # the amateur is the model itself under a hallucination-inducing instruction (its own rows in the batch)
    model.generate(**inputs, custom_generate=contrastive_decoding.hf.layer_fusion,
                   amateur_input_ids=induced["input_ids"], amateur_attention_mask=induced["attention_mask"])
    # or a smaller model with the same tokenizer, given the same prompt
    model.generate(**inputs, custom_generate=contrastive_decoding.hf.layer_fusion, amateur_model=small)

``refocus_input_ids`` (the prompt after a truthfulness instruction) with ``refocus_weight > 0`` adds the refocus
branch. Each step runs the decoder bodies once and projects the final and the lower-layer states (through the
final norm) of every row in one LM-head matmul per model.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from ...decoding import layer_fusion as fusion_math
from ...samplers.seeding import SeedArg
from .early_exit import check_dola_architecture, final_norm
from .generate import _expand_rows, _prepare, shared_vocabulary_size
from .loop import run_decode_loop
from .runner import OutputHead, SequenceRunner, last_logits, left_pad, unpad


class _FusionModel:
    """One model's runner over some rows, giving (final, lower-layer) logits of each row's last position."""

    def __init__(self, model: PreTrainedModel, rows: list[torch.Tensor], pad_token_id: int, layer: int):
        check_dola_architecture(model)
        ids, mask = left_pad(rows, pad_token_id)
        self.runner = SequenceRunner(model, ids, mask, output_hidden_states=True)
        self.head = OutputHead(model)
        self.norm = final_norm(model)
        self.layer = layer
        self.rows = len(rows)

    def _project(self, hidden_states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        final = hidden_states[-1][:, -1]  # [R, H], already normed
        lower = self.norm(hidden_states[self.layer][:, -1])  # [R, H]
        logits = self.head(torch.cat([final, lower]))  # [2R, V]: one matmul
        return logits[: self.rows], logits[self.rows :]

    def prefill(self) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.runner.prefill()
        self.head.check(outputs.hidden_states[-1][:, -1], last_logits(outputs))
        return self._project(outputs.hidden_states)

    def step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._project(self.runner.step(tokens, body_only=True).hidden_states)


class LayerFusionStepper:
    """Expert rows: x (+ the induced amateur prompt when the amateur is the expert itself) (+ the refocus
    prompt); a separate amateur model runs its own rows."""

    def __init__(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cfg: fusion_math.LayerFusionConfig,
        pad_token_id: int,
        *,
        amateur_model: PreTrainedModel | None,
        amateur_rows: list[torch.Tensor] | None,
        refocus_rows: list[torch.Tensor] | None,
        vocab_size: int,
    ):
        self.cfg = cfg
        self.batch_size = input_ids.shape[0]
        self.vocab_size = vocab_size
        rows = unpad(input_ids, attention_mask)
        expert_layers = model.config.get_text_config().num_hidden_layers
        amateur_layers = (
            amateur_model.config.get_text_config().num_hidden_layers
            if amateur_model is not None
            else expert_layers
        )
        layer, amateur_layer = fusion_math.lower_layers(cfg, expert_layers, amateur_layers)
        self.amateur_inside = amateur_model is None
        expert_rows = rows + (amateur_rows if self.amateur_inside else []) + (refocus_rows or [])
        self.expert = _FusionModel(model, expert_rows, pad_token_id, layer)
        self.amateur = None
        if amateur_model is not None:
            device = amateur_model.device
            own = [row.to(device) for row in (amateur_rows or rows)]
            self.amateur = _FusionModel(amateur_model, own, pad_token_id, amateur_layer)
        self.has_refocus = bool(refocus_rows)

    def _scores(self, expert_out, amateur_out) -> tuple[torch.Tensor, torch.Tensor]:
        final, lower = expert_out  # [R, V] each
        b, v = self.batch_size, self.vocab_size
        expert_final, expert_lower = final[:b, :v], lower[:b, :v]
        if self.amateur_inside:
            amateur_final, amateur_lower = final[b : 2 * b, :v], lower[b : 2 * b, :v]
            refocus_rows = slice(2 * b, 3 * b)
        else:
            amateur_final = amateur_out[0][:, :v].to(final.device)
            amateur_lower = amateur_out[1][:, :v].to(final.device)
            refocus_rows = slice(b, 2 * b)
        refocused = final[refocus_rows, :v] if self.has_refocus else None
        scores = fusion_math.layer_fusion_contrast(
            expert_final, amateur_final, expert_lower, amateur_lower, self.cfg, refocused
        )
        if final.shape[-1] != v:  # an expert head padded past the shared vocabulary: never choose those
            padded = torch.full((b, final.shape[-1]), -torch.inf, device=final.device)
            padded[:, :v] = scores
            scores = padded
        return scores, final[:b]

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.expert.prefill(), self.amateur.prefill() if self.amateur else None)

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expert_tokens = tokens.repeat(self.expert.rows // self.batch_size)
        amateur_out = None
        if self.amateur is not None:
            amateur_out = self.amateur.step(tokens.to(self.amateur.runner.input_ids.device))
        return self._scores(self.expert.step(expert_tokens), amateur_out)


def _rows(ids: torch.Tensor | None, mask: torch.Tensor | None, batch: int, name: str, device) -> list | None:
    if ids is None:
        return None
    ids = _expand_rows(ids.to(device), batch, name)
    mask = None if mask is None else _expand_rows(mask.to(device), batch, name)
    return unpad(ids, mask)


def layer_fusion(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    amateur_model: PreTrainedModel | None = None,
    amateur_input_ids: torch.Tensor | None = None,
    amateur_attention_mask: torch.Tensor | None = None,
    refocus_input_ids: torch.Tensor | None = None,
    refocus_attention_mask: torch.Tensor | None = None,
    fusion_lambda: float = 1.0,
    fusion_layer: int | None = None,
    plausibility_alpha: float = 0.1,
    refocus_weight: float = 0.0,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
    seed: SeedArg = None,
    **model_kwargs: Any,
) -> Any:
    """Multi-layer fusion contrast: ``cd_final + fusion_lambda * cd_lower`` (+ the truthfulness refocus).

    The amateur is ``amateur_model`` (same tokenizer; given ``input_ids``, or ``amateur_input_ids``), or, without
    one, the model itself given ``amateur_input_ids`` (the prompt after a hallucination-inducing instruction)."""
    cfg = fusion_math.LayerFusionConfig(
        fusion_lambda=fusion_lambda,
        fusion_layer=fusion_layer,
        plausibility_alpha=plausibility_alpha,
        refocus_weight=refocus_weight,
    )
    if amateur_model is None and amateur_input_ids is None:
        raise ValueError(
            "layer_fusion needs an amateur: amateur_model=<a smaller model, same tokenizer>, or "
            "amateur_input_ids=<the prompt after a hallucination-inducing instruction> for the model itself"
        )
    if cfg.refocus_weight and refocus_input_ids is None:
        raise ValueError(
            "refocus_weight > 0 needs refocus_input_ids (the prompt after a truthfulness instruction)"
        )
    vocab_size = model.get_output_embeddings().weight.shape[0]
    if amateur_model is not None:
        vocab_size = shared_vocabulary_size(model, amateur_model, expert_tokenizer, amateur_tokenizer)
    controls, attention_mask = _prepare(
        model, "layer_fusion", logits_processor, stopping_criteria, generation_config, model_kwargs, seed
    )
    pad = controls.generation_config.pad_token_id
    batch, device = input_ids.shape[0], input_ids.device
    stepper = LayerFusionStepper(
        model,
        input_ids,
        attention_mask,
        cfg,
        0 if pad is None else int(pad),
        amateur_model=amateur_model,
        amateur_rows=_rows(amateur_input_ids, amateur_attention_mask, batch, "amateur_input_ids", device),
        refocus_rows=_rows(refocus_input_ids, refocus_attention_mask, batch, "refocus_input_ids", device)
        if cfg.refocus_weight
        else None,
        vocab_size=vocab_size,
    )
    return run_decode_loop(input_ids, stepper, controls)
