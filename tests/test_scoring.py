"""``contrastive_decoding.scoring.score``: teacher-forced log-likelihood of continuations under each method.

Checked three ways: against generation (a greedy continuation scores as greedy, token by token with the step
scores ``model.generate`` reports), batched against one by one, and against a slow reference written out here
(batch size 1, no cache, one forward per prefix).
"""

from __future__ import annotations

import math

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.api import generate_outputs
from contrastive_decoding.scoring import ContinuationScore, continuation_positions, score

from .tiny_models import tiny_model, tiny_tokenizer

PROMPTS = ["w5 w17 w300 w42", "w9 w8", "w100 w101 w102 w103 w104 w105"]
CONTEXT_FREE = ["w300 w42", "w8", "w105"]
CONTINUATIONS = [" w7 w8 w9", " w400", " w11 w12 w13 w14 w15"]
DOLA_LAYERS = [0, 2, 4]
# (method, params) for every method score supports; "with_amateur": layer fusion given an amateur model
SCORED_METHOD_CASES = [
    ("greedy", {}),
    ("dola", {"dola_layers": DOLA_LAYERS}),
    ("dola", {"dola_layers": "high", "relative_top": 0.0, "early_exit_norm": True}),
    ("expert_amateur", {"contrast_beta": 0.5}),
    ("cad", {}),
    ("adacad", {}),
    ("layer_fusion", {"refocus_weight": 0.0}),
    ("layer_fusion", {"refocus_weight": 0.0, "with_amateur": True}),
    ("sled", {"sled_layers": DOLA_LAYERS, "evolution_scale": 20}),
]
NEW_TOKENS = 6


def assert_scores_close(actual, expected, scale: float = 1.0) -> None:
    """Per-token values equal up to float32 noise. A log-softmax value inherits absolute noise of about
    eps * the magnitude of the scores it normalizes, and DoLa's scores reach a few hundred (raw early exits
    give log-probs near -300): ``scale`` is that magnitude. -inf must match -inf."""
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float32),
        torch.as_tensor(expected, dtype=torch.float32),
        rtol=1e-5,
        atol=1e-5 * max(1.0, scale),
    )


def magnitude(values) -> float:
    """Largest finite absolute value."""
    values = torch.as_tensor(values, dtype=torch.float32)
    finite = values[torch.isfinite(values)]
    return float(finite.abs().max()) if finite.numel() else 1.0


@pytest.fixture(scope="module")
def model():
    model = tiny_model("llama", num_layers=6)
    model.generation_config.eos_token_id = None  # continuations run their full length
    return model


@pytest.fixture(scope="module")
def amateur():
    amateur = tiny_model("llama", num_layers=2, seed=1)
    amateur.generation_config.eos_token_id = None
    return amateur


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _method_setup(method, amateur, tokenizer):
    """(score/generate_outputs kwargs, model.generate kwargs per prompt index, custom_generate function)."""
    if method == "dola":
        return {"dola_layers": DOLA_LAYERS}, lambda i: {"dola_layers": DOLA_LAYERS}, cd.hf.dola
    if method == "dola_no_head":
        params = {"dola_layers": DOLA_LAYERS, "relative_top": 0.0}
        return params, lambda i: dict(params), cd.hf.dola
    if method == "sled":
        params = {"sled_layers": DOLA_LAYERS, "evolution_rate": 1.5, "evolution_scale": 20}
        return params, lambda i: dict(params), cd.hf.sled
    if method == "expert_amateur":
        kwargs = {"amateur_model": amateur, "amateur_tokenizer": tokenizer, "contrast_beta": 0.5}
        return (
            kwargs,
            lambda i: {"amateur_model": amateur, "amateur_tokenizer": tokenizer, "contrast_beta": 0.5},
            cd.hf.expert_amateur,
        )
    if method in ("cad", "adacad"):

        def free(i):
            encoded = tokenizer(CONTEXT_FREE[i], return_tensors="pt")
            return {
                "context_free_input_ids": encoded["input_ids"],
                "context_free_attention_mask": encoded["attention_mask"],
            }

        return {"context_free_contexts": CONTEXT_FREE}, free, getattr(cd.hf, method)
    return {}, lambda i: {}, cd.hf.greedy


def _api_kwargs(method, kwargs):
    kwargs = dict(kwargs)
    if "context_free_contexts" in kwargs:
        kwargs["context_free_prompts"] = kwargs.pop("context_free_contexts")
    return kwargs


@pytest.mark.parametrize(
    "method", ["greedy", "dola", "dola_no_head", "expert_amateur", "cad", "adacad", "sled"]
)
def test_greedy_continuation_scores_as_generation(model, amateur, tokenizer, method):
    name = "dola" if method.startswith("dola") else method
    kwargs, generate_kwargs, function = _method_setup(method, amateur, tokenizer)
    generated = generate_outputs(
        model, tokenizer, PROMPTS, name, max_new_tokens=NEW_TOKENS, batch_size=3, **_api_kwargs(name, kwargs)
    )
    continuations = [" " + tokenizer.decode(output.token_ids) for output in generated]
    for output, text in zip(generated, continuations, strict=True):
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == output.token_ids
    scores = score(model, tokenizer, PROMPTS, continuations, name, batch_size=3, **kwargs)

    for index, (prompt, output, result) in enumerate(zip(PROMPTS, generated, scores, strict=True)):
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **encoded,
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=True,
                custom_generate=function,
                **generate_kwargs(index),
            )
        tokens = out.sequences[0, encoded["input_ids"].shape[1] :].tolist()
        assert tokens == output.token_ids
        expected = torch.stack(
            [step[0].float().log_softmax(-1)[token] for step, token in zip(out.scores, tokens, strict=True)]
        )
        assert result.is_greedy
        assert result.num_tokens == NEW_TOKENS
        scale = max(magnitude(step[0]) for step in out.scores)
        assert_scores_close(result.token_logprobs, expected, scale)
        assert result.logprob == pytest.approx(sum(result.token_logprobs))


@pytest.mark.parametrize(
    "method, params",
    [
        ("greedy", {}),
        ("dola", {"dola_layers": DOLA_LAYERS, "relative_top": 0.0}),
        ("dola", {"dola_layers": DOLA_LAYERS}),
        ("expert_amateur", {}),
        ("cad", {"cad_alpha": 0.5}),
        ("adacad", {}),
        ("sled", {"evolution_scale": 20}),
        ("sled", {"evolution_steps": 10, "evolution_lower_bound": -100.0, "sled_layers": "high"}),
    ],
)
def test_batched_equals_one_by_one(model, amateur, tokenizer, method, params):
    contexts = PROMPTS + ["w33 w34", "w7"]
    continuations = CONTINUATIONS + [" w40 w41", " w300 w301 w302"]
    extra = dict(params)
    free = CONTEXT_FREE + ["w34", "w7"]
    if method == "expert_amateur":
        extra.update(amateur_model=amateur, amateur_tokenizer=tokenizer)
    batched = score(
        model,
        tokenizer,
        contexts,
        continuations,
        method,
        batch_size=3,
        **({"context_free_contexts": free} if method in ("cad", "adacad") else {}),
        **extra,
    )
    assert len(batched) == len(contexts)
    # DoLa's scores reach a few hundred: its log-softmax values carry proportionally larger float32 noise.
    scales = [magnitude(r.token_logprobs) for r in batched]
    if method == "dola":
        raw = score(model, tokenizer, contexts, continuations, method, batch_size=3, normalize=False, **extra)
        scales = [magnitude(r.token_logprobs) for r in raw]
    for index, (context, continuation) in enumerate(zip(contexts, continuations, strict=True)):
        single_free = {"context_free_contexts": [free[index]]} if method in ("cad", "adacad") else {}
        (alone,) = score(model, tokenizer, [context], [continuation], method, **single_free, **extra)
        assert isinstance(alone, ContinuationScore)
        assert alone.num_tokens == batched[index].num_tokens == len(continuation.split())
        assert alone.is_greedy == batched[index].is_greedy
        assert_scores_close(batched[index].token_logprobs, alone.token_logprobs, scales[index])


# --------------------------------------------------------------------------- slow references


@torch.no_grad()
def _last(model, ids: list[int], hidden: bool = False):
    return model(torch.tensor([ids]), output_hidden_states=hidden, use_cache=False)


def _ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    return tokenizer(context)["input_ids"], tokenizer(continuation, add_special_tokens=False)["input_ids"]


def reference_greedy(model, context: list[int], continuation: list[int]) -> list[float]:
    values = []
    for t, token in enumerate(continuation):
        logits = _last(model, context + continuation[:t]).logits[0, -1].float()
        values.append(float(logits.log_softmax(-1)[token]))
    return values


@torch.no_grad()
def reference_dola_steps(model, context, continuation, layers):
    """Per continuation position, DoLa's (final, premature) log-probs in float64, written out: raw (un-normed)
    early exits through the LM head, the premature layer the argmax of the DoLa code's divergence
    ``0.5 * (mean_v KL_v(M || p_final) + mean_v KL_v(M || p_early))``."""
    head = model.get_output_embeddings()
    steps = []
    for t in range(len(continuation)):
        out = _last(model, context + continuation[:t], hidden=True)
        final = out.logits[0, -1].double().log_softmax(-1)
        best, best_div = None, -math.inf
        for layer in layers:
            early = head(out.hidden_states[layer][0, -1]).double().log_softmax(-1)
            m = 0.5 * (final.exp() + early.exp())
            div = 0.5 * ((torch.xlogy(m, m) - m * final).mean() + (torch.xlogy(m, m) - m * early).mean())
            if div > best_div:
                best, best_div = early, div
        steps.append((final, best))
    return steps


def reference_dola(steps, continuation, relative_top, normalize):
    """(per-token values, largest finite |score|) from :func:`reference_dola_steps`: final - premature on the
    head ``p >= relative_top * max p`` (-inf elsewhere), log-softmaxed when ``normalize``."""
    values, scale = [], 1.0
    for (final, premature), token in zip(steps, continuation, strict=True):
        threshold = final.max() + (math.log(relative_top) if relative_top > 0 else -math.inf)
        diff = torch.where(final >= threshold, final - premature, torch.full_like(final, -math.inf))
        values.append(float((diff.log_softmax(-1) if normalize else diff)[token]))
        scale = max(scale, magnitude(diff))
    return values, scale


def reference_cad(model, context, free_context, continuation, alpha) -> list[float]:
    values = []
    for t, token in enumerate(continuation):
        with_context = _last(model, context + continuation[:t]).logits[0, -1].float().log_softmax(-1)
        without = _last(model, free_context + continuation[:t]).logits[0, -1].float().log_softmax(-1)
        contrast = (1 + alpha) * with_context - alpha * without
        values.append(float(contrast.log_softmax(-1)[token]))
    return values


def test_greedy_matches_reference(model, tokenizer):
    results = score(model, tokenizer, PROMPTS, CONTINUATIONS, batch_size=2)
    for context, continuation, result in zip(PROMPTS, CONTINUATIONS, results, strict=True):
        expected = reference_greedy(model, *_ids(tokenizer, context, continuation))
        assert_scores_close(result.token_logprobs, expected)
        assert result.logprob == pytest.approx(sum(expected), abs=1e-4)


def test_dola_matches_reference(model, tokenizer):
    references = []
    for context, continuation in zip(PROMPTS, CONTINUATIONS, strict=True):
        context_ids, continuation_ids = _ids(tokenizer, context, continuation)
        references.append(
            (continuation_ids, reference_dola_steps(model, context_ids, continuation_ids, DOLA_LAYERS))
        )
    for relative_top, normalize in [(0.0, True), (0.0, False), (0.1, True), (0.5, True), (0.5, False)]:
        results = score(
            model,
            tokenizer,
            PROMPTS,
            CONTINUATIONS,
            "dola",
            batch_size=3,
            dola_layers=DOLA_LAYERS,
            relative_top=relative_top,
            normalize=normalize,
        )
        for (continuation_ids, steps), result in zip(references, results, strict=True):
            expected, scale = reference_dola(steps, continuation_ids, relative_top, normalize)
            assert_scores_close(result.token_logprobs, expected, scale)  # -inf outside the head too


def test_dola_scores_minus_inf_outside_the_head(model, tokenizer):
    (result,) = score(model, tokenizer, PROMPTS[:1], CONTINUATIONS[:1], "dola", dola_layers=DOLA_LAYERS)
    with_head = torch.tensor(result.token_logprobs)
    (no_head,) = score(
        model, tokenizer, PROMPTS[:1], CONTINUATIONS[:1], "dola", dola_layers=DOLA_LAYERS, relative_top=0.0
    )
    assert torch.isfinite(torch.tensor(no_head.token_logprobs)).all()
    assert torch.isneginf(with_head).any()  # random continuation tokens fall outside the 0.1 head
    assert result.logprob == -math.inf and not result.is_greedy


@torch.no_grad()
def test_sled_matches_reference(model, tokenizer):
    """Each position's score is the literal transcription of SLED's step on that prefix (no cache, one row)."""
    from .reference_loops import sled_reference_scores

    head = model.get_output_embeddings()
    for steps, bound, normalize in [(1, -1000.0, True), (10, -100.0, False)]:
        results = score(
            model,
            tokenizer,
            PROMPTS,
            CONTINUATIONS,
            "sled",
            batch_size=3,
            sled_layers=DOLA_LAYERS,
            evolution_scale=30,
            evolution_steps=steps,
            evolution_lower_bound=bound,
            normalize=normalize,
        )
        for context, continuation, result in zip(PROMPTS, CONTINUATIONS, results, strict=True):
            context_ids, continuation_ids = _ids(tokenizer, context, continuation)
            expected, scale = [], 1.0
            for t, token in enumerate(continuation_ids):
                out = _last(model, context_ids + continuation_ids[:t], hidden=True)
                early = [head(out.hidden_states[layer][0, -1]).float() for layer in DOLA_LAYERS]
                scores = sled_reference_scores(out.logits[0, -1].float(), early, 2.0, 30, bound, steps=steps)
                expected.append(float((scores.log_softmax(-1) if normalize else scores)[token]))
                scale = max(scale, magnitude(scores))
            assert_scores_close(result.token_logprobs, expected, scale)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_cad_matches_reference(model, tokenizer, alpha):
    results = score(
        model,
        tokenizer,
        PROMPTS,
        CONTINUATIONS,
        "cad",
        context_free_contexts=CONTEXT_FREE,
        batch_size=3,
        cad_alpha=alpha,
    )
    for context, free, continuation, result in zip(
        PROMPTS, CONTEXT_FREE, CONTINUATIONS, results, strict=True
    ):
        context_ids, continuation_ids = _ids(tokenizer, context, continuation)
        free_ids = tokenizer(free)["input_ids"]
        expected = reference_cad(model, context_ids, free_ids, continuation_ids, alpha)
        assert_scores_close(result.token_logprobs, expected)
    if alpha == 0.0:  # CAD with alpha 0 is the model's own log-likelihood
        plain = score(model, tokenizer, PROMPTS, CONTINUATIONS)
        for a, b in zip(results, plain, strict=True):
            assert_scores_close(a.token_logprobs, b.token_logprobs)


def test_continuation_positions_by_hand():
    # rows end with continuations of 2, 0 and 3 tokens; window 4 = longest + 1
    expected = torch.tensor(
        [[False, True, True, False], [False, False, False, False], [True, True, True, False]]
    )
    assert torch.equal(continuation_positions(4, torch.tensor([2, 0, 3])), expected)


# --------------------------------------------------------------------------- errors


def test_unknown_method_suggests_a_name(model, tokenizer):
    with pytest.raises(ValueError, match="Unknown method 'dolla'. Did you mean 'dola'?"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, "dolla")


def test_contrastive_search_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="contrastive_search cannot score continuations"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, "contrastive_search")


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("dola", {"relative_tp": 0.1}, "Unknown parameter 'relative_tp'.*Did you mean 'relative_top'"),
        ("dola", {"relative_top": 1.5}, r"relative_top must be in \[0, 1\], got 1.5"),
        ("greedy", {"temperature": 0.7}, "score does not sample.*'temperature' is a generation parameter"),
        (
            "cad",
            {"cad_alpha": -1.0, "context_free_contexts": CONTEXT_FREE},
            r"cad_alpha must be in \[0, 100\]",
        ),
        ("greedy", {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_parameters(model, tokenizer, method, params, message):
    with pytest.raises(ValueError, match=message):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, method, **params)


def test_context_free_contexts_are_required(model, tokenizer):
    with pytest.raises(ValueError, match="cad needs context_free_contexts"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, "cad")
    with pytest.raises(ValueError, match="adacad needs one context_free_context per context, got 1 for 3"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, "adacad", context_free_contexts=CONTEXT_FREE[:1])


def test_expert_amateur_needs_an_amateur(model, tokenizer):
    with pytest.raises(ValueError, match="expert_amateur needs an amateur model"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, "expert_amateur")


def test_length_mismatch(model, tokenizer):
    with pytest.raises(ValueError, match="got 3 contexts and 2 continuations"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS[:2])


def test_empty_continuation(model, tokenizer):
    with pytest.raises(ValueError, match="continuation 1 is empty"):
        score(model, tokenizer, PROMPTS, [" w5", "  ", " w6"])


def test_too_long(model, tokenizer):
    long_context = " ".join(f"w{3 + i % 500}" for i in range(250))  # the tiny models hold 256 positions
    with pytest.raises(
        ValueError, match=r"pair 1 has 260 tokens \(context 250 \+ continuation 10\).*context of 256 tokens"
    ):
        score(model, tokenizer, ["w5", long_context], [" w6", " w7" * 10])


# --------------------------------------------------------------------------- shared prefixes


def test_scored_position_index_points_at_prefill_then_continuation_columns():
    from contrastive_decoding.teacher_forcing import scored_position_index

    # rows: prefix 0 (3 tokens), prefix 1 (1 token), prefix 0 (2 tokens); window = 2, G = 2
    index = scored_position_index([0, 1, 0], [3, 1, 2], window=2)
    # row 0: prefill 0, then row' 0 columns 0, 1 -> 2 + 0, 2 + 1; row 1: prefill 1; row 2: prefill 0, row' 1 col 0
    assert index.tolist() == [0, 2, 3, 1, 0, 4]


def test_batches_keep_a_context_together_and_split_only_oversized_ones():
    from contrastive_decoding.teacher_forcing import row_batches as _batches

    contexts = [[1, 2], [3], [1, 2], [4, 5, 6], [1, 2], [3]]
    continuations = [[7]] * 6
    assert _batches(contexts, continuations, 3, True) == [[3], [0, 2, 4], [1, 5]]
    assert _batches(contexts, continuations, 2, True) == [[3], [0, 2], [4], [1, 5]]
    flat = sorted(i for batch in _batches(contexts, continuations, 4, False) for i in batch)
    assert flat == list(range(6))


# Multiple-choice shaped input: two questions with 4 and 3 answers (lengths 1 to 5 tokens), a third question
# with one answer, in mixed order; the context-free contexts shared the same way.
CHOICE_CONTEXTS = [PROMPTS[0]] * 4 + [PROMPTS[2]] * 3 + [PROMPTS[1]]
CHOICE_FREE = [CONTEXT_FREE[0]] * 4 + [CONTEXT_FREE[2]] * 3 + [CONTEXT_FREE[1]]
CHOICE_ANSWERS = [
    " w7 w8 w9",
    " w400",
    " w11 w12 w13 w14 w15",
    " w3 w3",
    " w1",
    " w2 w20",
    " w99 w98 w97",
    " w6",
]
ORDER = [0, 4, 1, 7, 5, 2, 6, 3]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        *SCORED_METHOD_CASES,
        ("sled", {"evolution_steps": 10, "evolution_lower_bound": -100.0}),
    ],
)
@pytest.mark.parametrize("batch_size", [2, 8])
def test_shared_prefix_scores_equal_full_sequences(model, amateur, tokenizer, method, params, batch_size):
    """The cached path (each context once) and the reference path (each context + continuation in full)
    give the same per-token values within 1e-5 (float32), in any order and any batch split, for every method
    ``score`` supports."""
    contexts = [CHOICE_CONTEXTS[i] for i in ORDER]
    answers = [CHOICE_ANSWERS[i] for i in ORDER]
    extra = dict(params)
    if method == "expert_amateur" or extra.pop("with_amateur", False):
        extra.update(amateur_model=amateur, amateur_tokenizer=tokenizer)
    if method in ("cad", "adacad"):
        extra["context_free_contexts"] = [CHOICE_FREE[i] for i in ORDER]
    for normalize in (True, False):
        shared = score(
            model, tokenizer, contexts, answers, method, batch_size=batch_size, normalize=normalize, **extra
        )
        full = score(
            model,
            tokenizer,
            contexts,
            answers,
            method,
            batch_size=batch_size,
            normalize=normalize,
            share_prefixes=False,
            **extra,
        )
        for cached, reference in zip(shared, full, strict=True):
            assert cached.num_tokens == reference.num_tokens
            assert_scores_close(
                cached.token_logprobs, reference.token_logprobs, magnitude(reference.token_logprobs)
            )
            assert cached.is_greedy == reference.is_greedy


def test_share_prefixes_must_be_a_bool(model, tokenizer):
    with pytest.raises(ValueError, match="share_prefixes must be True or False"):
        score(model, tokenizer, PROMPTS, CONTINUATIONS, share_prefixes="yes")


@pytest.mark.parametrize("family", ["qwen2", "gemma3_text", "gpt2"])
def test_shared_prefix_scores_equal_full_sequences_per_family(tokenizer, family):
    """The cache reorder and the continued positions hold for other cache layouts (Gemma 3's sliding-window
    layers, GPT-2's learned positions)."""
    family_model = tiny_model(family, num_layers=4)
    contexts = [CHOICE_CONTEXTS[i] for i in ORDER]
    answers = [CHOICE_ANSWERS[i] for i in ORDER]
    method, params = ("greedy", {}) if family == "gpt2" else ("dola", {"dola_layers": [0, 2]})
    shared = score(family_model, tokenizer, contexts, answers, method, batch_size=3, **params)
    full = score(
        family_model, tokenizer, contexts, answers, method, batch_size=3, share_prefixes=False, **params
    )
    for cached, reference in zip(shared, full, strict=True):
        assert_scores_close(
            cached.token_logprobs, reference.token_logprobs, magnitude(reference.token_logprobs)
        )
