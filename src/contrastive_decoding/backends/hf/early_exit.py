"""Early-exit heads for DoLa and SLED: the LM head applied to intermediate hidden states, all candidate layers
stacked in one matmul."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...decoding.dola import candidate_layers
from .runner import OutputHead

# model_type -> attribute path of the final norm, relative to the model's decoder (``get_decoder()``).
DOLA_ARCHITECTURES: dict[str, str] = {
    "llama": "norm",
    "mistral": "norm",
    "qwen2": "norm",
    "qwen3": "norm",
    "gemma": "norm",
    "gemma3_text": "norm",
    "gpt2": "ln_f",
}


def final_norm(model: PreTrainedModel) -> torch.nn.Module:
    """The decoder's final norm, which early exits go through when they are normed (DoLa option, layer fusion)."""
    return getattr(model.get_decoder(), DOLA_ARCHITECTURES[model.config.model_type])


def check_dola_architecture(model: PreTrainedModel, method: str = "DoLa") -> None:
    config = model.config
    model_type = getattr(config, "model_type", None)
    if config.is_encoder_decoder or model_type not in DOLA_ARCHITECTURES:
        raise ValueError(
            f"{method} does not support model_type {model_type!r} ({type(model).__name__}); supported decoder-only "
            f"families: {', '.join(sorted(DOLA_ARCHITECTURES))}."
        )
    if getattr(config, "final_logit_softcapping", None):
        raise ValueError(f"{method} does not support final logit soft-capping ({type(model).__name__})")
    if model.get_output_embeddings() is None:
        raise ValueError(f"{method} needs an LM head; {type(model).__name__} has no output embeddings")


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
        config = model.config
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
