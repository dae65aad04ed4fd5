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
from functools import partial

import torch
from torch import nn
from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator
from vllm.model_executor.models.interfaces import supports_eagle3
from vllm.sequence import IntermediateTensors

from ...decoding import dola as dola_math
from ...decoding import expert_amateur as ea_math
from ...decoding import sled as sled_math
from .plugin import AMATEUR_KEY, EARLY_EXIT_MODES, EARLY_EXITS_KEY, base_architecture, wrapper_architecture
from .requests import MethodRequest
from .rows import engine_row_table

AMATEUR_PREFIX = "amateur"
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


class AuxCapture:
    """Early exits through vLLM's auxiliary hidden states (``SupportsEagle3``): the model's ``forward`` returns
    ``(final, [stream entering layer i for i in layers])``."""

    kind = "aux"

    def __init__(self, model: nn.Module, num_layers: int):
        model.set_aux_hidden_state_layers(tuple(range(num_layers)))

    def collect(self, output) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden, layers = output  # [T, H], N x [T, H]
        return hidden, list(layers)


class HookCapture:
    """Early exits through forward hooks on the decoder layers (public torch API; nothing is replaced).

    Index 0 is the ``hidden_states`` argument layer 0 is called with (the embeddings, with whatever scaling or
    position embeddings the architecture adds), index i >= 1 the output of layer i - 1: ``hidden + residual``
    when the layer returns vLLM's fused-residual pair, else the tensor itself. Copies are taken at once: fused
    add-norm kernels update both tensors in place later in the forward. Hooks do not run inside CUDA graphs or
    ``torch.compile``d code, so this capture needs ``enforce_eager=True`` (``engine_settings`` sets it).
    """

    kind = "hooks"

    def __init__(self, layers: nn.ModuleList, num_layers: int, architecture: str):
        self.states: list[torch.Tensor | None] = [None] * num_layers
        self.signature = inspect.signature(layers[0].forward)
        if "hidden_states" not in self.signature.parameters:
            raise ValueError(
                f"{architecture}: its decoder layers' forward takes no `hidden_states` argument, so DoLa's early "
                "exits cannot be captured"
            )
        layers[0].register_forward_pre_hook(self._embeddings, with_kwargs=True)
        for index in range(1, num_layers):
            layers[index - 1].register_forward_hook(partial(self._layer_output, index))

    def _embeddings(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = self.signature.bind_partial(*args, **kwargs).arguments["hidden_states"]
        self.states[0] = hidden.clone()  # [T, H]

    def _layer_output(self, index: int, module: nn.Module, args: tuple, output) -> None:
        if isinstance(output, tuple):
            hidden, residual = output[0], output[1] if len(output) > 1 else None
            fused = isinstance(residual, torch.Tensor) and residual.shape == hidden.shape
            self.states[index] = hidden + residual if fused else hidden.clone()  # [T, H]
        else:
            self.states[index] = output.clone()  # [T, H]

    def collect(self, output: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        states, self.states = self.states, [None] * len(self.states)
        if any(state is None for state in states):
            raise RuntimeError("contrastive-decoding: a decoder layer's hook did not run in this forward")
        return output, states


def early_exit_capture(model: nn.Module, vllm_config) -> AuxCapture | HookCapture:
    """The capture for ``model`` (mode from ``hf_overrides``' ``contrastive_early_exits``, default "auto")."""
    config = vllm_config.model_config.hf_text_config
    architecture = type(model).__name__
    num_layers = config.num_hidden_layers
    mode = getattr(vllm_config.model_config.hf_config, EARLY_EXITS_KEY, "auto")
    if mode not in EARLY_EXIT_MODES:
        raise ValueError(f"{EARLY_EXITS_KEY} must be one of {', '.join(EARLY_EXIT_MODES)}, got {mode!r}")
    if mode == "aux" or (mode == "auto" and supports_eagle3(model)):
        if not supports_eagle3(model):
            raise ValueError(f"{architecture} does not implement vLLM's SupportsEagle3 aux hidden states")
        return AuxCapture(model, num_layers)
    stack = decoder_layers(model, num_layers)
    if stack is None:
        raise ValueError(
            f"{architecture} has neither vLLM's aux-hidden-state interface (SupportsEagle3) nor a decoder-layer "
            f"stack (an nn.ModuleList of its {num_layers} layers), so DoLa's early exits cannot be captured"
        )
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        raise ValueError(
            f"{architecture}: early exits through layer hooks do not support pipeline parallelism"
        )
    if not vllm_config.model_config.enforce_eager:
        raise ValueError(
            f"{architecture}: early exits are captured by hooks on its decoder layers, which need "
            "enforce_eager=True (no CUDA graphs or torch.compile)"
        )
    return HookCapture(stack[1], num_layers, architecture)


def final_norm_name(model: nn.Module, num_layers: int) -> str | None:
    """The dotted name of the final norm: a ``FINAL_NORM_NAMES`` child of the module holding the decoder layers."""
    stack = decoder_layers(model, num_layers)
    holder = stack[0].rpartition(".")[0] if stack else ""
    children = dict(model.get_submodule(holder).named_children())
    name = next((name for name in FINAL_NORM_NAMES if name in children), None)
    return None if name is None else f"{holder}.{name}".lstrip(".")


class ContrastiveMixin:
    """Adds DoLa early exits and an optional amateur to a vLLM causal LM (its ``forward`` + ``compute_logits``)."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.row_table = engine_row_table(vllm_config)  # shared with the logits processor (see .rows)
        config = vllm_config.model_config.hf_text_config
        self.num_layers = config.num_hidden_layers
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.hidden_size = config.hidden_size
        # Capture layers 0 .. N-1 (0 = embeddings): every index a "low" / "high" bucket or a list can name.
        self.capture = early_exit_capture(self, vllm_config)
        self.final_norm_name = final_norm_name(self, self.num_layers)  # for early_exit_norm=True
        self.amateur: nn.Module | None = None
        self.amateur_path = getattr(vllm_config.model_config.hf_config, AMATEUR_KEY, None)
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
        output = super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
        if isinstance(output, IntermediateTensors):
            return output
        hidden, layers = self.capture.collect(output)  # [T, H], N x [T, H]
        streams = [hidden, *layers]
        if self.amateur is not None:
            streams.append(self.amateur(input_ids, positions, None, inputs_embeds))  # [T, H_amateur]
        return torch.cat(streams, dim=-1)  # [T, H * (1 + N) (+ H_amateur)]

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        width = self.hidden_size
        final = hidden_states[:, :width]  # [R, H]
        logits = super().compute_logits(final)  # [R, V], through the model's own LM head
        rows = self.row_table.claim_rows(hidden_states.shape[0])  # {} outside the step's sampling call
        if rows and logits is not None:
            self.apply_methods(hidden_states, logits, rows)
        return logits

    def apply_methods(
        self, hidden_states: torch.Tensor, logits: torch.Tensor, rows: dict[int, MethodRequest]
    ) -> None:
        """Write each method row's scores into ``logits`` [R, V] from ``hidden_states`` [R, H * (1 + N) (+ H_a)]
        (this wrapper's ``forward`` output at the sampled positions). The only entry point of the method rows:
        V1's row placement (:mod:`.rows`, filled by the V1 processor) calls it from ``compute_logits``; another
        runner's placement would call it with its own ``{row: MethodRequest}``."""
        dola_rows = {row: request for row, request in rows.items() if request.method == "dola"}
        amateur_rows = {row: request for row, request in rows.items() if request.method == "expert_amateur"}
        if dola_rows:
            self._dola(hidden_states, logits, dola_rows)
        if amateur_rows:
            self._expert_amateur(hidden_states, logits, amateur_rows)
        sled_rows = {row: request for row, request in rows.items() if request.method == "sled"}
        if sled_rows:
            self._sled(hidden_states, logits, sled_rows)

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
        if self.final_norm_name is None:
            raise RuntimeError(
                f"{type(self).__name__}: early_exit_norm=True needs the final norm, not found (looked for "
                f"{', '.join(FINAL_NORM_NAMES)} next to the decoder layers)"
            )
        normed = self.get_submodule(self.final_norm_name)(states)
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
