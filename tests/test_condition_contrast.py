"""Condition contrast (knowledge overshadowing): math on hand-built distributions, condition-dropped prompts,
zero strength = greedy, batched = unbatched, KV cache = slow reference loop, API / CLI and clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad
from contrastive_decoding.cli import main
from contrastive_decoding.decoding.condition import (
    ConditionContrastConfig,
    condition_contrast,
    condition_effects,
    fill_template,
    prompts_without_spans,
)
from tests.tiny_models import random_prompts, tiny_model, tiny_tokenizer

NEW_TOKENS = 6


def test_effects_by_hand():
    full = torch.log(torch.tensor([[0.5, 0.5, 1e-30], [1.0, 1e-30, 1e-30]]))  # [2, 3]
    same = full.clone()
    disjoint = torch.log(torch.tensor([[1e-30, 1e-30, 1.0], [1e-30, 1.0, 1e-30]]))
    effects = condition_effects(full, torch.stack([same, disjoint]))  # [2, 2]
    assert effects[0] == pytest.approx(torch.zeros(2), abs=1e-6)
    assert effects[1] == pytest.approx(torch.full((2,), math.log(2.0)), abs=1e-5)


def test_contrast_targets_the_weakest_condition_or_all():
    full = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    first = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    second = torch.log(torch.tensor([[0.6, 0.2, 0.2]]))
    dropped = torch.stack([first, second])  # [2, 1, 3]
    mean = torch.tensor([[0.3], [0.1]])  # condition 1 moved the distribution least
    scores, target = condition_contrast(full, dropped, mean, ConditionContrastConfig(condition_alpha=1.0))
    assert target.tolist() == [1]
    assert scores == pytest.approx(2 * full - second)
    scores, target = condition_contrast(full, dropped, mean, ConditionContrastConfig(condition_target="all"))
    assert target.tolist() == [-1]
    assert scores == pytest.approx(2 * full - (first + second) / 2)
    zero, _ = condition_contrast(full, dropped, mean, ConditionContrastConfig(condition_alpha=0.0))
    assert zero == pytest.approx(full.log_softmax(-1))


def test_condition_dropped_prompts():
    prompt = "Name a female Canadian physicist."
    assert prompts_without_spans(prompt, [(7, 13), (14, 22)]) == [
        "Name a Canadian physicist.",
        "Name a female physicist.",
    ]
    full, dropped = fill_template(
        "Name a {gender} {nationality} physicist.", {"gender": "female", "nationality": "Canadian"}
    )
    assert full == prompt and dropped == {
        "gender": "Name a Canadian physicist.",
        "nationality": "Name a female physicist.",
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prompts_without_spans("abc", []), "at least one marked condition"),
        (lambda: prompts_without_spans("abc", [(1, 9)]), "outside the prompt"),
        (lambda: prompts_without_spans("abcdef", [(0, 3), (2, 4)]), "overlap"),
        (lambda: fill_template("a {x} b", {"y": "1", "x": "2"}), "not slots of the template"),
        (lambda: fill_template("no slots", {}), "no {slot}"),
        (lambda: ConditionContrastConfig(condition_alpha=-1.0), "condition_alpha"),
        (lambda: ConditionContrastConfig(condition_target="weak"), "Did you mean 'weakest'"),
    ],
)
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def batch():
    prompts = random_prompts([9, 12, 7], seed=3)
    ids, mask = left_pad(prompts, 0)
    drops = [[p[2:] for p in prompts], [torch.cat([p[:3], p[5:]]) for p in prompts]]
    dropped = [left_pad(rows, 0) for rows in drops]
    return prompts, ids, mask, drops, dropped


def run(model, ids, mask, dropped, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
        custom_generate=cd.hf.condition_contrast,
        condition_free_input_ids=[d[0] for d in dropped],
        condition_free_attention_mask=[d[1] for d in dropped],
        **kwargs,
    )


def test_zero_strength_equals_greedy(model, batch):
    _, ids, mask, _, dropped = batch
    plain = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
    )
    assert torch.equal(run(model, ids, mask, dropped, condition_alpha=0.0), plain)
    assert not torch.equal(run(model, ids, mask, dropped, condition_alpha=2.0), plain)


@pytest.mark.parametrize("target", ["weakest", "all"])
def test_batched_equals_unbatched(model, batch, target):
    prompts, ids, mask, drops, dropped = batch
    together = run(
        model, ids, mask, dropped, condition_alpha=2.0, condition_target=target, return_dict_in_generate=True
    )
    for row, prompt in enumerate(prompts):
        alone_dropped = [left_pad([rows[row]], 0) for rows in drops]
        alone = run(model, prompt[None], None, alone_dropped, condition_alpha=2.0, condition_target=target,
                    return_dict_in_generate=True)  # fmt: skip
        assert alone.sequences[0, -NEW_TOKENS:].tolist() == together.sequences[row, -NEW_TOKENS:].tolist()
        torch.testing.assert_close(
            alone.condition_effects[0], together.condition_effects[row], atol=1e-5, rtol=1e-4
        )


def test_kv_cached_equals_slow_reference_loop(model, batch):
    prompts, _, _, drops, _ = batch
    prompt, variants = prompts[1], [rows[1] for rows in drops]
    sequence, others = prompt[None], [v[None] for v in variants]
    effect_sums = torch.zeros(2)
    with torch.no_grad():
        for step in range(NEW_TOKENS):
            full = model(sequence).logits[:, -1].float()
            dropped = torch.stack([model(o).logits[:, -1].float() for o in others])  # [2, 1, V]
            effects = condition_effects(full, dropped)[:, 0]
            effect_sums += effects
            scores, _ = condition_contrast(
                full, dropped, (effect_sums / (step + 1))[:, None], ConditionContrastConfig(2.0)
            )
            token = scores.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], -1)
            others = [torch.cat([o, token], -1) for o in others]
    fast = run(model, prompt[None], None, [left_pad([v], 0) for v in variants], condition_alpha=2.0,
               return_dict_in_generate=True)  # fmt: skip
    assert fast.sequences[0].tolist() == sequence[0].tolist()
    torch.testing.assert_close(fast.condition_effects[0], effect_sums / NEW_TOKENS, atol=1e-5, rtol=1e-4)


def test_needs_a_marked_condition(model, batch):
    _, ids, mask, _, _ = batch
    with pytest.raises(ValueError, match="at least one marked condition"):
        run(model, ids, mask, [])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_api_and_cli_rows_return_the_effects(checkpoint, tmp_path):
    from contrastive_decoding.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(checkpoint)
    prompts = ["w5 w6 w7 w8 w9", "w10 w11 {a} w12 {b} w13"]
    marks = [["w6", "w8 w9"], {"a": "w20", "b": "w21 w22"}]
    outputs = cd.generate_outputs(
        model, tokenizer, prompts, "condition_contrast", conditions=marks, max_new_tokens=4
    )
    assert list(outputs[0].extras["condition_effects"]) == ["w6", "w8 w9"]
    assert list(outputs[1].extras["condition_effects"]) == ["a", "b"]
    assert outputs[1].extras["overshadowed_condition"] in ("a", "b")
    source = tmp_path / "rows.jsonl"
    source.write_text(
        "".join(
            json.dumps({"prompt": p, "conditions": m}) + "\n" for p, m in zip(prompts, marks, strict=True)
        )
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main,
        ["generate", "--model", checkpoint, "--method", "condition_contrast", "--input", str(source), "--output", str(out),
         "--max-new-tokens", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["token_ids"] for row in rows] == [o.token_ids for o in outputs]
    assert rows[0]["condition_effects"] == pytest.approx(outputs[0].extras["condition_effects"])
    bad = CliRunner().invoke(
        main,
        [
            "generate",
            "--model",
            checkpoint,
            "--method",
            "condition_contrast",
            "--prompt",
            "w5 w6",
            "--condition",
            "w9",
        ],
    )
    assert bad.exit_code != 0 and "does not occur in the prompt" in bad.output
