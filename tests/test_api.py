"""``contrastive_decoding.generate``: text in, text out, batched, with one clear error per bad input."""

from __future__ import annotations

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.api import generate_outputs

from .tiny_models import tiny_model, tiny_tokenizer

PROMPTS = ["w5 w17 w300 w42", "w9 w8", "w100 w101 w102 w103 w104 w105"]
CONTEXT_FREE = ["w300 w42", "w8", "w105"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=6)


@pytest.fixture(scope="module")
def amateur():
    return tiny_model("llama", num_layers=2, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_greedy_text_matches_model_generate(model, tokenizer):
    texts = cd.generate(model, tokenizer, PROMPTS, max_new_tokens=6)
    for prompt, text in zip(PROMPTS, texts, strict=True):
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=6, do_sample=False)
        new = out[0, encoded["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id) + 1]
        assert text == tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize(
    "method, params",
    [
        ("contrastive_search", {"penalty_alpha": 0.6, "top_k": 4}),
        ("dola", {"dola_layers": "high", "repetition_penalty": 1.2}),
        ("expert_amateur", {"contrast_beta": 0.5}),
        ("cad", {"cad_alpha": 1.0}),
        ("adacad", {}),
        ("greedy", {"do_sample": True, "typical_p": 0.9, "seed": 3}),
        ("dola", {"do_sample": True, "top_p": 0.9, "temperature": 0.7, "seed": 3}),
        ("sled", {"evolution_rate": 1.5, "sled_layers": "high", "repetition_penalty": 1.05}),
        ("sled", {"do_sample": True, "temperature": 0.7, "seed": 3}),
        ("greedy", {"do_sample": True, "temperature": 2.0, "min_p": 0.1, "top_n_sigma": 1.0, "seed": 3}),
        (
            "cad",
            {"do_sample": True, "temperature": 2.0, "epsilon_cutoff": 1e-3, "eta_cutoff": 1e-3, "seed": 4},
        ),
    ],
)
def test_every_method_batched_equals_one_by_one(model, amateur, tokenizer, method, params):
    extra = {"amateur_model": amateur, "amateur_tokenizer": tokenizer} if method == "expert_amateur" else {}
    if method in ("cad", "adacad"):
        extra["context_free_prompts"] = CONTEXT_FREE
    batched = generate_outputs(
        model, tokenizer, PROMPTS, method, max_new_tokens=8, batch_size=3, **extra, **params
    )
    assert len(batched) == len(PROMPTS)
    assert all(isinstance(o.text, str) and o.token_ids for o in batched)
    if params.get("do_sample"):  # sampled: a seed reproduces the run
        again = generate_outputs(
            model, tokenizer, PROMPTS, method, max_new_tokens=8, batch_size=3, **extra, **params
        )
        assert [o.token_ids for o in again] == [o.token_ids for o in batched]
    for index, prompt in enumerate(PROMPTS):
        single = dict(extra)
        if "context_free_prompts" in single:
            single["context_free_prompts"] = [CONTEXT_FREE[index]]
        alone = generate_outputs(model, tokenizer, [prompt], method, max_new_tokens=8, **single, **params)[0]
        assert alone.token_ids == batched[index].token_ids
        assert alone.text == batched[index].text


def test_unseeded_top_n_sigma_runs_our_loop(model, tokenizer):
    """transformers' generate has no top_n_sigma: plain sampling with it goes through our decode loop, which
    draws from the global RNG as transformers does (same tokens after the same manual_seed)."""
    params = {"do_sample": True, "temperature": 2.0, "top_n_sigma": 0.5, "max_new_tokens": 8}
    torch.manual_seed(0)
    first = generate_outputs(model, tokenizer, PROMPTS, "greedy", **params)
    torch.manual_seed(0)
    again = generate_outputs(model, tokenizer, PROMPTS, "greedy", **params)
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    torch.manual_seed(0)
    wider = generate_outputs(model, tokenizer, PROMPTS, "greedy", **{**params, "top_n_sigma": 3.0})
    assert [o.token_ids for o in first] != [o.token_ids for o in wider]


def test_outputs_stop_at_eos(model, tokenizer):
    for output in generate_outputs(model, tokenizer, PROMPTS, "greedy", max_new_tokens=20):
        ids = output.token_ids
        assert tokenizer.eos_token_id not in ids[:-1]
        assert len(ids) == 20 or ids[-1] == tokenizer.eos_token_id


def test_unknown_method_suggests_a_name(model, tokenizer):
    with pytest.raises(ValueError, match="Unknown method 'dolla'. Did you mean 'dola'?"):
        cd.generate(model, tokenizer, PROMPTS, method="dolla")


def test_unknown_parameter_lists_valid_ones(model, tokenizer):
    with pytest.raises(ValueError, match="Unknown parameter 'penalty_alfa'.*Did you mean 'penalty_alpha'"):
        cd.generate(model, tokenizer, PROMPTS, method="contrastive_search", penalty_alfa=0.5)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"cad_alpha": 200.0}, r"cad_alpha must be in \[0, 100\], got 200.0"),
        ({"temperature": 0.0, "do_sample": True}, r"temperature must be in \(0, inf\)"),
        ({"typical_p": 1.5, "do_sample": True}, r"typical_p must be in \(0, 1\]"),
        (
            {"eta_cutoff": 1.0, "do_sample": True},
            r"eta_cutoff must be in \[0, 1\) \(0 disables it\), got 1.0",
        ),
        ({"repetition_penalty": -1.0}, r"repetition_penalty must be in \(0, inf\)"),
    ],
)
def test_out_of_range_parameters(model, tokenizer, params, message):
    with pytest.raises(ValueError, match=message):
        cd.generate(model, tokenizer, PROMPTS, method="cad", context_free_prompts=CONTEXT_FREE, **params)


def test_cad_needs_context_free_prompts(model, tokenizer):
    with pytest.raises(ValueError, match="cad needs one context_free_prompt"):
        cd.generate(model, tokenizer, PROMPTS, method="cad")
    with pytest.raises(ValueError, match="adacad needs one context_free_prompt"):
        cd.generate(model, tokenizer, PROMPTS, method="adacad", context_free_prompts=CONTEXT_FREE[:1])


def test_expert_amateur_needs_an_amateur(model, tokenizer):
    with pytest.raises(ValueError, match="expert_amateur needs an amateur model"):
        cd.generate(model, tokenizer, PROMPTS, method="expert_amateur")


def test_prompt_longer_than_the_context(model, tokenizer):
    long_prompt = " ".join(f"w{3 + i % 500}" for i in range(250))  # the tiny models hold 256 positions
    with pytest.raises(
        ValueError, match="prompt 1 has 250 tokens.*exceeds the model's context of 256 tokens"
    ):
        cd.generate(model, tokenizer, ["w5", long_prompt], max_new_tokens=10)


def test_contrastive_search_refuses_sampling(model, tokenizer):
    with pytest.raises(ValueError, match="contrastive_search is deterministic"):
        cd.generate(model, tokenizer, PROMPTS, method="contrastive_search", do_sample=True)


SEEDED = {  # flat enough on the tiny models that draws vary
    "greedy": {},
    "dola": {"dola_layers": "high", "relative_top": 0.0},
    "cad": {"context_free_prompts": CONTEXT_FREE},
    "adacad": {"context_free_prompts": CONTEXT_FREE},
    "condition_contrast": {"conditions": [["w17"], ["w9"], ["w101", "w104"]]},
    "layer_fusion": {},
    "sled": {"evolution_scale": 50},
}


@pytest.mark.parametrize("method", list(SEEDED))
def test_seeded_sampling_gives_each_row_what_it_gets_alone(model, tokenizer, method):
    """``seed=S``: every row is seeded with S and draws by (S, output position), whatever its batch."""
    params = SEEDED[method]

    def sample(seed, rows=None, batch_size=3):
        rows = list(range(len(PROMPTS))) if rows is None else rows
        row_params = {
            key: [value[i] for i in rows] for key, value in params.items() if isinstance(value, list)
        }
        outputs = generate_outputs(
            model, tokenizer, [PROMPTS[i] for i in rows], method, max_new_tokens=8, batch_size=batch_size,
            do_sample=True, temperature=3.0, seed=seed, **{**params, **row_params},
        )  # fmt: skip
        return [output.token_ids for output in outputs]

    together = sample(7)
    assert sample(7) == together
    assert sample(8) != together
    assert sample(7, batch_size=2) == together
    for row in range(len(PROMPTS)):
        assert sample(7, rows=[row]) == [together[row]], f"row {row}"
