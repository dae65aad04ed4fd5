"""Multi-layer fusion contrast: math by hand, reductions (a one-token head = greedy; lambda 0 = expert-amateur
CD), batched = unbatched, KV cache = a slow loop over full sequences, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad
from contrastive_decoding.decoding.layer_fusion import LayerFusionConfig, layer_fusion_contrast, lower_layers
from tests.tiny_models import random_prompts, tiny_model

NEW_TOKENS = 6
INSTRUCTION = torch.tensor([7, 8, 9])


def test_fusion_by_hand():
    log = torch.log
    expert = log(torch.tensor([[0.7, 0.25, 0.05]]))
    amateur = log(torch.tensor([[0.5, 0.4, 0.1]]))
    expert_lower = log(torch.tensor([[0.4, 0.4, 0.2]]))
    amateur_lower = log(torch.tensor([[0.2, 0.6, 0.2]]))
    cfg = LayerFusionConfig(fusion_lambda=0.5, plausibility_alpha=0.3)  # head: p >= 0.21 -> tokens 0, 1
    scores = layer_fusion_contrast(expert, amateur, expert_lower, amateur_lower, cfg)
    expected = (expert - amateur) + 0.5 * (expert_lower - amateur_lower)
    assert scores[0, :2] == pytest.approx(expected[0, :2], abs=1e-6)
    assert scores[0, 2] == -math.inf
    refocused = log(torch.tensor([[0.9, 0.05, 0.05]]))
    cfg = LayerFusionConfig(fusion_lambda=0.0, plausibility_alpha=0.0, refocus_weight=2.0)
    scores = layer_fusion_contrast(expert, amateur, expert_lower, amateur_lower, cfg, refocused)
    assert scores == pytest.approx(expert - amateur + 2.0 * (refocused - expert), abs=1e-6)


def test_lower_layers_default_and_relative_depth():
    assert lower_layers(LayerFusionConfig(), 24, 24) == (12, 12)
    assert lower_layers(LayerFusionConfig(fusion_layer=18), 24, 12) == (18, 9)
    with pytest.raises(ValueError, match=r"fusion_layer must be in \[1, 5\]"):
        lower_layers(LayerFusionConfig(fusion_layer=6), 6, 2)


@pytest.fixture(scope="module")
def models():
    return tiny_model("llama", num_layers=6), tiny_model("llama", num_layers=2, seed=1)


@pytest.fixture(scope="module")
def batch():
    prompts = random_prompts([8, 11, 6], seed=5)
    ids, mask = left_pad(prompts, 0)
    induced = [torch.cat([INSTRUCTION, p]) for p in prompts]
    return prompts, ids, mask, induced


def run(model, ids, mask, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
        custom_generate=cd.hf.layer_fusion,
        **kwargs,
    )


def induced_kwargs(induced):
    ids, mask = left_pad(induced, 0)
    return {"amateur_input_ids": ids, "amateur_attention_mask": mask}


def test_one_token_head_is_greedy(models, batch):
    expert, amateur = models
    _, ids, mask, induced = batch
    plain = expert.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
    )
    assert torch.equal(run(expert, ids, mask, amateur_model=amateur, plausibility_alpha=1.0), plain)
    assert torch.equal(run(expert, ids, mask, plausibility_alpha=1.0, **induced_kwargs(induced)), plain)


def test_lambda_zero_is_expert_amateur_decoding(models, batch):
    expert, amateur = models
    _, ids, mask, _ = batch
    fused = run(expert, ids, mask, amateur_model=amateur, fusion_lambda=0.0)
    contrast = expert.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
        custom_generate=cd.hf.expert_amateur, amateur_model=amateur,
    )  # fmt: skip
    assert torch.equal(fused, contrast)


@pytest.mark.parametrize("mode", ["amateur_model", "induced"])
def test_batched_equals_unbatched(models, batch, mode):
    expert, amateur = models
    prompts, ids, mask, induced = batch
    kwargs = {"amateur_model": amateur} if mode == "amateur_model" else induced_kwargs(induced)
    together = run(expert, ids, mask, **kwargs)
    for row, prompt in enumerate(prompts):
        alone_kwargs = (
            {"amateur_model": amateur} if mode == "amateur_model" else induced_kwargs([induced[row]])
        )
        alone = run(expert, prompt[None], None, **alone_kwargs)
        assert alone[0, -NEW_TOKENS:].tolist() == together[row, -NEW_TOKENS:].tolist()


def _final_and_lower(model, sequence, layer):
    outputs = model(sequence, output_hidden_states=True)
    lower_state = model.model.norm(outputs.hidden_states[layer][:, -1])
    return outputs.logits[:, -1].float(), model.lm_head(lower_state).float()


def test_kv_cached_equals_slow_reference_loop(models, batch):
    expert, _ = models
    prompts, _, _, induced = batch
    cfg = LayerFusionConfig(fusion_lambda=1.0, refocus_weight=0.5)
    refocus = torch.cat([torch.tensor([11, 12]), prompts[1]])
    sequences = [prompts[1][None], induced[1][None], refocus[None]]
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            (ef, el), (af, al), (rf, _) = (_final_and_lower(expert, s, 3) for s in sequences)
            token = layer_fusion_contrast(ef, af, el, al, cfg, rf).argmax(-1, keepdim=True)
            sequences = [torch.cat([s, token], -1) for s in sequences]
    fast = run(
        expert, prompts[1][None], None, refocus_input_ids=refocus[None], refocus_weight=0.5,
        **induced_kwargs([induced[1]]),
    )  # fmt: skip
    assert fast[0].tolist() == sequences[0][0].tolist()


def test_clear_errors(models, batch):
    expert, _ = models
    _, ids, mask, induced = batch
    with pytest.raises(ValueError, match="layer_fusion needs an amateur"):
        run(expert, ids, mask)
    with pytest.raises(ValueError, match="refocus_weight > 0 needs refocus_input_ids"):
        run(expert, ids, mask, refocus_weight=1.0, **induced_kwargs(induced))
    with pytest.raises(ValueError, match="fusion_layer must be in"):
        run(expert, ids, mask, fusion_layer=6, **induced_kwargs(induced))
    with pytest.raises(ValueError, match="fusion_lambda"):
        run(expert, ids, mask, fusion_lambda=-1.0, **induced_kwargs(induced))


def test_api_generation_is_greedy_under_scoring(tmp_path):
    """cd.generate with layer_fusion (the induced amateur built from the default instruction, or a smaller
    model) produces tokens that cd.score, teacher-forcing the same contrast, ranks first at every position."""
    from contrastive_decoding.scoring import score
    from tests.tiny_models import tiny_tokenizer, words

    expert, amateur = tiny_model("llama", num_layers=6), tiny_model("llama", num_layers=2, seed=1)
    tokenizer = tiny_tokenizer()
    prompts = [words(p) for p in random_prompts([6, 9], seed=8)]
    for kwargs in ({}, {"amateur_model": amateur, "amateur_tokenizer": tokenizer}):
        outputs = cd.generate_outputs(
            expert,
            tokenizer,
            prompts,
            "layer_fusion",
            max_new_tokens=4,
            amateur_instruction="w40 w41 w42 ",
            **kwargs,
        )
        continuations = [" " + words(o.token_ids) for o in outputs]
        scored = score(
            expert,
            tokenizer,
            prompts,
            continuations,
            "layer_fusion",
            amateur_instruction="w40 w41 w42 ",
            **kwargs,
        )
        assert all(result.is_greedy for result in scored), [r.token_logprobs for r in scored]
