"""``PrefixCache`` and the packed forward: contexts reused across ``score`` calls give the scores of the full
path (every context + continuation run whole) within 1e-5 in float32, for every method ``score`` supports,
and really skip the shared tokens; the packed layout equals the padded one."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.prefix_cache import PrefixCache, common_length
from contrastive_decoding.scoring import score
from contrastive_decoding.teacher_forcing import PrefixRows, output_head, prefix_forward

from .test_scoring import DOLA_LAYERS, SCORED_METHOD_CASES, assert_scores_close, magnitude
from .tiny_models import tiny_model, tiny_tokenizer

STEM = " ".join(f"w{i}" for i in range(10, 50))  # 40 tokens every item starts with (a few-shot stem)
ANSWERS = [" w7 w8 w9", " w400", " w11 w12 w13 w14 w15", " w3 w3"]

# One call per entry: (contexts, context-free contexts, answers), in this order on one cache. Items sharing the
# stem, one sharing nothing, a context that extends a cached one and one that is a strict prefix of a cached
# one, an item seen before, then calls with several contexts (some sharing the stem, some not).
CALLS = [
    ([STEM + " w50 w51"] * 4, ["w50 w51"] * 4, ANSWERS),
    ([STEM + " w60"] * 3, ["w60"] * 3, ANSWERS[:3]),
    (["w200 w201 w202"] * 2, ["w202"] * 2, ANSWERS[1:3]),
    ([STEM + " w50 w51 w52 w53"] * 4, ["w52 w53"] * 4, ANSWERS),
    ([STEM + " w50"] * 2, ["w50"] * 2, ANSWERS[2:]),
    ([STEM + " w50 w51"] * 4, ["w50 w51"] * 4, ANSWERS),
    (
        [STEM + " w70"] * 2 + [STEM + " w71 w72"] * 2 + ["w300"],
        ["w70"] * 2 + ["w71 w72"] * 2 + ["w300"],
        [" w1 w2", " w3", " w4 w5 w6", " w7", " w8 w9"],
    ),
    ([STEM[:20], STEM + " w80 w81", STEM[:20]], ["w5", "w80 w81", "w5"], [" w1", " w2 w3", " w4 w5"]),
]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=6)


@pytest.fixture(scope="module")
def amateur():
    return tiny_model("llama", num_layers=2, seed=1)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _kwargs(method, params, amateur, tokenizer, free):
    extra = dict(params)
    if method == "expert_amateur" or extra.pop("with_amateur", False):
        extra.update(amateur_model=amateur, amateur_tokenizer=tokenizer)
    if method in ("cad", "adacad"):
        extra["context_free_contexts"] = free
    return extra


def assert_same_scores(actual, expected, scales=None) -> None:
    """Per-token values equal within 1e-5 relative to ``scales[i]`` (default: row i's own magnitude)."""
    for index, (cached, reference) in enumerate(zip(actual, expected, strict=True)):
        assert cached.num_tokens == reference.num_tokens
        scale = scales[index] if scales is not None else magnitude(reference.token_logprobs)
        assert_scores_close(cached.token_logprobs, reference.token_logprobs, scale)
        assert cached.is_greedy == reference.is_greedy


@pytest.mark.parametrize(("method", "params"), SCORED_METHOD_CASES)
@pytest.mark.parametrize("batch_size", [3, 8])
def test_cached_scores_equal_full_sequences(model, amateur, tokenizer, method, params, batch_size):
    """Over calls on one cache (shared stems, none shared, a strict prefix of a cached context, the same one
    again, several contexts per call, batch splits): the cached path equals the full path and the uncached
    shared path. The tolerance is 1e-5 of the row's log-probability magnitude (the normalized values'), also
    for DoLa's raw differences of log-probs (``normalize=False``), whose float noise is that of the log-probs."""
    cache = PrefixCache(max_entries=2)
    for contexts, free, answers in CALLS:
        extra = _kwargs(method, params, amateur, tokenizer, free)
        scales = None
        for normalize in (True, False) if method in ("dola", "sled") else (True,):
            run = {"batch_size": batch_size, "normalize": normalize, **extra}
            cached = score(model, tokenizer, contexts, answers, method, prefix_cache=cache, **run)
            full = score(model, tokenizer, contexts, answers, method, share_prefixes=False, **run)
            shared = score(model, tokenizer, contexts, answers, method, **run)
            scales = scales or [magnitude(result.token_logprobs) for result in full]
            assert_same_scores(cached, full, scales)
            assert_same_scores(cached, shared, scales)
    assert cache.reused_tokens > 0
    assert len(cache.cached_prefixes(model)) <= 2


def _count_tokens(model):
    """A forward pre-hook counting the tokens (rows x columns) each forward of ``model`` runs."""
    counter = {"tokens": 0}

    def hook(module, args, kwargs):
        counter["tokens"] += int(kwargs["input_ids"].numel())

    return counter, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", ["greedy", "dola"])
def test_a_hit_runs_only_the_tokens_after_the_shared_ones(model, tokenizer, method):
    params = {"dola_layers": DOLA_LAYERS} if method == "dola" else {}
    first, second = STEM + " w50 w51", STEM + " w60 w61 w62"
    shared = common_length(tokenizer(first)["input_ids"], tokenizer(second)["input_ids"])
    assert shared == 40  # the stem (the tiny tokenizer adds no BOS)
    cache = PrefixCache()
    score(model, tokenizer, [first] * 4, ANSWERS, method, prefix_cache=cache, **params)
    counter, handle = _count_tokens(model)
    try:
        with_cache = score(model, tokenizer, [second] * 4, ANSWERS, method, prefix_cache=cache, **params)
        hit = counter["tokens"]
        counter["tokens"] = 0
        without = score(model, tokenizer, [second] * 4, ANSWERS, method, **params)
        miss = counter["tokens"]
    finally:
        handle.remove()
    assert miss - hit == shared
    assert_same_scores(with_cache, without)
    assert cache.cached_prefixes(model)[0] == tuple(tokenizer(second)["input_ids"])


def test_the_same_context_again_runs_one_token(model, tokenizer):
    context = STEM + " w50"
    cache = PrefixCache()
    score(model, tokenizer, [context], [" w7"], prefix_cache=cache)
    counter, handle = _count_tokens(model)
    try:
        score(model, tokenizer, [context], [" w7"], prefix_cache=cache)
    finally:
        handle.remove()
    assert counter["tokens"] == 1  # its last token (whose logits score the one-token continuation)


def test_the_cache_does_not_keep_the_model_alive(tokenizer):
    local = tiny_model("llama", num_layers=2, seed=3)
    cache = PrefixCache()
    score(local, tokenizer, [STEM] * 2, ANSWERS[:2], prefix_cache=cache)
    assert len(cache) == 1 and cache.cached_prefixes(local)
    reference = weakref.ref(local)
    del local
    gc.collect()
    assert reference() is None
    assert len(cache) == 0


def test_a_dtype_change_drops_the_entries(tokenizer):
    local = tiny_model("llama", num_layers=2, seed=4)
    cache = PrefixCache()
    score(local, tokenizer, [STEM] * 2, ANSWERS[:2], prefix_cache=cache)
    local.to(torch.float64)
    cached = score(local, tokenizer, [STEM + " w60"] * 2, ANSWERS[:2], prefix_cache=cache)
    full = score(local, tokenizer, [STEM + " w60"] * 2, ANSWERS[:2], share_prefixes=False)
    assert_same_scores(cached, full)
    assert cache.reused_tokens == 0  # the float32 entry was not continued in float64
    assert [len(p) for p in cache.cached_prefixes(local)] == [len(tokenizer(STEM + " w60")["input_ids"])]


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "gemma3_text"])
def test_other_families(tokenizer, family):
    """GPT-2's learned positions continue from the cropped cache; Gemma 3's sliding-window layers cannot be
    cropped, so it scores without the cache (nothing stored) and gives the same scores."""
    local = tiny_model(family, num_layers=4)
    cache = PrefixCache()
    for contexts, _, answers in CALLS[:4]:
        cached = score(local, tokenizer, contexts, answers, batch_size=3, prefix_cache=cache)
        full = score(local, tokenizer, contexts, answers, batch_size=3, share_prefixes=False)
        assert_same_scores(cached, full)
    assert bool(cache.cached_prefixes(local)) == (family != "gemma3_text")


def test_a_head_that_does_not_match_falls_back_to_the_model_logits(model, tokenizer):
    """``prefix_forward`` applies the LM head itself only after checking it against the model's own logits: a
    head with a wrong logit scale must not change the scores."""
    ids = tokenizer([STEM + " w50"] * 3)["input_ids"]
    answers = tokenizer(ANSWERS[:3], add_special_tokens=False)["input_ids"]
    rows = PrefixRows.group(ids, answers)
    right, wrong = output_head(model), output_head(model)
    wrong.multiply = 2.0
    with torch.no_grad():
        out = model(torch.tensor(ids[:1]), output_hidden_states=True)
        final, logits = out.hidden_states[-1][0], out.logits[0]  # [S, H], [S, V]
        assert right.matches(final, logits) and not wrong.matches(final, logits)
        own = prefix_forward(model, rows, 0).logits
        with_head = prefix_forward(model, rows, 0, head=right).logits
        with_wrong = prefix_forward(model, rows, 0, head=wrong).logits
    torch.testing.assert_close(with_head, own, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_wrong, own, rtol=1e-5, atol=1e-5)


def test_bad_prefix_cache_arguments(model, tokenizer):
    with pytest.raises(ValueError, match="prefix_cache must be a PrefixCache or None, got dict"):
        score(model, tokenizer, [STEM], [" w5"], prefix_cache={})
    with pytest.raises(ValueError, match="prefix_cache needs share_prefixes=True"):
        score(model, tokenizer, [STEM], [" w5"], prefix_cache=PrefixCache(), share_prefixes=False)
    with pytest.raises(ValueError, match="max_entries must be an integer >= 1, got 0"):
        PrefixCache(max_entries=0)
    assert cd.PrefixCache is PrefixCache


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_rows_equal_padded_rows(tokenizer, family):
    """One packed forward (each prefix's continuations in its row under a 4-D mask) gives the two-forward
    padded path's logits and hidden states at every scored position: prefixes of different lengths, a
    one-token continuation, continuations of up to five tokens."""
    local = tiny_model(family, num_layers=4)
    contexts = [STEM + " w50"] * 3 + ["w9 w8"] * 2 + [STEM[:20]]
    answers = [" w7 w8 w9", " w400", " w11 w12 w13 w14 w15", " w3 w3", " w6", " w1 w2"]
    ids = tokenizer(contexts)["input_ids"]
    rows = PrefixRows.group(ids, tokenizer(answers, add_special_tokens=False)["input_ids"])
    layers = frozenset({0, 2, -1})
    with torch.no_grad():
        packed = prefix_forward(local, rows, 0, hidden_layers=layers, pack=True)
        padded = prefix_forward(local, rows, 0, hidden_layers=layers, pack=False)
    torch.testing.assert_close(packed.expanded()[0], padded.expanded()[0], rtol=1e-5, atol=1e-4)
    for layer in layers:
        torch.testing.assert_close(
            packed.expanded()[1][layer], padded.expanded()[1][layer], rtol=1e-5, atol=1e-4
        )
    torch.testing.assert_close(packed.prefix_logits, padded.prefix_logits, rtol=1e-5, atol=1e-4)
    assert packed.position.numel() == sum(len(a.split()) for a in answers)


def test_cad_runs_both_prompts_in_one_forward_each_continuing_its_own_entry(model, tokenizer):
    free_stem = " ".join(f"w{i}" for i in range(100, 120))  # the context-free prompts share their own stem
    cache = PrefixCache()
    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        for question in (" w50 w51", " w60"):
            free = [free_stem + question] * 4
            score(
                model,
                tokenizer,
                [STEM + question] * 4,
                ANSWERS,
                "cad",
                context_free_contexts=free,
                prefix_cache=cache,
            )
    finally:
        handle.remove()
    assert [shape[0] for shape in calls] == [2, 2]  # one forward per call, one row per prompt
    continuation_slots = sum(len(a.split()) - 1 for a in ANSWERS)
    assert calls[1][1] == 1 + continuation_slots  # each prompt ran its one new token (w60) and the answers
    assert cache.reused_tokens == len(STEM.split()) + len(free_stem.split())


@pytest.mark.parametrize("method", ["greedy", "cad"])
def test_the_runner_scores_each_item_in_one_forward_on_one_cache(model, tokenizer, tmp_path, method):
    """``run_task`` keeps one PrefixCache for the run and scores an item's choices (here 10, more than
    ``batch_size``) as one batch: one forward per item, the stem run once, the same log-likelihoods as
    ``score`` without the cache."""
    import json

    from contrastive_decoding.benchmarks.runner import run_task

    from .benchmarks.test_runner import TinyChoiceTask

    answers = [f" w{60 + k} w{70 + k}" for k in range(9)] + [" w5"]
    items = [
        {"id": f"s{i}", "context": f"{STEM} w{200 + i}", "context_free": f"w{200 + i}", "choices": answers}
        for i in range(3)
    ]
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    rows_text = "".join(json.dumps({**item, "correct": 0}) + "\n" for item in items)
    (tmp_path / "data" / "tiny" / "choice.jsonl").write_text(rows_text)
    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        summary = run_task(
            TinyChoiceTask(),
            model=model,
            tokenizer=tokenizer,
            method=method,
            params={},
            output_dir=tmp_path / "run",
            data_dir=tmp_path / "data",
            batch_size=4,
            progress=False,
        )
    finally:
        handle.remove()
    assert summary.num_errors == 0 and len(calls) == 3
    slots = sum(len(a.split()) - 1 for a in answers)
    assert [shape[1] for shape in calls] == [len(STEM.split()) + 1 + slots] + [1 + slots] * 2
    for item, row in zip(items, summary.results, strict=True):
        free = {"context_free_contexts": [item["context_free"]] * 10} if method == "cad" else {}
        expected = score(model, tokenizer, [item["context"]] * 10, answers, method, **free)
        torch.testing.assert_close(
            torch.tensor(row["output"]["choice_logprobs"]),
            torch.tensor([result.logprob for result in expected]),
            rtol=1e-5,
            atol=1e-4,
        )
