"""Equivalence tests on tiny random models (no downloads): every method at zero contrast equals greedy, batched
equals unbatched, the KV-cached loop equals the slow no-cache reference loop, CAD equals transformers' CFG."""

from __future__ import annotations

import math

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad

from . import reference_loops as ref
from .tiny_models import PAD_TOKEN_ID, random_prompts, tiny_model

STEPS = 10
FAMILIES = ["llama", "qwen2", "gemma3_text", "gpt2"]
DOLA_ONLY_FAMILIES = ["qwen3", "mistral", "phi3", "gemma3_softcap", "gpt_neox"]


def no_eos(model):
    """Generation runs every step (reference loops do not stop at EOS)."""
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def models() -> dict:
    built = {family: no_eos(tiny_model(family, num_layers=6)) for family in FAMILIES}
    built["llama_tied"] = no_eos(tiny_model("llama", num_layers=6, tie_word_embeddings=True, seed=3))
    built["amateur"] = no_eos(tiny_model("llama", num_layers=2, seed=1))
    return built


@pytest.fixture(scope="module")
def more_models() -> dict:
    """Families DoLa reaches through the generic early exits (no per-family table)."""
    return {family: no_eos(tiny_model(family, num_layers=6)) for family in DOLA_ONLY_FAMILIES}


def generate(model, prompts: list[torch.Tensor], steps: int = STEPS, free=None, **kwargs) -> list[list[int]]:
    """Left-pad ``prompts`` into one batch, run ``model.generate`` and return each row's new tokens."""
    input_ids, attention_mask = left_pad(prompts, PAD_TOKEN_ID)
    if free is not None:
        free_ids, free_mask = left_pad(free, PAD_TOKEN_ID)
        kwargs.update(context_free_input_ids=free_ids, context_free_attention_mask=free_mask)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=steps,
            do_sample=False,
            **kwargs,
        )
    return out[:, input_ids.shape[1] :].tolist()


def method_kwargs(method: str, models: dict) -> dict:
    return {
        "contrastive_search": {"custom_generate": cd.hf.contrastive_search, "penalty_alpha": 0.6, "top_k": 4},
        "dola": {"custom_generate": cd.hf.dola, "dola_layers": [0, 2, 4]},
        "dola_high": {"custom_generate": cd.hf.dola, "dola_layers": "high"},
        "expert_amateur": {"custom_generate": cd.hf.expert_amateur, "amateur_model": models["amateur"]},
        "expert_amateur_beta": {
            "custom_generate": cd.hf.expert_amateur,
            "amateur_model": models["amateur"],
            "contrast_beta": 0.5,
            "amateur_temperature": 0.7,
        },
        "cad": {"custom_generate": cd.hf.cad, "cad_alpha": 1.0},
        "adacad": {"custom_generate": cd.hf.adacad},
        "sled": {"custom_generate": cd.hf.sled},
        "sled_list": {"custom_generate": cd.hf.sled, "sled_layers": [0, 2, 4], "evolution_scale": 5},
    }[method]


CONTEXT_METHODS = {"cad", "adacad"}


def context_free(prompts: list[torch.Tensor]) -> list[torch.Tensor]:
    """The 'question without its context': the last few tokens of each prompt."""
    return [prompt[-2:] for prompt in prompts]


# --- our plain loop == transformers' greedy ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_our_greedy_loop_equals_transformers_greedy(models, family):
    prompts = random_prompts([4, 9, 6], seed=1)
    assert generate(models[family], prompts, custom_generate=cd.hf.greedy) == generate(
        models[family], prompts
    )


# --- zero contrast == greedy -------------------------------------------------------------------------------


ZERO_CONTRAST = [
    ("contrastive_search", {"penalty_alpha": 0.0}),
    ("dola", {"relative_top": 1.0}),  # the plausibility head holds only the final layer's argmax
    ("cad", {"cad_alpha": 0.0}),
    ("adacad", {"adacad_threshold": math.log(2.0)}),  # JSD < ln 2 always: alpha_t = 0
    ("sled", {"evolution_rate": 0.0}),  # the final logits on the top tokens, the lower bound elsewhere
]
# The amateur is a tiny llama: expert-amateur runs on the llama family only.
ZERO_CONTRAST_CASES = [(family, *case) for family in FAMILIES for case in ZERO_CONTRAST] + [
    ("llama", "expert_amateur", {"contrast_beta": 0.0}),
    ("llama", "expert_amateur", {"plausibility_alpha": 1.0}),
]


@pytest.mark.parametrize("family, method, zero", ZERO_CONTRAST_CASES)
def test_zero_contrast_equals_greedy(models, family, method, zero):
    model = models[family]
    prompts = random_prompts([5, 8, 3], seed=2)
    kwargs = {**method_kwargs(method, models), **zero}
    free = context_free(prompts) if method in CONTEXT_METHODS else None
    assert generate(model, prompts, free=free, **kwargs) == generate(model, prompts)


def test_adacad_with_identical_context_free_prompt_is_greedy(models):
    model = models["llama"]
    prompts = random_prompts([5, 8], seed=3)
    assert generate(model, prompts, free=prompts, **method_kwargs("adacad", models)) == generate(
        model, prompts
    )


def test_contrast_changes_the_output(models):
    """The methods at their defaults do something: not one of them equals greedy on every row."""
    model = models["llama"]
    prompts = random_prompts([5, 8, 3, 6], seed=4)
    greedy = generate(model, prompts)
    for method in ("contrastive_search", "dola", "expert_amateur", "cad", "adacad", "sled"):
        free = context_free(prompts) if method in CONTEXT_METHODS else None
        assert generate(model, prompts, free=free, **method_kwargs(method, models)) != greedy, method


# --- batched == unbatched ----------------------------------------------------------------------------------

BATCH_CASES = [
    ("llama", "contrastive_search"),
    ("qwen2", "contrastive_search"),
    ("gpt2", "contrastive_search"),
    ("llama", "dola"),
    ("llama_tied", "dola_high"),
    ("qwen2", "dola_high"),
    ("gemma3_text", "dola"),
    ("gpt2", "dola"),
    ("llama", "expert_amateur"),
    ("llama", "expert_amateur_beta"),
    ("llama", "cad"),
    ("gemma3_text", "cad"),
    ("llama", "adacad"),
    ("qwen2", "adacad"),
    ("llama", "sled"),
    ("llama_tied", "sled_list"),
    ("gpt2", "sled"),
]


@pytest.mark.parametrize("family, method", BATCH_CASES)
def test_batched_equals_unbatched(models, family, method):
    model = models[family]
    prompts = random_prompts([3, 9, 6, 1], seed=5)
    free = [prompt[-k:] for prompt, k in zip(prompts, [1, 4, 2, 1], strict=True)]
    kwargs = method_kwargs(method, models)
    use_free = method in CONTEXT_METHODS
    batched = generate(model, prompts, free=free if use_free else None, **kwargs)
    alone = [
        generate(model, [p], free=[f] if use_free else None, **kwargs)[0]
        for p, f in zip(prompts, free, strict=True)
    ]
    assert batched == alone


# --- KV-cached loop == slow no-cache reference loop --------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "gpt2"])
def test_contrastive_search_matches_reference_loop(models, family):
    model = models[family]
    for prompt in random_prompts([4, 7], seed=6):
        expected = ref.contrastive_search(model, prompt.tolist(), STEPS, penalty_alpha=0.6, top_k=4)
        assert generate(model, [prompt], **method_kwargs("contrastive_search", models))[0] == expected


@pytest.mark.parametrize("family", ["llama", "llama_tied", "qwen2", "gemma3_text", "gpt2"])
def test_dola_matches_reference_loop(models, family):
    model = models[family]
    for prompt in random_prompts([4, 7], seed=7):
        expected = ref.dola(model, prompt.tolist(), STEPS, layers=[0, 2, 4])
        assert generate(model, [prompt], **method_kwargs("dola", models))[0] == expected


@pytest.mark.parametrize("family", DOLA_ONLY_FAMILIES)
def test_dola_matches_reference_loop_on_any_decoder(more_models, family):
    """Phi-3, Qwen3, Mistral, GPT-NeoX, and Gemma 3 with final logit soft-capping (applied to the early exits as
    to the final logits): batched DoLa equals the slow loop row by row."""
    model = more_models[family]
    prompts = random_prompts([4, 7], seed=7)
    expected = [ref.dola(model, prompt.tolist(), STEPS, layers=[0, 2, 4]) for prompt in prompts]
    assert generate(model, prompts, custom_generate=cd.hf.dola, dola_layers=[0, 2, 4]) == expected


@pytest.mark.parametrize("family", ["llama", "llama_tied", "qwen2", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("method", ["sled", "sled_list"])
def test_sled_matches_reference_loop(models, family, method):
    model = models[family]
    kwargs = method_kwargs(method, models)
    layers = kwargs.get("sled_layers", list(range(model.config.num_hidden_layers)))
    for prompt in random_prompts([4, 7], seed=9):
        expected = ref.sled(
            model, prompt.tolist(), STEPS, layers=layers, evolution_scale=kwargs.get("evolution_scale", 10)
        )
        assert generate(model, [prompt], **kwargs)[0] == expected


@pytest.mark.parametrize("beta, temperature", [(None, 1.0), (None, 0.5), (0.5, 1.0)])
def test_expert_amateur_matches_reference_loop(models, beta, temperature):
    expert, amateur = models["llama"], models["amateur"]
    for prompt in random_prompts([4, 7], seed=8):
        expected = ref.expert_amateur(
            expert, amateur, prompt.tolist(), STEPS, amateur_temperature=temperature, beta=beta
        )
        got = generate(
            expert,
            [prompt],
            custom_generate=cd.hf.expert_amateur,
            amateur_model=amateur,
            contrast_beta=beta,
            amateur_temperature=temperature,
        )[0]
        assert got == expected


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_cad_matches_reference_loop(models, family, adaptive):
    model = models[family]
    method = "adacad" if adaptive else "cad"
    for prompt in random_prompts([6, 9], seed=9):
        free = prompt[-3:]
        expected = ref.cad(model, prompt.tolist(), free.tolist(), STEPS, alpha=0.7, adaptive=adaptive)
        kwargs = method_kwargs(method, models)
        if not adaptive:
            kwargs["cad_alpha"] = 0.7
        assert generate(model, [prompt], free=[free], **kwargs)[0] == expected


# --- CAD == transformers' classifier-free guidance ----------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_cad_equals_classifier_free_guidance(models, alpha):
    """CFG with guidance_scale = 1 + alpha and the context-free prompt as negative prompt computes the same
    scores: same tokens and the same processed scores at every step."""
    model = models["llama"]
    for prompt in random_prompts([6, 10], seed=10):
        free = prompt[-3:]
        input_ids, negative = prompt[None], free[None]
        common = dict(max_new_tokens=STEPS, do_sample=False, return_dict_in_generate=True, output_scores=True)
        with torch.no_grad():
            cfg = model.generate(
                input_ids=input_ids, guidance_scale=1.0 + alpha, negative_prompt_ids=negative, **common
            )
            ours = model.generate(
                input_ids=input_ids,
                custom_generate=cd.hf.cad,
                cad_alpha=alpha,
                context_free_input_ids=negative,
                **common,
            )
        assert ours.sequences.tolist() == cfg.sequences.tolist()
        for our_scores, cfg_scores in zip(ours.scores, cfg.scores, strict=True):
            torch.testing.assert_close(our_scores, cfg_scores, rtol=1e-4, atol=1e-4)
