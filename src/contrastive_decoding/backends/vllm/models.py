"""Model wrappers for vLLM: any decoder architecture vLLM implements, plus DoLa early exits and an optional amateur.

The wrapper for architecture ``A`` is ``type("ContrastiveA", (ContrastiveMixin, <A's vLLM class>), {})``, built on
first use (:func:`wrapper_class`; the module's ``__getattr__`` hands it to vLLM's lazy registry entry that
:mod:`.plugin` registers), so it keeps every interface flag of ``A``'s class (pipeline parallel, hybrid caches,
...). Two things are added, both configured through ``hf_overrides`` (which :func:`.engine.engine_settings`
fills in):

- **DoLa**: ``forward`` also returns the residual stream entering every decoder layer (index i = what layer i
  reads, i = 0 the embeddings, as transformers' ``hidden_states[i]``: before the final norm), concatenated on the
  feature axis. Two captures, one result (:class:`AuxCapture`, :class:`HookCapture`): vLLM's public
  auxiliary-hidden-state interface (``SupportsEagle3.set_aux_hidden_state_layers``: Llama, Mistral, Phi-3,
  Qwen2/3, Qwen3-MoE, Granite, ...), else forward hooks on the decoder-layer stack (Gemma 2/3, GPT-2, ...): a
  layer's output is ``(hidden, residual)`` in vLLM's fused-residual layers (the stream is their sum) or the
  stream itself. The runner selects the sampled rows before ``compute_logits``, which projects the candidate
  layers of the rows that ask for DoLa only through the model's own ``compute_logits`` (its tensor-parallel LM
  head and logits processor, with Gemma's soft-capping or Granite's logit scale, as the Hugging Face backend's
  ``OutputHead`` applies them), in one call, and writes the DoLa scores into those rows.
- **SLED**: the same early exits, projected for the rows that ask for SLED, evolve those rows' final logits
  (:meth:`ContrastiveMixin._sled`).
- **Expert-amateur** (``contrastive_amateur_model``: a checkpoint directory with the same tokenizer, any
  architecture vLLM implements): the amateur is a submodule run inside the same ``forward`` on the same tokens and
  positions; its attention layers get their own KV cache under the ``amateur.`` prefix with the same block
  tables, so both caches advance in lockstep. Every request on such an engine pays the amateur's forward; only
  rows that ask for expert-amateur decoding pay its LM head and the contrast.

The contrast itself is ``contrastive_decoding.decoding``'s, shared with the Hugging Face backend.
"""

from __future__ import annotations

import glob
import inspect
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator
from vllm.model_executor.models.interfaces import EagleModelMixin, supports_eagle3
from vllm.sequence import IntermediateTensors

from ...decoding import dola as dola_math
from ...decoding import expert_amateur as ea_math
from ...decoding import sled as sled_math
from .plugin import (
    AMATEUR_KEY,
    EARLY_EXIT_MODES,
    EARLY_EXITS_KEY,
    EXIT_LAYERS_KEY,
    base_architecture,
    wrapper_architecture,
)
from .requests import MethodRequest, captured_layers
from .rows import engine_row_table

AMATEUR_PREFIX = "amateur"
EARLY_EXIT_METHODS = frozenset({"dola", "sled"})  # the methods that read early exits
AMATEUR_METHODS = frozenset({"expert_amateur"})  # the methods that read the amateur's hidden states
# names of the final norm on the module that holds the decoder layers (Llama / Gemma: norm, GPT-2: ln_f, ...)
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm")


def base_class(architecture: str) -> type[nn.Module]:
    """vLLM's own class for ``architecture``, from its model registry."""
    from vllm import ModelRegistry

    registered = ModelRegistry.models.get(architecture)
    if registered is None:
        import vllm

        raise ValueError(
            f"architecture {architecture!r} is not implemented by vLLM {vllm.__version__}, so the vLLM backend "
            "cannot serve it (use the Hugging Face backend)"
        )
    return registered.load_model_cls()


def decoder_layers(model: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList] | None:
    """The decoder-layer stack of ``model``: the outermost ``nn.ModuleList`` of ``num_layers`` modules
    (``model.layers``, ``transformer.h``, ...) outside the amateur, with its dotted name."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == num_layers
        and not name.startswith(AMATEUR_PREFIX + ".")
    ]
    return min(found, key=lambda item: item[0].count(".")) if found else None


def sampled_token_index() -> torch.Tensor | None:
    """``[R]`` the token positions this step's ``compute_logits`` will see, in its row order: the last scheduled
    token of each request (``query_start_loc[1:] - 1``, which is how vLLM 0.32's V1 runner builds
    ``logits_indices`` without speculative decoding), read from the step's attention metadata in vLLM's forward
    context. ``None`` outside a model step (profiling and warm-up dummy runs carry no metadata)."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        return None
    metadata = get_forward_context().attn_metadata
    if not isinstance(metadata, dict):  # None in dummy runs; a list under micro-batching (unsupported)
        return None
    for entry in metadata.values():
        starts = getattr(entry, "query_start_loc", None)
        if isinstance(starts, torch.Tensor):
            return (starts[1:] - 1).long()
    return None


class AuxCapture:
    """Early exits through vLLM's auxiliary hidden states (``SupportsEagle3``): the model's ``forward`` returns
    ``(final, [stream entering layer i for i in layers])`` over every token; the sampled positions are gathered
    after it. For engines that do not run eagerly (CUDA graphs, ``torch.compile``), where hooks cannot run: the
    model materialises ``[T, H]`` per captured layer during the forward, which is what the capture set bounds."""

    kind = "aux"

    def __init__(self, model: nn.Module, layers: list[int]):
        self.layers = layers
        self.slot = {layer: slot for slot, layer in enumerate(layers)}  # layer -> its index on the early axis
        model.set_aux_hidden_state_layers(tuple(layers))

    def begin(self, index: torch.Tensor | None) -> None:
        pass

    def collect(self, output, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final hidden [T, H], early exits [R, L_c, H] at ``index``, or None without an index)."""
        hidden, layers = output  # [T, H], L_c x [T, H]
        if index is None:
            return hidden, None
        return hidden, torch.stack([states[index] for states in layers], dim=1)  # [R, L_c, H]


class HookCapture:
    """Early exits through forward hooks on the decoder layers (public torch API; nothing is replaced), kept at
    the sampled positions only: ``R`` rows per captured layer, so a long prefill costs no more memory than on a
    stock engine.

    Layer 0's entry is the ``hidden_states`` argument layer 0 is called with (the embeddings, with whatever
    scaling or position embeddings the architecture adds), layer i >= 1's the output of layer i - 1:
    ``hidden + residual`` when the layer returns vLLM's fused-residual pair, else the tensor itself. The rows are
    gathered at once (a copy): fused add-norm kernels update both tensors in place later in the forward. Hooks do
    not run inside CUDA graphs or ``torch.compile``d code, so this capture needs ``enforce_eager=True``
    (``engine_settings`` sets it).
    """

    kind = "hooks"

    def __init__(self, stack: nn.ModuleList, layers: list[int], architecture: str):
        self.layers = layers
        self.slot = {layer: slot for slot, layer in enumerate(layers)}  # layer -> its index on the early axis
        self.index: torch.Tensor | None = None
        self.states: list[torch.Tensor | None] = [None] * len(layers)
        self.signature = inspect.signature(stack[0].forward)
        if 0 in self.slot and "hidden_states" not in self.signature.parameters:
            raise ValueError(
                f"{architecture}: its decoder layers' forward takes no `hidden_states` argument, so DoLa's early "
                "exits cannot be captured"
            )
        if 0 in self.slot:
            stack[0].register_forward_pre_hook(self._embeddings, with_kwargs=True)
        for layer in layers:
            if layer >= 1:
                stack[layer - 1].register_forward_hook(partial(self._layer_output, self.slot[layer]))

    def begin(self, index: torch.Tensor | None) -> None:
        """Before the forward: the positions to keep (None: keep nothing, as in dummy runs)."""
        self.index = index
        self.states = [None] * len(self.layers)

    def _embeddings(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.index is not None:
            hidden = self.signature.bind_partial(*args, **kwargs).arguments["hidden_states"]
            self.states[self.slot[0]] = hidden[self.index]  # [R, H]

    def _layer_output(self, slot: int, module: nn.Module, args: tuple, output) -> None:
        if self.index is None:
            return
        if isinstance(output, tuple):
            hidden, residual = output[0], output[1] if len(output) > 1 else None
            fused = isinstance(residual, torch.Tensor) and residual.shape == hidden.shape
            rows = hidden[self.index]  # [R, H]
            self.states[slot] = rows + residual[self.index] if fused else rows
        else:
            self.states[slot] = output[self.index]  # [R, H]

    def collect(
        self, output: torch.Tensor, index: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(final hidden [T, H], early exits [R, L_c, H], or None without an index)."""
        states, self.states, self.index = self.states, [None] * len(self.layers), None
        if index is None:
            return output, None
        if any(state is None for state in states):
            raise RuntimeError("contrastive-decoding: a decoder layer's hook did not run in this forward")
        return output, torch.stack(states, dim=1)  # [R, L_c, H]


PIPELINE_AMATEUR_ERROR = (
    "expert-amateur decoding does not support pipeline parallelism: the amateur runs inside the expert's forward "
    "on every token, and under pipeline_parallel_size > 1 its layers would be split across stages too; use "
    "tensor_parallel_size for the pair, or pipeline parallelism without the amateur"
)


def relay_aux_over_pipeline(model: nn.Module) -> None:
    """Under pipeline parallelism, let the captured layers of earlier stages reach the last one.

    vLLM's aux-hidden-state models pack a stage's captured layers into its ``IntermediateTensors`` under
    ``aux_hidden_states_<slot>`` and the last stage prepends those it receives to its own
    (``EagleModelMixin.collect_remote_aux_hidden_states``), but a stage receives only the keys its runner's
    ``make_empty_intermediate_tensors`` buffer holds. ``reserve_aux_intermediate_tensor_slots`` (the helper vLLM's
    EAGLE-3 path calls) adds the upstream slots to that buffer on every stage after the first; a middle stage
    passes them on (:func:`pass_upstream_aux`). Raises for a model whose aux states do not cross stages."""
    from vllm.v1.worker.gpu.spec_decode.eagle.eagle3_utils import (
        reserve_aux_intermediate_tensor_slots,
        verify_supports_aux_hidden_states_over_pp,
    )

    try:
        verify_supports_aux_hidden_states_over_pp(model, "DoLa / SLED early exits")
    except ValueError as error:
        raise ValueError(
            f"{error}: its vLLM model does not pass aux hidden states between pipeline stages, so the early "
            "exits of earlier stages cannot reach the last; use tensor_parallel_size instead, or "
            "hf_overrides={'contrastive_early_exit_layers': 'none'} (no DoLa / SLED)"
        ) from error
    reserve_aux_intermediate_tensor_slots(model)


def pass_upstream_aux(received: IntermediateTensors | None, sent: IntermediateTensors) -> None:
    """A middle pipeline stage forwards the aux states it received from earlier stages (vLLM 0.32's V1 runner
    sends only what the model returns, and the model returns only its own layers' states)."""
    if received is None:
        return
    for key, value in received.tensors.items():
        if key.startswith(EagleModelMixin.AUX_HIDDEN_STATE_KEY) and key not in sent.tensors:
            sent.tensors[key] = value


def early_exit_capture(model: nn.Module, vllm_config) -> AuxCapture | HookCapture | None:
    """The capture for ``model`` (mode from ``hf_overrides``' ``contrastive_early_exits``, default "auto": layer
    hooks on an eager engine, vLLM's aux hidden states otherwise; layers from ``contrastive_early_exit_layers``,
    default all). None when no layer is captured."""
    config = vllm_config.model_config.hf_text_config
    hf_config = vllm_config.model_config.hf_config
    architecture = type(model).__name__
    num_layers = config.num_hidden_layers
    mode = getattr(hf_config, EARLY_EXITS_KEY, "auto")
    if mode not in EARLY_EXIT_MODES:
        raise ValueError(f"{EARLY_EXITS_KEY} must be one of {', '.join(EARLY_EXIT_MODES)}, got {mode!r}")
    layers = captured_layers(
        getattr(hf_config, EXIT_LAYERS_KEY, "all"),
        num_layers,
        bool(getattr(config, "tie_word_embeddings", False)),
    )
    if not layers:
        return None
    eager = bool(vllm_config.model_config.enforce_eager)
    stack = decoder_layers(model, num_layers)
    pipeline = vllm_config.parallel_config.pipeline_parallel_size > 1
    hooks_fit = eager and stack is not None and not pipeline
    if mode == "aux" or (mode == "auto" and not hooks_fit and supports_eagle3(model)):
        if not supports_eagle3(model):
            raise ValueError(f"{architecture} does not implement vLLM's SupportsEagle3 aux hidden states")
        return AuxCapture(model, layers)
    if stack is None:
        raise ValueError(
            f"{architecture} has neither vLLM's aux-hidden-state interface (SupportsEagle3) nor a decoder-layer "
            f"stack (an nn.ModuleList of its {num_layers} layers), so DoLa's early exits cannot be captured"
        )
    if pipeline:
        raise ValueError(
            f"{architecture}: early exits through layer hooks do not support pipeline parallelism (a stage's "
            "hooks cannot hand their states to the last stage); use tensor_parallel_size instead, or "
            "hf_overrides={'contrastive_early_exit_layers': 'none'} to serve without DoLa / SLED"
        )
    if not eager:
        raise ValueError(
            f"{architecture}: early exits are captured by hooks on its decoder layers, which need "
            "enforce_eager=True (no CUDA graphs or torch.compile)"
        )
    return HookCapture(stack[1], layers, architecture)


def final_norm_name(model: nn.Module, num_layers: int) -> str | None:
    """The dotted name of the final norm: a ``FINAL_NORM_NAMES`` child of the module holding the decoder layers."""
    stack = decoder_layers(model, num_layers)
    holder = stack[0].rpartition(".")[0] if stack else ""
    children = dict(model.get_submodule(holder).named_children())
    name = next((name for name in FINAL_NORM_NAMES if name in children), None)
    return None if name is None else f"{holder}.{name}".lstrip(".")


@dataclass
class StepStates:
    """What the wrapper's ``forward`` kept of a step for its ``compute_logits``: the sampled positions' early
    exits and amateur hidden states, one row per request in batch order."""

    rows: int  # R: the sampled positions, i.e. the rows of the step's compute_logits
    early: torch.Tensor | None  # [R, L_c, H] the stream entering each captured layer (None: no capture)
    amateur: torch.Tensor | None  # [R, H_a] the amateur's final hidden state (None: no amateur)


class ContrastiveMixin:
    """Adds DoLa / SLED early exits and an optional amateur to a vLLM causal LM (its ``forward`` +
    ``compute_logits``)."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.row_table = engine_row_table(vllm_config)  # shared with the logits processor (see .rows)
        config = vllm_config.model_config.hf_text_config
        self.num_layers = config.num_hidden_layers
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.hidden_size = config.hidden_size
        self.pipeline_stages = vllm_config.parallel_config.pipeline_parallel_size
        self.capture = early_exit_capture(self, vllm_config)  # None: the engine captures no layer
        if self.capture is not None and self.capture.kind == "aux" and self.pipeline_stages > 1:
            relay_aux_over_pipeline(self)
        self.final_norm_name = final_norm_name(self, self.num_layers)  # for early_exit_norm=True
        self.amateur: nn.Module | None = None
        self.amateur_path = getattr(vllm_config.model_config.hf_config, AMATEUR_KEY, None)
        if self.amateur_path:
            if self.pipeline_stages > 1:
                raise ValueError(PIPELINE_AMATEUR_ERROR)
            self.amateur = build_amateur(vllm_config, self.amateur_path)
        self.step: StepStates | None = None

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        """The model's own forward and output (``[T, H]``, untouched); on the side, the early exits and the
        amateur's hidden states at the step's sampled positions only (:class:`StepStates`)."""
        wants_early = self.capture is not None and self.row_table.asks_for(EARLY_EXIT_METHODS)
        wants_amateur = self.amateur is not None and self.row_table.asks_for(AMATEUR_METHODS)
        index = sampled_token_index() if wants_early or wants_amateur else None  # [R]
        if self.capture is not None:
            self.capture.begin(index if wants_early else None)  # a step no row needs them in keeps nothing
        output = super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
        if isinstance(output, IntermediateTensors):  # not the last pipeline stage
            if self.capture is not None and self.capture.kind == "aux":
                pass_upstream_aux(intermediate_tensors, output)
            return output
        hidden, early = output, None
        if self.capture is not None:
            hidden, early = self.capture.collect(output, index if wants_early else None)
        amateur = None
        if self.amateur is not None:
            amateur_hidden = self.amateur(input_ids, positions, None, inputs_embeds)  # [T, H_a]: its KV cache
            amateur = amateur_hidden[index] if wants_amateur else None  # [R, H_a]
        self.step = StepStates(int(index.shape[0]), early, amateur) if index is not None else None
        return hidden

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = super().compute_logits(hidden_states)  # [R, V], through the model's own LM head
        rows = self.row_table.claim_rows(hidden_states.shape[0])  # {} outside the step's sampling call
        if rows and logits is not None:
            step = self.step or StepStates(hidden_states.shape[0], None, None)  # None: no row needed them
            if step.rows != hidden_states.shape[0]:
                raise RuntimeError(
                    "contrastive-decoding: the step's sampled positions do not match compute_logits' rows "
                    f"({step.rows} vs {hidden_states.shape[0]})"
                )
            self.apply_methods(step, logits, rows)
        return logits

    def apply_methods(self, step: StepStates, logits: torch.Tensor, rows: dict[int, MethodRequest]) -> None:
        """Write each method row's scores into ``logits`` [R, V] from ``step`` (this wrapper's early exits and
        amateur states at the sampled positions). The only entry point of the method rows: V1's row placement
        (:mod:`.rows`, filled by the V1 processor) calls it from ``compute_logits``; another runner's placement
        would call it with its own ``{row: MethodRequest}``."""
        by_method: dict[str, dict[int, MethodRequest]] = {}
        for row, request in rows.items():
            by_method.setdefault(request.method, {})[row] = request
        if "dola" in by_method:
            self._dola(step, logits, by_method["dola"])
        if "expert_amateur" in by_method:
            self._expert_amateur(step, logits, by_method["expert_amateur"])
        if "sled" in by_method:
            self._sled(step, logits, by_method["sled"])

    def _early_exits(self, step: StepStates, rows: list[int], layers: list[int]) -> torch.Tensor:
        """``[L, len(rows), H]``: the captured stream entering ``layers`` at ``rows``."""
        if step.early is None:
            raise RuntimeError("contrastive-decoding: early-exit rows on an engine that captures no layer")
        slot = self.capture.slot  # step.early is set only on an engine with a capture
        missing = [layer for layer in layers if layer not in slot]
        if missing:
            raise RuntimeError(f"contrastive-decoding: layers {missing} are not captured on this engine")
        device = step.early.device
        row_index = torch.tensor(rows, device=device)
        slots = torch.tensor([slot[layer] for layer in layers], device=device)
        return step.early[row_index][:, slots].transpose(0, 1)  # [L, G, H]

    def _dola(self, step: StepStates, logits: torch.Tensor, rows: dict[int, MethodRequest]) -> None:
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
        early = self._early_exits(step, row_ids, needed).reshape(-1, width)  # [L_u * R_d, H]
        projected: dict[bool, torch.Tensor] = {}  # early_exit_norm -> [L_u, R_d, V]
        for (layers, config), group in groups.items():
            norm = bool(config.early_exit_norm)
            if norm not in projected:
                states = self._final_norm(early) if norm else early
                projected[norm] = super().compute_logits(states).view(len(needed), len(row_ids), -1)
            group_early = projected[norm]  # [L_u, R_d, V]
            if list(layers) != needed:
                layer_index = torch.tensor([needed.index(layer) for layer in layers], device=logits.device)
                group_early = group_early[layer_index]  # [L, R_d, V]
            if len(group) != len(row_ids):
                group_positions = torch.tensor([position[row] for row in group], device=logits.device)
                group_early = group_early[:, group_positions]  # [L, G, V]
            if group == list(range(logits.shape[0])):  # every row of the step: no gather, no scatter
                logits.copy_(dola_math.contrast(logits, group_early, config)[0])
                continue
            group_rows = torch.tensor(group, device=logits.device)
            scores, _ = dola_math.contrast(logits[group_rows], group_early, config)  # [G, V]
            logits[group_rows] = scores.to(logits.dtype)

    def _sled(self, step: StepStates, logits: torch.Tensor, rows: dict[int, MethodRequest]) -> None:
        """Write SLED's evolved scores into ``logits`` [R, V] for ``rows``: per group of rows sharing a config,
        their early exits through the LM head in one call, then ``sled.sled_scores`` (the HF backend's math)."""
        width, num_layers = self.hidden_size, self.num_layers
        groups: dict[object, list[int]] = {}
        for row, request in sorted(rows.items()):
            groups.setdefault(request.config, []).append(row)
        for config, group in groups.items():
            layers = sled_math.early_exit_layers(config.sled_layers, num_layers, self.tie_word_embeddings)
            early = self._early_exits(step, group, layers).reshape(-1, width)  # [L * G, H]
            if config.early_exit_norm:
                early = self._final_norm(early)
            early_logits = super().compute_logits(early).view(len(layers), len(group), -1)  # [L, G, V]
            logits_rows = torch.tensor(group, device=logits.device)
            scores = sled_math.sled_scores(logits[logits_rows], early_logits, config)  # [G, V]
            logits[logits_rows] = scores.to(logits.dtype)

    def _final_norm(self, states: torch.Tensor) -> torch.Tensor:
        if self.final_norm_name is None:
            raise RuntimeError(
                f"{type(self).__name__}: early_exit_norm=True needs the final norm, not found (looked for "
                f"{', '.join(FINAL_NORM_NAMES)} next to the decoder layers)"
            )
        normed = self.get_submodule(self.final_norm_name)(states)
        return normed[0] if isinstance(normed, tuple) else normed

    def _expert_amateur(self, step: StepStates, logits: torch.Tensor, rows: dict[int, MethodRequest]):
        """Write expert-amateur scores into ``logits`` [R, V] for ``rows``."""
        if self.amateur is None or step.amateur is None:
            raise RuntimeError("expert_amateur rows on an engine without an amateur model")
        row_ids = sorted(rows)
        index = torch.tensor(row_ids, device=step.amateur.device)
        amateur_logits = self.amateur.compute_logits(step.amateur[index])  # [R_a, V_a]
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


def build_amateur(vllm_config, path: str) -> nn.Module:
    """The amateur as a plain vLLM model (any architecture vLLM implements) under the ``amateur.`` prefix, on the
    expert's engine settings."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    architecture = (config.architectures or [""])[0]
    if not architecture:
        raise ValueError(f"{AMATEUR_KEY}={path!r}: its config.json names no architecture")
    amateur_config = vllm_config.with_hf_config(config, architectures=[architecture])
    return base_class(architecture)(vllm_config=amateur_config, prefix=AMATEUR_PREFIX)


_WRAPPERS: dict[str, type[nn.Module]] = {}


def wrapper_class(architecture: str) -> type[nn.Module]:
    """``Contrastive<architecture>``: :class:`ContrastiveMixin` over vLLM's own class for ``architecture``, made
    once per process (pickle and vLLM's lazy registry find it again through this module's ``__getattr__``)."""
    if architecture not in _WRAPPERS:
        base = base_class(architecture)
        if not callable(getattr(base, "compute_logits", None)):
            raise ValueError(f"{architecture} is not a generative model in vLLM (it has no compute_logits)")
        name = wrapper_architecture(architecture)
        doc = f"vLLM's {architecture} with DoLa early exits and an optional amateur (see {__name__})."
        _WRAPPERS[architecture] = type(
            name, (ContrastiveMixin, base), {"__module__": __name__, "__qualname__": name, "__doc__": doc}
        )
    return _WRAPPERS[architecture]


def __getattr__(name: str) -> type[nn.Module]:
    architecture = base_architecture(name)
    if architecture is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return wrapper_class(architecture)
