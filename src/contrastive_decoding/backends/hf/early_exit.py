"""Early-exit heads for DoLa and SLED: the LM head applied to intermediate hidden states, all candidate layers
stacked in one matmul."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...decoding.dola import candidate_layers
from .runner import OutputHead

# Names of the final norm on the decoder (``get_decoder()``): Llama, Mistral, Qwen, Gemma, Phi-3: norm; GPT-2: ln_f;
# Phi / Persimmon: final_layernorm; GPT-NeoX: final_layer_norm; Mamba-style: norm_f.
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm")


def final_norm(model: PreTrainedModel) -> torch.nn.Module:
    """The decoder's final norm, which early exits go through when they are normed (DoLa option, layer fusion):
    the first of :data:`FINAL_NORM_NAMES` among the decoder's children."""
    decoder = model.get_decoder()
    children = dict(decoder.named_children())
    name = next((name for name in FINAL_NORM_NAMES if name in children), None)
    if name is None:
        raise ValueError(
            f"{type(model).__name__}: no final norm found on its decoder ({type(decoder).__name__}: looked for "
            f"{', '.join(FINAL_NORM_NAMES)})"
        )
    return children[name]


def check_dola_architecture(model: PreTrainedModel, method: str = "DoLa") -> None:
    """Early exits need a decoder-only model with an LM head and ``num_hidden_layers`` layer outputs (any
    architecture whose ``forward`` returns ``hidden_states``); the LM head's post-processing (soft-capping,
    logit scales) is :class:`OutputHead`'s, checked against the model's own logits at the first step.
    ``method`` names the method in the errors (DoLa, SLED)."""
    config = model.config.get_text_config()
    if model.config.is_encoder_decoder:
        raise ValueError(f"{method} needs a decoder-only model; {type(model).__name__} is an encoder-decoder")
    if model.get_output_embeddings() is None:
        raise ValueError(f"{method} needs an LM head; {type(model).__name__} has no output embeddings")
    if not isinstance(getattr(config, "num_hidden_layers", None), int):
        raise ValueError(f"{method} needs config.num_hidden_layers; {type(model).__name__}'s config has none")


class EarlyExitHeads:
    """Final and early-exit logits for DoLa from a ``hidden_states`` tuple, in one matmul.

    ``hidden_states[i]`` is the output of layer i (0 = embeddings) before the final norm, and the last entry
    the final (normed) hidden state, as transformers returns them. The last position of the final state and
    of every candidate layer are stacked into ``[1 + L, B, H]`` and projected by the LM head at once.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        dola_layers: str | tuple[int, ...] = "high",
        *,
        apply_final_norm: bool = False,
        layers: list[int] | None = None,
        method: str = "DoLa",
    ):
        """``layers``: the resolved layer indices (SLED's); else DoLa's ``dola_layers`` bucket or list."""
        check_dola_architecture(model, method)
        config = model.config.get_text_config()
        self.layers = (
            list(layers)
            if layers is not None
            else candidate_layers(dola_layers, config.num_hidden_layers, bool(config.tie_word_embeddings))
        )
        self.head = OutputHead(model)
        self.final_norm = final_norm(model) if apply_final_norm else None

    def __call__(self, hidden_states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (final logits [B, V], early-exit logits [L, B, V]), float32."""
        early = torch.stack([hidden_states[layer][:, -1, :] for layer in self.layers])  # [L, B, H]
        if self.final_norm is not None:
            early = self.final_norm(early)
        stacked = torch.cat([hidden_states[-1][:, -1, :][None], early])  # [1 + L, B, H]
        logits = self.head(stacked)  # [1 + L, B, V]: one matmul over all (1 + L) * B rows
        return logits[0], logits[1:]
