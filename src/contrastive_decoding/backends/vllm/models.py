"""Model wrappers for vLLM: one class per supported architecture, registered by :mod:`.plugin`.

A wrapper is the architecture's own vLLM class plus two things, both configured through ``hf_overrides``
(which :func:`.engine.engine_settings` fills in):

- **DoLa**: ``forward`` also returns the hidden state of every layer (vLLM's auxiliary-hidden-state mechanism:
  layer i's residual stream before the final norm, i = 0 the embeddings, as transformers' ``hidden_states[i]``),
  concatenated on the feature axis. The runner selects the sampled rows before ``compute_logits``, which then
  projects the candidate layers of the rows that ask for DoLa only, through the model's own (tensor-parallel)
  LM head, in one call, and writes the DoLa scores into those rows.
- **SLED**: the same early exits, projected for the rows that ask for SLED, evolve those rows' final logits
  (:meth:`ContrastiveMixin._sled`).
- **Expert-amateur** (``contrastive_amateur_model``: a checkpoint directory with the same tokenizer): the amateur
  is a submodule run inside the same ``forward`` on the same tokens and positions; its attention layers get their
  own KV cache under the ``amateur.`` prefix with the same block tables, so both caches advance in lockstep.
  Every request on such an engine pays the amateur's forward; only rows that ask for expert-amateur decoding pay
  its LM head and the contrast.

The contrast itself is ``contrastive_decoding.decoding``'s, shared with the Hugging Face backend.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable

import torch
from torch import nn
from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.sequence import IntermediateTensors

from ...decoding import dola as dola_math
from ...decoding import expert_amateur as ea_math
from ...decoding import sled as sled_math
from .plugin import AMATEUR_KEY
from .requests import MethodRequest
from .rows import engine_row_table

AMATEUR_PREFIX = "amateur"


class ContrastiveMixin:
    """Adds DoLa early exits and an optional amateur to a vLLM causal LM (``self.model`` + ``compute_logits``)."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.row_table = engine_row_table(vllm_config)  # shared with the logits processor (see .rows)
        config = vllm_config.model_config.hf_config
        self.num_layers = config.num_hidden_layers
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.hidden_size = config.hidden_size
        # Capture layers 0 .. N-1 (0 = embeddings): every index a "low" / "high" bucket or a list can name.
        # (vLLM's public SupportsEagle3 interface, which both base classes implement.)
        self.set_aux_hidden_state_layers(tuple(range(self.num_layers)))
        self.amateur: nn.Module | None = None
        self.amateur_path = getattr(config, AMATEUR_KEY, None)
        if self.amateur_path:
            self.amateur = build_amateur(vllm_config, self.amateur_path)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        output = self.model(input_ids, positions, intermediate_tensors, inputs_embeds)
        if isinstance(output, IntermediateTensors):
            return output
        hidden, layers = output  # [T, H], N x [T, H]
        streams = [hidden, *layers]
        if self.amateur is not None:
            streams.append(self.amateur(input_ids, positions, None, inputs_embeds))  # [T, H_amateur]
        return torch.cat(streams, dim=-1)  # [T, H * (1 + N) (+ H_amateur)]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        width = self.hidden_size
        final = hidden_states[:, :width]  # [R, H]
        logits = super().compute_logits(final)  # [R, V], through the model's own LM head
        rows = self.row_table.claim_rows(hidden_states.shape[0])  # {} outside the step's sampling call
        if not rows or logits is None:
            return logits
        dola_rows = {row: request for row, request in rows.items() if request.method == "dola"}
        amateur_rows = {row: request for row, request in rows.items() if request.method == "expert_amateur"}
        if dola_rows:
            self._dola(hidden_states, logits, dola_rows)
        if amateur_rows:
            self._expert_amateur(hidden_states, logits, amateur_rows)
        sled_rows = {row: request for row, request in rows.items() if request.method == "sled"}
        if sled_rows:
            self._sled(hidden_states, logits, sled_rows)
        return logits

    def _dola(
        self, hidden_states: torch.Tensor, logits: torch.Tensor, rows: dict[int, MethodRequest]
    ) -> None:
        """Write DoLa scores into ``logits`` [R, V] for ``rows``: one LM-head call for all their early exits,
        one batched contrast per group of rows sharing candidate layers and settings."""
        width, num_layers = self.hidden_size, self.num_layers
        groups: dict[tuple, list[int]] = {}
        for row, request in sorted(rows.items()):
            layers = dola_math.candidate_layers(
                request.config.dola_layers, num_layers, self.tie_word_embeddings
            )
            groups.setdefault((tuple(layers), request.config), []).append(row)
        needed = sorted({layer for layers, _ in groups for layer in layers})  # [L_u]
        row_ids = sorted(rows)
        position = {row: i for i, row in enumerate(row_ids)}
        index = torch.tensor(row_ids, device=hidden_states.device)
        early = hidden_states[index, width : width * (1 + num_layers)].view(len(row_ids), num_layers, width)
        early = early[:, needed].transpose(0, 1).reshape(-1, width)  # [L_u * R_d, H]
        projected: dict[bool, torch.Tensor] = {}  # early_exit_norm -> [L_u, R_d, V]
        for (layers, config), group in groups.items():
            norm = bool(config.early_exit_norm)
            if norm not in projected:
                states = self._final_norm(early) if norm else early
                projected[norm] = super().compute_logits(states).view(len(needed), len(row_ids), -1)
            layer_index = torch.tensor([needed.index(layer) for layer in layers], device=logits.device)
            group_positions = torch.tensor([position[row] for row in group], device=logits.device)
            group_rows = torch.tensor(group, device=logits.device)
            group_early = projected[norm][layer_index][:, group_positions]  # [L, G, V]
            scores, _ = dola_math.contrast(logits[group_rows], group_early, config)  # [G, V]
            logits[group_rows] = scores.to(logits.dtype)

    def _sled(
        self, hidden_states: torch.Tensor, logits: torch.Tensor, rows: dict[int, MethodRequest]
    ) -> None:
        """Write SLED's evolved scores into ``logits`` [R, V] for ``rows``: per group of rows sharing a config,
        their early exits through the LM head in one call, then ``sled.sled_scores`` (the HF backend's math)."""
        width, num_layers = self.hidden_size, self.num_layers
        groups: dict[object, list[int]] = {}
        for row, request in sorted(rows.items()):
            groups.setdefault(request.config, []).append(row)
        for config, group in groups.items():
            layers = sled_math.early_exit_layers(config.sled_layers, num_layers, self.tie_word_embeddings)
            group_rows = torch.tensor(group, device=hidden_states.device)
            early = hidden_states[group_rows, width : width * (1 + num_layers)].view(
                len(group), num_layers, width
            )
            early = early[:, layers].transpose(0, 1).reshape(-1, width)  # [L * G, H]
            if config.early_exit_norm:
                early = self._final_norm(early)
            early_logits = super().compute_logits(early).view(len(layers), len(group), -1)  # [L, G, V]
            logits_rows = group_rows.to(logits.device)
            scores = sled_math.sled_scores(logits[logits_rows], early_logits, config)  # [G, V]
            logits[logits_rows] = scores.to(logits.dtype)

    def _final_norm(self, states: torch.Tensor) -> torch.Tensor:
        normed = self.model.norm(states)
        return normed[0] if isinstance(normed, tuple) else normed

    def _expert_amateur(
        self, hidden_states: torch.Tensor, logits: torch.Tensor, rows: dict[int, MethodRequest]
    ):
        """Write expert-amateur scores into ``logits`` [R, V] for ``rows``."""
        if self.amateur is None:
            raise RuntimeError("expert_amateur rows on an engine without an amateur model")
        start = self.hidden_size * (1 + self.num_layers)
        row_ids = sorted(rows)
        index = torch.tensor(row_ids, device=hidden_states.device)
        amateur_logits = self.amateur.compute_logits(hidden_states[index, start:])  # [R_a, V_a]
        vocab = min(logits.shape[-1], amateur_logits.shape[-1])
        groups: dict[object, list[int]] = {}
        for position, row in enumerate(row_ids):
            groups.setdefault(rows[row].config, []).append(position)
        for config, positions in groups.items():
            group_positions = torch.tensor(positions, device=logits.device)
            group_rows = index[group_positions].to(logits.device)
            scores = ea_math.contrast(
                logits[group_rows, :vocab], amateur_logits[group_positions, :vocab], config
            )  # [G, V]
            logits[group_rows, :vocab] = scores.to(logits.dtype)
            logits[group_rows, vocab:] = -math.inf

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = set(super().load_weights(weights))
        if self.amateur is not None:
            files = sorted(glob.glob(os.path.join(self.amateur_path, "*.safetensors")))
            if not files:
                raise ValueError(f"{AMATEUR_KEY}={self.amateur_path!r} holds no *.safetensors weights")
            amateur_loaded = self.amateur.load_weights(
                safetensors_weights_iterator(files, use_tqdm_on_load=False)
            )
            loaded |= {f"{AMATEUR_PREFIX}.{name}" for name in amateur_loaded}
        return loaded


BASE_CLASSES: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
}


def build_amateur(vllm_config, path: str) -> nn.Module:
    """The amateur as a plain vLLM model under the ``amateur.`` prefix, on the expert's engine settings."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    architecture = (config.architectures or [""])[0]
    if architecture not in BASE_CLASSES:
        raise ValueError(
            f"amateur architecture {architecture!r} is not supported on vLLM; supported: {', '.join(BASE_CLASSES)}"
        )
    amateur_config = vllm_config.with_hf_config(config, architectures=[architecture])
    return BASE_CLASSES[architecture](vllm_config=amateur_config, prefix=AMATEUR_PREFIX)


class ContrastiveLlamaForCausalLM(ContrastiveMixin, LlamaForCausalLM):
    """Llama family (Llama, SmolLM2, Mistral-style configs) with DoLa early exits and an optional amateur."""


class ContrastiveQwen2ForCausalLM(ContrastiveMixin, Qwen2ForCausalLM):
    """Qwen2 / Qwen2.5 with DoLa early exits and an optional amateur."""
