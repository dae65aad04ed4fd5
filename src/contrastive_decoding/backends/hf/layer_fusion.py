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
from .generate import _prepare, shared_vocabulary_size, variant_rows
from .inputs import StackedPrompts, Variant, check_model_accepts, stack_prompts, variant_per_token
from .loop import NO_OUTPUTS, OutputRequest, run_decode_loop
from .runner import OutputHead, PromptInputs, last_logits
from .steppers import StackedStepper


class _FusionModel(StackedStepper):
    """One model over stacked rows, giving (final, lower-layer) logits of each row's last position."""

    def __init__(
        self,
        model: PreTrainedModel,
        stacked: StackedPrompts,
        layer: int,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        check_dola_architecture(model)
        super().__init__(model, stacked, requested, output_hidden_states=True)
        self.head = OutputHead(model)
        self.norm = final_norm(model)
        self.layer = layer
        self.rows = stacked.prompt.input_ids.shape[0]

    def _project(self, hidden_states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        final = hidden_states[-1][:, -1]  # [R, H], already normed
        lower = self.norm(hidden_states[self.layer][:, -1])  # [R, H]
        logits = self.head(torch.cat([final, lower]))  # [2R, V]: one matmul
        return logits[: self.rows], logits[self.rows :]

    def prefill_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.prefill()
        self.head.check(outputs.hidden_states[-1][:, -1], last_logits(outputs))
        return self._project(outputs.hidden_states)

    def step_logits(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [B]
        return self._project(self.step(tokens, body_only=True).hidden_states)


class LayerFusionStepper:
    """Expert rows: x (+ the induced amateur prompt when the amateur is the expert itself) (+ the refocus
    prompt); a separate amateur model runs its own rows."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        cfg: fusion_math.LayerFusionConfig,
        pad_token_id: int,
        *,
        amateur_model: PreTrainedModel | None,
        amateur_rows: Variant | None,
        refocus_rows: Variant | None,
        vocab_size: int,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        self.cfg = cfg
        self.batch_size = prompt.input_ids.shape[0]
        self.vocab_size = vocab_size
        expert_layers = model.config.get_text_config().num_hidden_layers
        amateur_layers = (
            amateur_model.config.get_text_config().num_hidden_layers
            if amateur_model is not None
            else expert_layers
        )
        layer, amateur_layer = fusion_math.lower_layers(cfg, expert_layers, amateur_layers)
        self.amateur_inside = amateur_model is None
        variants = ([amateur_rows] if self.amateur_inside else []) + ([refocus_rows] if refocus_rows else [])
        expert_rows = stack_prompts("layer_fusion", prompt, variants, pad_token_id)
        self.expert = _FusionModel(model, expert_rows, layer, requested)
        self.amateur = None
        if amateur_model is not None:
            if amateur_rows is None:  # the amateur reads the expert's prompt
                own = prompt
            else:  # its own prompt
                per_token = variant_per_token("layer_fusion", prompt, amateur_rows)
                own = PromptInputs(amateur_rows.input_ids, amateur_rows.attention_mask, None, per_token)
            check_model_accepts(amateur_model, own, "layer_fusion", "amateur_model")
            own = own.to(amateur_model.device)
            self.amateur = _FusionModel(amateur_model, stack_prompts("layer_fusion", own, [], pad_token_id),
                                        amateur_layer)  # fmt: skip
        self.has_refocus = refocus_rows is not None

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
        amateur_out = self.amateur.prefill_logits() if self.amateur else None
        return self._scores(self.expert.prefill_logits(), amateur_out)

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amateur_out = None
        if self.amateur is not None:
            amateur_out = self.amateur.step_logits(tokens.to(self.amateur.runner.input_ids.device))
        return self._scores(self.expert.step_logits(tokens), amateur_out)

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        return self.expert.model_outputs()

    def past_key_values(self):
        return self.expert.past_key_values()


def layer_fusion(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    amateur_model: PreTrainedModel | None = None,
    amateur_input_ids: torch.Tensor | None = None,
    amateur_attention_mask: torch.Tensor | None = None,
    amateur_token_type_ids: torch.Tensor | None = None,
    refocus_input_ids: torch.Tensor | None = None,
    refocus_attention_mask: torch.Tensor | None = None,
    refocus_token_type_ids: torch.Tensor | None = None,
    fusion_lambda: float = 1.0,
    fusion_layer: int | None = None,
    plausibility_alpha: float = 0.1,
    refocus_weight: float = 0.0,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> Any:
    """Multi-layer fusion contrast: ``cd_final + fusion_lambda * cd_lower`` (+ the truthfulness refocus).

    The amateur is ``amateur_model`` (same tokenizer; given ``input_ids``, or ``amateur_input_ids``), or, without
    one, the model itself given ``amateur_input_ids`` (the prompt after a hallucination-inducing instruction).
    With ``token_type_ids``, the amateur / refocus prompts take their own (``amateur_token_type_ids``,
    ``refocus_token_type_ids``)."""
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
    controls, prompt = _prepare(
        model,
        "layer_fusion",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    pad = controls.generation_config.pad_token_id
    amateur_rows = refocus_rows = None
    if amateur_input_ids is not None:
        amateur_rows = variant_rows(
            "amateur", input_ids, amateur_input_ids, amateur_attention_mask, amateur_token_type_ids
        )
    if cfg.refocus_weight:
        refocus_rows = variant_rows(
            "refocus", input_ids, refocus_input_ids, refocus_attention_mask, refocus_token_type_ids
        )
    stepper = LayerFusionStepper(
        model,
        prompt,
        cfg,
        0 if pad is None else int(pad),
        amateur_model=amateur_model,
        amateur_rows=amateur_rows,
        refocus_rows=refocus_rows,
        vocab_size=vocab_size,
        requested=controls.outputs,
    )
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)
