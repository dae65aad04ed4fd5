"""One stepper per method: how its model(s) are advanced and how its scores are formed.

The math lives in ``contrastive_decoding.decoding``; steppers only move tensors between models and it.
Each stepper also hands back its main model's per-step hidden states / attentions and final cache when
``return_dict_in_generate`` asks for them (:class:`~.loop.OutputRequest`).
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel

from ...decoding import context as context_math
from ...decoding import contrastive_search as cs_math
from ...decoding import dola as dola_math
from ...decoding import expert_amateur as ea_math
from ...decoding import sled as sled_math
from .early_exit import EarlyExitHeads
from .inputs import StackedPrompts, Variant, check_model_accepts, stack_prompts
from .loop import NO_OUTPUTS, OutputRequest
from .runner import OutputHead, PromptInputs, SequenceRunner, last_logits, select_cache_rows


def _outputs(outputs, requested: OutputRequest) -> tuple[tuple | None, tuple | None]:
    hidden = outputs.hidden_states if requested.hidden_states else None
    attentions = outputs.attentions if requested.attentions else None
    return hidden, attentions


class PlainStepper:
    """Greedy / sampled decoding with no contrast: the baseline every method reduces to."""

    def __init__(self, model: PreTrainedModel, prompt: PromptInputs, requested: OutputRequest = NO_OUTPUTS):
        self.requested = requested
        self.runner = SequenceRunner(
            model,
            prompt,
            output_hidden_states=requested.hidden_states,
            output_attentions=requested.attentions,
        )
        self.last = None

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = self.runner.prefill()
        logits = last_logits(self.last)
        return logits, logits

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = self.runner.step(tokens)
        logits = last_logits(self.last)
        return logits, logits

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        return _outputs(self.last, self.requested)

    def past_key_values(self):
        return self.runner.cache


class ContrastiveSearchStepper:
    """Top-k candidates re-ranked by confidence minus degeneration penalty. Each step is one decoder forward
    over the K candidates per row; only the chosen candidate goes through the LM head, and its logits serve
    the next step.

    Per-step outputs are those of transformers 4.55: the prompt's at the first step, then the chosen
    candidate's (its hidden states ``[B, 1, H]``; its attention over the context and itself
    ``[B, heads, 1, S + 1]``, cut out of the candidates' tree attention). The returned cache drops the last
    chosen token, which contrastive search has already fed, so it covers ``sequences[:, :-1]`` as in 4.55.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        cfg: cs_math.ContrastiveSearchConfig,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        self.cfg = cfg
        self.requested = requested
        self.head = OutputHead(model)
        self.runner = SequenceRunner(
            model, prompt, output_hidden_states=True, output_attentions=requested.attentions
        )
        self.context_hidden: torch.Tensor | None = None  # [B, S, H] last hidden states so far
        self.next_logits: torch.Tensor | None = None  # [B, V]
        self.step_outputs: tuple[tuple | None, tuple | None] = (None, None)

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.runner.prefill()
        self.context_hidden = outputs.hidden_states[-1]  # [B, S, H]
        logits = last_logits(outputs)
        self.head.check(self.context_hidden[:, -1], logits)
        self.step_outputs = _outputs(outputs, self.requested)
        return logits, logits

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> torch.Tensor:
        context_mask = self.runner.attention_mask  # [B, S]
        top_k_probs, top_k_ids = processed_scores.softmax(dim=-1).topk(self.cfg.top_k, dim=-1)  # [B, K]
        candidates = self.runner.candidates(top_k_ids, body_only=True)
        candidate_hidden = candidates.last_hidden_state  # [B, K, H]
        chosen = cs_math.select_candidate(
            top_k_probs, self.context_hidden, context_mask, candidate_hidden, self.cfg.penalty_alpha
        )  # [B]
        rows = torch.arange(chosen.shape[0], device=chosen.device)
        self.step_outputs = self._chosen_outputs(candidates, rows, chosen, context_mask.shape[1])
        self.runner.keep(chosen, self.cfg.top_k)
        chosen_hidden = candidate_hidden[rows, chosen]  # [B, H]
        self.context_hidden = torch.cat([self.context_hidden, chosen_hidden[:, None]], dim=1)
        self.next_logits = self.head(chosen_hidden)  # [B, V]
        return top_k_ids[rows, chosen]

    def _chosen_outputs(
        self, candidates, rows, chosen, context_len: int
    ) -> tuple[tuple | None, tuple | None]:
        hidden = attentions = None
        if self.requested.hidden_states:
            hidden = tuple(h[rows, chosen][:, None] for h in candidates.hidden_states)  # each [B, 1, H]
        if self.requested.attentions:
            attentions = tuple(
                torch.cat(
                    [a[rows, :, chosen, :context_len], a[rows, :, chosen, context_len + chosen][..., None]],
                    dim=-1,
                )[:, :, None]  # [B, heads, 1, S + 1]
                for a in candidates.attentions
            )
        return hidden, attentions

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The chosen candidate was already fed by `choose` (finished rows keep their candidate, as in 4.55).
        return self.next_logits, self.next_logits

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        return self.step_outputs

    def past_key_values(self):
        self.runner.cache.crop(-1)  # the last chosen token: fed, not yet part of the returned sequences' past
        return self.runner.cache


class DolaStepper:
    """Final-layer logits contrasted with the premature layer chosen per row among the candidates. After the
    prefill, steps run the decoder body only and project the final and early-exit states in one matmul."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        cfg: dola_math.DolaConfig,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        self.cfg = cfg
        self.requested = requested
        self.heads = EarlyExitHeads(model, cfg.dola_layers, apply_final_norm=cfg.early_exit_norm)
        self.runner = SequenceRunner(
            model, prompt, output_hidden_states=True, output_attentions=requested.attentions
        )
        self.layer_ids = torch.tensor(self.heads.layers, device=prompt.input_ids.device)  # [L]
        self.chosen_layers: list[torch.Tensor] = []  # per step: [B] premature layer index
        self.last = None

    def _scores(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = outputs
        final_logits, early_logits = self.heads(outputs.hidden_states)  # [B, V], [L, B, V]
        scores, chosen = dola_math.contrast(final_logits, early_logits, self.cfg)
        self.chosen_layers.append(self.layer_ids[chosen])
        return scores, final_logits

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.runner.prefill()
        self.heads.head.check(outputs.hidden_states[-1][:, -1], last_logits(outputs))
        return self._scores(outputs)

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.runner.step(tokens, body_only=True))

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        return _outputs(self.last, self.requested)

    def past_key_values(self):
        return self.runner.cache


class SledStepper(DolaStepper):
    """Final-layer logits evolved toward SLED's latent distribution from the early layers: DoLa's stepper
    (decoder body after the prefill, final and early exits in one matmul) with SLED's math."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        cfg: sled_math.SledConfig,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        self.cfg = cfg
        self.requested = requested
        config = model.config
        layers = sled_math.early_exit_layers(
            cfg.sled_layers, config.num_hidden_layers, bool(config.tie_word_embeddings)
        )
        self.heads = EarlyExitHeads(model, layers=layers, apply_final_norm=cfg.early_exit_norm, method="SLED")
        self.runner = SequenceRunner(
            model, prompt, output_hidden_states=True, output_attentions=requested.attentions
        )
        self.last = None

    def _scores(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = outputs
        final_logits, early_logits = self.heads(outputs.hidden_states)  # [B, V], [L, B, V]
        return sled_math.sled_scores(final_logits, early_logits, self.cfg), final_logits


class ExpertAmateurStepper:
    """Expert and amateur advanced in lockstep, each with its own KV cache. Only the first ``vocab_size``
    entries (the shared tokenizer's) are contrasted; padded expert-only entries are never chosen. Outputs and
    cache handed back are the expert's."""

    def __init__(
        self,
        model: PreTrainedModel,
        amateur_model: PreTrainedModel,
        prompt: PromptInputs,
        cfg: ea_math.ExpertAmateurConfig,
        vocab_size: int,
        requested: OutputRequest = NO_OUTPUTS,
    ):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.requested = requested
        check_model_accepts(amateur_model, prompt, "expert_amateur", "amateur_model")
        self.expert = SequenceRunner(
            model,
            prompt,
            output_hidden_states=requested.hidden_states,
            output_attentions=requested.attentions,
        )
        self.amateur = SequenceRunner(amateur_model, prompt.to(amateur_model.device))
        self.last = None

    def _scores(self, expert_out, amateur_out) -> tuple[torch.Tensor, torch.Tensor]:
        self.last = expert_out
        expert_logits = last_logits(expert_out)  # [B, V_expert]
        amateur_logits = last_logits(amateur_out)[:, : self.vocab_size].to(expert_logits.device)  # [B, V]
        shared = ea_math.contrast(expert_logits[:, : self.vocab_size], amateur_logits, self.cfg)  # [B, V]
        if shared.shape[-1] == expert_logits.shape[-1]:
            return shared, expert_logits
        scores = torch.full_like(expert_logits, -math.inf)
        scores[:, : self.vocab_size] = shared
        return scores, expert_logits

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.expert.prefill(), self.amateur.prefill())

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amateur_tokens = tokens.to(self.amateur.input_ids.device)
        return self._scores(self.expert.step(tokens), self.amateur.step(amateur_tokens))

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        return _outputs(self.last, self.requested)

    def past_key_values(self):
        return self.expert.cache


class StackedStepper:
    """Shared by the methods whose variant prompts ride as extra rows (:func:`~.inputs.stack_prompts`): the
    runner over the stacked batch and the main rows' outputs / cache in the caller's layout."""

    def __init__(
        self,
        model: PreTrainedModel,
        stacked: StackedPrompts,
        requested: OutputRequest,
        *,
        output_hidden_states: bool = False,
    ):
        self.stacked = stacked
        self.requested = requested
        self.batch_size = stacked.batch_size
        self.runner = SequenceRunner(
            model,
            stacked.prompt,
            output_hidden_states=output_hidden_states or requested.hidden_states,
            output_attentions=requested.attentions,
        )
        self.last = None
        self.prefilled = False

    def prefill(self, body_only: bool = False):
        self.last = self.runner.prefill(body_only)
        return self.last

    def step(self, tokens: torch.Tensor, body_only: bool = False):  # tokens [B], the same for every block
        self.prefilled = True
        self.last = self.runner.step(tokens.repeat(self.stacked.blocks), body_only)
        return self.last

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        hidden, attentions = self.stacked.main_outputs(self.last, prefill=not self.prefilled)
        return (
            hidden if self.requested.hidden_states else None,
            attentions if self.requested.attentions else None,
        )

    def past_key_values(self):
        return select_cache_rows(self.runner.cache, self.stacked.main_rows, self.stacked.main_offset)


class ContextPairStepper(StackedStepper):
    """CAD / AdaCAD: the prompt with context and the prompt without it ride in one batch of 2B rows
    (one forward, one cache); the first B rows are the context rows."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompt: PromptInputs,
        context_free: Variant,
        cfg: context_math.CadConfig | context_math.AdaCadConfig,
        pad_token_id: int,
        method: str = "cad",
        requested: OutputRequest = NO_OUTPUTS,
    ):
        super().__init__(model, stack_prompts(method, prompt, [context_free], pad_token_id), requested)
        self.cfg = cfg
        self.alphas: list[torch.Tensor] = []  # per step: [B] the weight used (AdaCAD's alpha_t)

    def _scores(self, outputs) -> tuple[torch.Tensor, torch.Tensor]:
        logits = last_logits(outputs)  # [2B, V]
        with_context, without_context = logits[: self.batch_size], logits[self.batch_size :]
        if isinstance(self.cfg, context_math.AdaCadConfig):
            scores, alpha = context_math.adacad_contrast(with_context, without_context, self.cfg)
        else:
            scores = context_math.cad_contrast(with_context, without_context, self.cfg.cad_alpha)
            alpha = torch.full((self.batch_size,), self.cfg.cad_alpha, device=logits.device)
        self.alphas.append(alpha)
        return scores, with_context

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.prefill())

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(self.step(tokens))
