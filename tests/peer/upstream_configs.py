"""transformers' own tiny test models, rebuilt here (seeded, random init, no hub access).

The configurations are those of the model testers at transformers v4.55.4:

- ``tests/causal_lm_tester.py`` ``CausalLMModelTester`` (Llama, Qwen2, Gemma, Mistral): vocab 99, hidden 32,
  2 layers, 2 heads (2 key/value heads), intermediate 37, ``gelu``, 512 positions, ``initializer_range=0.02``,
  pad / bos / eos = 0 / 1 / 2, batch of 7-token prompts with the mask ``torch.tril(ones)``;
- ``tests/models/gpt2/test_modeling_gpt2.py`` ``GPT2ModelTester``: the same sizes with 4 heads, 16 token
  types, pad = bos = eos = 98, prompts given with ``token_type_ids`` (and no attention mask).

``GenerationTesterMixin.prepare_config_and_inputs_for_generate`` (tests/generation/test_utils.py) then keeps the
first ``batch_size`` rows and unsets EOS (pad = the old EOS when pad was unset), so generation runs every step.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
)

FAMILIES = ["llama", "gpt2", "qwen2", "gemma", "mistral"]
SEQ_LENGTH = 7
VOCAB_SIZE = 99


def upstream_config(family: str, **overrides) -> PretrainedConfig:
    """The model tester's ``get_config()`` for ``family``, with ``overrides`` applied."""
    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=37,
        hidden_act="gelu",
        max_position_embeddings=512,
        initializer_range=0.02,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if family == "gpt2":
        values = dict(common, num_attention_heads=4, **overrides)
        return GPT2Config(
            vocab_size=values["vocab_size"],
            n_embd=values["hidden_size"],
            n_layer=values["num_hidden_layers"],
            n_head=values["num_attention_heads"],
            n_inner=values["intermediate_size"],
            activation_function=values["hidden_act"],
            n_positions=values["max_position_embeddings"],
            type_vocab_size=16,
            initializer_range=values["initializer_range"],
            use_cache=True,
            bos_token_id=VOCAB_SIZE - 1,
            eos_token_id=VOCAB_SIZE - 1,
            pad_token_id=VOCAB_SIZE - 1,
        )
    values = dict(common, **overrides)
    head_dim = values["hidden_size"] // values["num_attention_heads"]
    if family == "llama":
        return LlamaConfig(head_dim=head_dim, **values)
    if family == "qwen2":
        return Qwen2Config(**values)
    if family == "gemma":
        return GemmaConfig(head_dim=head_dim, **values)
    if family == "mistral":
        return MistralConfig(head_dim=head_dim, **values)
    raise ValueError(family)


def upstream_model(family: str, *, seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    torch.manual_seed(seed)
    config = upstream_config(family, **overrides)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.eval()


def prepare_config_and_inputs_for_generate(model, batch_size: int = 2, seed: int = 0) -> dict:
    """The inputs ``GenerationTesterMixin`` generates from; EOS unset on the model, pad = the old EOS if unset."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB_SIZE, (batch_size, SEQ_LENGTH), generator=generator)
    config = model.generation_config
    if config.eos_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id
    config.eos_token_id = None
    model.config.eos_token_id = None
    if model.config.model_type == "gpt2":
        token_type_ids = torch.randint(0, 16, (batch_size, SEQ_LENGTH), generator=generator)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids}
    return {"input_ids": input_ids, "attention_mask": torch.tril(torch.ones_like(input_ids))}


def weight_fingerprint(model) -> list[float]:
    """A few numbers that change when the seeded initialisation changes (gold files record them)."""
    with torch.no_grad():
        head = [round(float(p.double().sum()), 6) for p in list(model.parameters())[:4]]
        return head + [round(float(sum(p.double().abs().sum() for p in model.parameters())), 4)]
