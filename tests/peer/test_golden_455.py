"""Model-level contrastive search / DoLa / greedy checks against transformers 4.55.4's own ``generate``.

The gold files ``tests/peer/gold/<family>.json`` hold 4.55.4's outputs (core contrastive search and DoLa, no
``custom_generate``) on the tiny upstream models of ``upstream_configs`` (6 layers, ``initializer_range=0.2``,
see ``make_gold.py``, which wrote them). Like ``tests/golden`` for the real models, but for the five
families of upstream's generation tests, and also batched:

- each prompt alone must give 4.55's tokens;
- the prompts as one left-padded batch, with ``repetition_penalty=1.2`` and pad == EOS in the marked cases,
  must give every row 4.55's tokens *for that row alone* (4.55's own batch does not always: its repetition
  penalty counts the padding and its DoLa picks one layer for the whole batch; the files record that too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad

from .make_gold import MAX_NEW_TOKENS, gold_model
from .upstream_configs import FAMILIES, weight_fingerprint

GOLD = Path(__file__).resolve().parent / "gold"
FUNCTIONS = {"greedy": cd.hf.greedy, "contrastive_search": cd.hf.contrastive_search, "dola": cd.hf.dola}


def load_gold(family: str) -> dict:
    return json.loads((GOLD / f"{family}.json").read_text())


@pytest.fixture(scope="module", params=FAMILIES)
def gold_and_model(request):
    gold = load_gold(request.param)
    model = gold_model(request.param)
    assert weight_fingerprint(model) == pytest.approx(gold["weight_fingerprint"], rel=1e-6), (
        "the seeded tiny model is not the one the gold was made for (a transformers / torch change of the "
        "initialisation?): regenerate with tests/peer/make_gold.py"
    )
    model.generation_config.eos_token_id = gold["eos_token_id"]
    return gold, model


def decode(model, rows: list[list[int]], case: dict, eos: int) -> list[list[int]]:
    input_ids, attention_mask = left_pad([torch.tensor(r) for r in rows], case["pad_token_id"])
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            custom_generate=FUNCTIONS[case["method"]],
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            pad_token_id=case["pad_token_id"],
            eos_token_id=eos,
            **case["params"],
        )
    return out[:, input_ids.shape[1] :].tolist()


def trimmed(tokens: list[int], eos: int) -> list[int]:
    """A row up to its EOS (a batch pads the rest, alone it stops there)."""
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def test_alone_equals_455(gold_and_model):
    """Each prompt alone: the tokens of transformers 4.55.4's core generate."""
    gold, model = gold_and_model
    for case in gold["cases"]:
        for prompt, expected in zip(gold["prompts"], case["alone"], strict=True):
            assert decode(model, [prompt], case, gold["eos_token_id"])[0] == expected, (
                case["method"],
                case["params"],
            )


def test_left_padded_batch_rows_equal_455_alone(gold_and_model):
    """One left-padded batch (repetition penalty 1.2 and pad == EOS in the marked cases): every row is 4.55's
    output for that row alone, and rows that stop early are padded."""
    gold, model = gold_and_model
    eos = gold["eos_token_id"]
    exercised_eos = False
    for case in gold["cases"]:
        batched = decode(model, gold["prompts"], case, eos)
        for row, expected in zip(batched, case["alone"], strict=True):
            assert trimmed(row, eos) == expected, (case["method"], case["params"])
            tail = row[len(expected) :]
            assert tail == [case["pad_token_id"]] * len(tail)
            exercised_eos |= eos in expected and case["pad_token_id"] == eos
    assert exercised_eos, "no pad == EOS case stops at EOS: the gold does not exercise the padded-EOS defect"
