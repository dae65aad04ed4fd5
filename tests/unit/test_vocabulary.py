"""The expert / amateur vocabulary checks both backends call: sizes and tokenizers in, no model objects."""

from __future__ import annotations

import pytest

from contrastive_decoding.vocabulary import check_same_tokenizer, check_same_vocabulary, checkpoint_tokenizer


class FakeTokenizer:
    def __init__(self, tokens: list[str]):
        self.vocab = {token: index for index, token in enumerate(tokens)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)


WORDS = FakeTokenizer([f"w{i}" for i in range(10)])


def test_equal_heads_share_every_entry():
    assert check_same_vocabulary(12, 12) == 12
    assert check_same_vocabulary(12, 12, WORDS, FakeTokenizer([f"w{i}" for i in range(10)])) == 12


def test_heads_padded_past_one_tokenizer_share_the_smaller_size():
    assert check_same_vocabulary(16, 12, WORDS, WORDS) == 12


def test_other_head_sizes_without_tokenizers_are_refused():
    with pytest.raises(
        ValueError, match=r"amateur_model's vocabulary \(16 tokens\) differs from the expert's \(12\)"
    ):
        check_same_vocabulary(12, 16)


def test_another_tokenizer_is_refused():
    other = FakeTokenizer([f"w{i}" for i in range(11)])
    with pytest.raises(
        ValueError, match=r"the amateur's tokenizer \(11 tokens\) differs from the expert's \(10 tokens\)"
    ):
        check_same_tokenizer(WORDS, other)
    with pytest.raises(ValueError, match="must share one tokenizer"):
        check_same_vocabulary(12, 12, WORDS, other)


def test_checkpoint_tokenizer_never_downloads(tmp_path):
    assert checkpoint_tokenizer(None) is None
    assert checkpoint_tokenizer("HuggingFaceTB/SmolLM2-135M") is None  # a hub name, not a directory
    assert checkpoint_tokenizer(str(tmp_path)) is None  # a directory without tokenizer files
