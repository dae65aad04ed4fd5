"""Tiny random-init causal LMs built from real configs (seeded, no downloads), for unit and equivalence tests.

``initializer_range`` is large so next-token distributions are peaked: argmax ties at float-noise level,
which would make token-for-token comparisons flaky, do not occur.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

VOCAB_SIZE = 512
PAD_TOKEN_ID = 0
EOS_TOKEN_ID = 2


def tiny_config(
    family: str = "llama", *, tie_word_embeddings: bool = False, num_layers: int = 4
) -> PretrainedConfig:
    common = dict(
        vocab_size=VOCAB_SIZE,
        pad_token_id=PAD_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        bos_token_id=1,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=0.2,
    )
    shape = dict(  # the decoder-only families' shape
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        max_position_embeddings=256,
    )
    if family == "llama":
        return LlamaConfig(num_key_value_heads=1, head_dim=64, **shape, **common)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **shape, **common)
    if family == "qwen3":
        return Qwen3Config(num_key_value_heads=1, head_dim=64, **shape, **common)
    if family == "mistral":
        return MistralConfig(num_key_value_heads=1, head_dim=64, sliding_window=None, **shape, **common)
    if family == "phi3":  # head_dim = hidden_size / heads = 64
        return Phi3Config(num_key_value_heads=1, **shape, **common)
    if family in ("gemma3_text", "gemma3_softcap"):  # the second with Gemma 2/3's final logit soft-capping
        return Gemma3TextConfig(
            num_key_value_heads=1,
            head_dim=64,
            sliding_window=512,
            final_logit_softcapping=5.0 if family == "gemma3_softcap" else None,
            **shape,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(**shape, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=128, n_layer=num_layers, n_head=2, n_positions=256, **common)
    raise ValueError(family)


def tiny_model(
    family: str = "llama", *, seed: int = 0, tie_word_embeddings: bool = False, num_layers: int = 4
):
    torch.manual_seed(seed)
    config = tiny_config(family, tie_word_embeddings=tie_word_embeddings, num_layers=num_layers)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    model.generation_config.eos_token_id = EOS_TOKEN_ID
    return model.eval()


def random_prompts(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB_SIZE, (n,), generator=generator) for n in lengths]


def tiny_tokenizer():
    """A word-level tokenizer over the tiny vocabulary: ``<pad>``=0, ``<s>``=1, ``</s>``=2, then ``w3`` .. ``w511``.

    Text is whitespace-separated words; ``"w5 w17"`` encodes to ``[5, 17]``.
    """
    return word_level_tokenizer(range(3, VOCAB_SIZE))


def word_level_tokenizer(word_ids, special: dict[int, str] | None = None):
    """A left-padding word-level tokenizer: ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``w{i}`` for each of
    ``word_ids``, and the ``special`` tokens (added as additional special tokens) at their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = special or {}
    vocab = {"<pad>": PAD_TOKEN_ID, "<s>": 1, "</s>": EOS_TOKEN_ID, **{f"w{i}": i for i in word_ids}}
    vocab.update({token: index for index, token in special.items()})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
    )
    if special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special.values())})
    tokenizer.padding_side = "left"
    return tokenizer


def words(ids) -> str:
    """Token ids -> text for :func:`tiny_tokenizer`."""
    return " ".join(f"w{int(i)}" for i in ids)


def save_tiny_pair(root, tokenizer=None) -> dict[str, str]:
    """Save the tiny expert (6 layers) and amateur (2 layers, same tokenizer) under ``root``; their paths."""
    tokenizer = tokenizer or tiny_tokenizer()
    paths = {}
    for name, model in {
        "expert": tiny_model("llama", num_layers=6),
        "amateur": tiny_model("llama", num_layers=2, seed=1),
    }.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths
