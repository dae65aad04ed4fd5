"""Whether an amateur can be contrasted with its expert token for token: one set of checks for both backends.

Expert-amateur decoding, layer fusion and their scoring compare two models' scores entry by entry, so the two
must share one tokenizer. These checks compare tokenizers and vocabulary sizes only; they take no model object
(each backend reads its models' LM-head sizes and checkpoint paths and passes them in), and import transformers
only to load a tokenizer from a checkpoint directory.

    >>> check_same_vocabulary(49152, 49152)                     # LM-head rows of expert and amateur
    49152
    >>> check_same_tokenizer(expert_tokenizer, amateur_tokenizer)   # raises unless token for token the same
"""

from __future__ import annotations

import functools
import os
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def check_same_tokenizer(expert_tokenizer: Any, amateur_tokenizer: Any) -> None:
    """Raise a clear error unless the two tokenizers have the same vocabulary, token for token."""
    if expert_tokenizer.get_vocab() != amateur_tokenizer.get_vocab():
        raise ValueError(
            f"the amateur's tokenizer ({len(amateur_tokenizer)} tokens) differs from the expert's "
            f"({len(expert_tokenizer)} tokens): expert and amateur must share one tokenizer, e.g. "
            "Qwen2.5-Coder-1.5B with Qwen2.5-Coder-0.5B."
        )


def check_same_vocabulary(
    expert_size: int,
    amateur_size: int,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
) -> int:
    """The number of leading vocabulary entries expert and amateur share (``*_size``: each model's LM-head
    rows); a clear error when the amateur cannot be contrasted with the expert token for token.

    When both tokenizers are given they must have the same vocabulary. LM heads may be padded to different
    sizes past the tokenizer's vocabulary; then the shared size is the smaller.
    """
    both = expert_tokenizer is not None and amateur_tokenizer is not None
    if both:
        check_same_tokenizer(expert_tokenizer, amateur_tokenizer)
    if expert_size == amateur_size:
        return expert_size
    if both and len(expert_tokenizer) <= min(expert_size, amateur_size):
        return min(expert_size, amateur_size)  # same tokenizer, LM heads padded differently
    raise ValueError(
        f"amateur_model's vocabulary ({amateur_size} tokens) differs from the expert's ({expert_size}): "
        "expert and amateur must share one tokenizer."
    )


def checkpoint_tokenizer(path: str | None) -> Any:
    """The tokenizer saved in a local checkpoint directory, else None (never downloads)."""
    if not path or not os.path.isdir(path):
        return None
    if not any(os.path.exists(os.path.join(path, name)) for name in TOKENIZER_FILES):
        return None
    return _load_tokenizer(os.path.abspath(path))


def check_checkpoint_tokenizers(expert_path: str, amateur_path: str) -> None:
    """:func:`check_same_tokenizer` on the tokenizers of two checkpoints (directories or hub names)."""
    from transformers import AutoTokenizer

    check_same_tokenizer(
        AutoTokenizer.from_pretrained(expert_path), AutoTokenizer.from_pretrained(amateur_path)
    )


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
