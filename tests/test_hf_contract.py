"""The drop-ins keep the contract users had with transformers' own generate (issue 14):

1. parameters transformers knows by name come from the generation config with transformers' precedence;
2. every model input generate forwards (``token_type_ids``, ...) reaches the model in every branch, or one clear
   error names it;
3. processors and stopping criteria see each row's own history: a left-padded row equals the row alone, with
   every standard processor;
4. ``output_hidden_states`` / ``output_attentions`` / ``past_key_values`` come back in transformers' format, with
   the values a plain forward gives.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad, mask_positions

from . import reference_loops as ref
from .tiny_models import PAD_TOKEN_ID, random_prompts, tiny_model

STEPS = 6


def new_tokens(out, prompt_width: int) -> list[list[int]]:
    sequences = out.sequences if hasattr(out, "sequences") else out
    return sequences[:, prompt_width:].tolist()


@pytest.fixture(scope="module")
def llama():
    model = tiny_model("llama", num_layers=4)
    model.generation_config.eos_token_id = None
    return model


# --- 1. generation config --------------------------------------------------------------------------------------


def cs_tokens(model, prompt, **kwargs) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt[None], max_new_tokens=STEPS, custom_generate=cd.hf.contrastive_search, **kwargs
        )
    return out[0, prompt.numel() :].tolist()


def test_contrastive_search_reads_penalty_alpha_and_top_k_from_the_generation_config(llama, tmp_path):
    prompt = random_prompts([7], seed=21)[0]
    ours_default = ref.contrastive_search(llama, prompt.tolist(), STEPS, 0.6, 4)
    wanted = ref.contrastive_search(llama, prompt.tolist(), STEPS, 0.9, 8)
    assert wanted != ours_default  # the test can tell the settings apart
    # a GenerationConfig passed to generate
    assert cs_tokens(llama, prompt, generation_config=GenerationConfig(penalty_alpha=0.9, top_k=8)) == wanted
    # the checkpoint's generation_config.json, as a 4.x checkpoint set for contrastive search has it (5.x itself
    # refuses to save top_k without do_sample)
    llama.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    (tmp_path / "generation_config.json").write_text(json.dumps({**saved, "penalty_alpha": 0.9, "top_k": 8}))
    checkpoint = type(llama).from_pretrained(tmp_path).eval()
    assert checkpoint.generation_config.penalty_alpha == 0.9
    assert cs_tokens(checkpoint, prompt) == wanted
    # precedence: explicit kwargs > the passed config > the model's config > our defaults
    assert cs_tokens(checkpoint, prompt, penalty_alpha=0.6, top_k=4) == ours_default
    passed = GenerationConfig(penalty_alpha=0.6, top_k=4)
    assert cs_tokens(checkpoint, prompt, generation_config=passed) == ours_default
    # transformers' own unset default (top_k=50) is not a setting: our defaults apply
    assert cs_tokens(llama, prompt) == ours_default
    assert cs_tokens(llama, prompt, generation_config=GenerationConfig(penalty_alpha=0.6)) == ours_default


def test_dola_reads_dola_layers_from_the_generation_config(llama):
    prompt = random_prompts([6], seed=22)[0]

    def dola(**kwargs):
        with torch.no_grad():
            out = llama.generate(
                input_ids=prompt[None], max_new_tokens=STEPS, custom_generate=cd.hf.dola, **kwargs
            )
        return out[0, prompt.numel() :].tolist()

    high, low = dola(), dola(dola_layers=[0, 1])
    assert high == dola(dola_layers="high") and high != low
    assert dola(generation_config=GenerationConfig(dola_layers=[0, 1])) == low
    llama.generation_config.dola_layers = [0, 1]
    try:
        assert dola() == low
        assert dola(dola_layers="high") == high  # the explicit argument wins
    finally:
        llama.generation_config.dola_layers = None


# --- 2. model inputs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2():
    model = tiny_model("gpt2", num_layers=4)
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def typed_batch():
    prompts = random_prompts([5, 8, 6], seed=23)
    ids, mask = left_pad(prompts, PAD_TOKEN_ID)
    generator = torch.Generator().manual_seed(5)
    types = torch.randint(3, 60, ids.shape, generator=generator) * mask  # GPT-2 embeds them with its wte
    free = [p[-3:] for p in prompts]
    free_ids, free_mask = left_pad(free, PAD_TOKEN_ID)
    free_types = torch.randint(3, 60, free_ids.shape, generator=generator) * free_mask
    return {"ids": ids, "mask": mask, "types": types, "free_ids": free_ids, "free_mask": free_mask,
            "free_types": free_types}  # fmt: skip


def typed_generate(model, batch, **kwargs):
    with torch.no_grad():
        return model.generate(
            input_ids=batch["ids"],
            attention_mask=batch["mask"],
            token_type_ids=batch["types"],
            max_new_tokens=STEPS,
            do_sample=False,
            pad_token_id=PAD_TOKEN_ID,
            **kwargs,
        )


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("greedy", {}),
        ("contrastive_search", {"penalty_alpha": 0.0, "top_k": 4}),  # alpha 0: greedy
        ("dola", {"dola_layers": [0, 2], "relative_top": 1.0}),  # a one-token head: greedy
        ("cad", {"cad_alpha": 0.0}),
        ("adacad", {"adacad_threshold": math.log(2.0)}),  # JSD < ln 2: the weight stays 0
        ("condition_contrast", {"condition_alpha": 0.0}),
        ("layer_fusion", {"plausibility_alpha": 1.0}),
        ("expert_amateur", {"plausibility_alpha": 1.0}),
    ],
)
def test_token_type_ids_reach_the_model_like_transformers_greedy(gpt2, typed_batch, method, kwargs):
    """Every method, where it reduces to greedy decoding, gives transformers' own greedy tokens with
    ``token_type_ids`` (which change them)."""
    b = typed_batch
    theirs = typed_generate(gpt2, b)
    with torch.no_grad():
        untyped = gpt2.generate(input_ids=b["ids"], attention_mask=b["mask"], max_new_tokens=STEPS,
                                do_sample=False, pad_token_id=PAD_TOKEN_ID)  # fmt: skip
    assert untyped.tolist() != theirs.tolist()
    extra = {
        "cad": dict(context_free_input_ids=b["free_ids"], context_free_attention_mask=b["free_mask"],
                    context_free_token_type_ids=b["free_types"]),
        "condition_contrast": dict(condition_free_input_ids=[b["free_ids"]],
                                   condition_free_attention_mask=[b["free_mask"]],
                                   condition_free_token_type_ids=[b["free_types"]]),
        "layer_fusion": dict(amateur_input_ids=b["free_ids"], amateur_attention_mask=b["free_mask"],
                             amateur_token_type_ids=b["free_types"]),
        "expert_amateur": dict(amateur_model=tiny_model("gpt2", num_layers=2, seed=1)),
    }  # fmt: skip
    extra["adacad"] = extra["cad"]
    ours = typed_generate(gpt2, b, custom_generate=getattr(cd.hf, method), **kwargs, **extra.get(method, {}))
    assert ours.tolist() == theirs.tolist()


def expected_cad_scores(model, sequences, prompt_width, batch, alpha: float) -> list[torch.Tensor]:
    """CAD's scores per step (of log-probabilities) from plain forwards of each sequence, ``token_type_ids``
    grown as transformers grows them (the last column repeated)."""
    scores = []
    for step in range(sequences.shape[1] - prompt_width):
        new = sequences[:, prompt_width : prompt_width + step]
        rows = []
        for row in range(sequences.shape[0]):
            logits = []
            for ids, mask, types in (
                (batch["ids"], batch["mask"], batch["types"]),
                (batch["free_ids"], batch["free_mask"], batch["free_types"]),
            ):
                keep = mask[row].bool()
                tokens = torch.cat([ids[row][keep], new[row]])
                token_types = torch.cat([types[row][keep], types[row][-1:].repeat(step)])
                with torch.no_grad():
                    out = model(tokens[None], token_type_ids=token_types[None])
                logits.append(out.logits[0, -1].float().log_softmax(-1))
            rows.append((1 + alpha) * logits[0] - alpha * logits[1])
        scores.append(torch.stack(rows))
    return scores


def test_cad_gives_the_context_free_rows_their_own_token_type_ids(gpt2, typed_batch):
    b = typed_batch
    out = typed_generate(
        gpt2,
        b,
        custom_generate=cd.hf.cad,
        cad_alpha=1.0,
        context_free_input_ids=b["free_ids"],
        context_free_attention_mask=b["free_mask"],
        context_free_token_type_ids=b["free_types"],
        return_dict_in_generate=True,
        output_scores=True,
    )
    expected = expected_cad_scores(gpt2, out.sequences, b["ids"].shape[1], b, 1.0)
    for ours, theirs in zip(out.scores, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


def test_condition_contrast_gives_each_dropped_prompt_its_token_type_ids(gpt2, typed_batch):
    """The same prompt as its own 'condition-dropped' variant has effect 0 only if it gets its own
    ``token_type_ids`` too."""
    b = typed_batch

    def effects(variant_types):
        out = typed_generate(
            gpt2, b, custom_generate=cd.hf.condition_contrast, condition_free_input_ids=[b["ids"]],
            condition_free_attention_mask=[b["mask"]], condition_free_token_type_ids=[variant_types],
            return_dict_in_generate=True,
        )  # fmt: skip
        return out.condition_effects

    assert float(effects(b["types"]).abs().max()) < 1e-6
    assert float(effects(torch.zeros_like(b["types"])).min()) > 1e-4


@pytest.mark.parametrize(
    "method, kwargs, message",
    [
        ("cad", {"context_free_input_ids": "free_ids"}, "pass context_free_token_type_ids"),
        (
            "condition_contrast",
            {"condition_free_input_ids": ["free_ids"]},
            "pass condition_free_token_type_ids",
        ),
        ("layer_fusion", {"amateur_input_ids": "free_ids"}, "pass amateur_token_type_ids"),
    ],
)
def test_a_variant_prompt_without_its_token_type_ids_is_a_clear_error(
    gpt2, typed_batch, method, kwargs, message
):
    b = typed_batch
    resolved = {k: ([b[x] for x in v] if isinstance(v, list) else b[v]) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        typed_generate(gpt2, b, custom_generate=getattr(cd.hf, method), **resolved)


def test_custom_position_ids_reach_the_model(llama):
    prompt = random_prompts([6], seed=24)[0][None]
    positions = torch.tensor([[0, 1, 2, 9, 10, 11]])  # a gap (a constant shift would change nothing: RoPE)
    with torch.no_grad():
        theirs = llama.generate(
            input_ids=prompt, position_ids=positions, max_new_tokens=STEPS, do_sample=False
        )
        default = llama.generate(input_ids=prompt, max_new_tokens=STEPS, do_sample=False)
        ours = llama.generate(input_ids=prompt, position_ids=positions, max_new_tokens=STEPS, do_sample=False,
                              custom_generate=cd.hf.greedy)  # fmt: skip
    assert theirs.tolist() != default.tolist()
    assert ours.tolist() == theirs.tolist()
    with pytest.raises(ValueError, match="custom position_ids are not supported"):
        llama.generate(input_ids=prompt, position_ids=positions, max_new_tokens=2, custom_generate=cd.hf.cad,
                       context_free_input_ids=prompt[:, 2:])  # fmt: skip


def test_a_filled_cache_is_a_clear_error(llama):
    prompt = random_prompts([6], seed=25)[0][None]
    with torch.no_grad():
        cache = llama(prompt[:, :4], use_cache=True).past_key_values
        with pytest.raises(ValueError, match="past_key_values that already hold 4 tokens"):
            llama.generate(
                input_ids=prompt, past_key_values=cache, max_new_tokens=2, custom_generate=cd.hf.dola
            )


# --- 3. padded rows get what they get alone --------------------------------------------------------------------


class PenaliseOwnHistory(LogitsProcessor):
    """A user processor written for a row alone: lowers every token the row's own history holds."""

    def __call__(self, input_ids, scores):
        return scores.scatter_add(1, input_ids, torch.full(input_ids.shape, -0.5, dtype=scores.dtype))


@pytest.fixture(scope="module")
def eos_model():
    """A tiny model whose EOS is a token it emits (pad == EOS), so that stopping matters."""
    model = tiny_model("llama", num_layers=4, seed=7)
    prompts = random_prompts([4, 9, 6, 9], seed=26)
    with torch.no_grad():
        first = model.generate(
            input_ids=prompts[0][None], max_new_tokens=8, do_sample=False, eos_token_id=None
        )
    eos = int(first[0, prompts[0].numel() + 3])
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    return model, prompts, eos


PROCESSOR_SETTINGS = {
    "repetition_penalty": {"repetition_penalty": 1.3},
    "no_repeat_ngram_size": {"no_repeat_ngram_size": 2},
    "min_new_tokens": {"min_new_tokens": 6},
    "min_length": {"min_length": 12},
    "max_length": {"max_length": 16, "max_new_tokens": None},
    "sequence_bias": {"sequence_bias": {(40, 41): -4.0, (7,): 1.5}},
    "bad_words_ids": {"bad_words_ids": [[5, 6]]},
    "exponential_decay_length_penalty": {"exponential_decay_length_penalty": (3, 1.6)},
    "begin_suppress_tokens": {"begin_suppress_tokens": [9, 10]},
    "user_processor": {"logits_processor": LogitsProcessorList([PenaliseOwnHistory()])},
    "prefix_allowed_tokens_fn": {
        "prefix_allowed_tokens_fn": lambda row, ids: list(range(3 + row, 500, 2 + row))
    },
}
METHOD_KWARGS = {
    "greedy": {"custom_generate": cd.hf.greedy},
    "contrastive_search": {"custom_generate": cd.hf.contrastive_search, "penalty_alpha": 0.6, "top_k": 4},
    "dola": {"custom_generate": cd.hf.dola, "dola_layers": [0, 2]},
    "cad": {"custom_generate": cd.hf.cad, "cad_alpha": 0.5},
}


def run_rows(model, prompts, eos, method, setting, rows=None):
    """Decode ``prompts`` as one left-padded batch; ``rows`` maps them to the prompt indices (for batch-index
    aware processors)."""
    ids, mask = left_pad(prompts, eos)
    kwargs = dict(PROCESSOR_SETTINGS[setting])
    if setting == "prefix_allowed_tokens_fn" and rows is not None:  # the row's index in the whole batch
        function = kwargs["prefix_allowed_tokens_fn"]
        kwargs["prefix_allowed_tokens_fn"] = lambda i, sent: function(rows[i], sent)
    method_kwargs = dict(METHOD_KWARGS[method])
    if method == "cad":
        free_ids, free_mask = left_pad([p[-3:] for p in prompts], eos)
        method_kwargs.update(context_free_input_ids=free_ids, context_free_attention_mask=free_mask)
    generate_kwargs = {"max_new_tokens": 10, **kwargs}
    generate_kwargs = {k: v for k, v in generate_kwargs.items() if v is not None}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **method_kwargs,
                             **generate_kwargs)  # fmt: skip
    return [row[ids.shape[1] :] for row in out.tolist()]


@pytest.mark.parametrize("method", list(METHOD_KWARGS))
@pytest.mark.parametrize("setting", list(PROCESSOR_SETTINGS))
def test_left_padded_rows_equal_their_alone_runs_with_every_processor(eos_model, method, setting):
    model, prompts, eos = eos_model
    together = run_rows(model, prompts, eos, method, setting)
    for index, prompt in enumerate(prompts):
        alone = run_rows(model, [prompt], eos, method, setting, rows=[index])[0]
        row = together[index]
        assert row[: len(alone)] == alone, (setting, index)
        assert row[len(alone) :] == [eos] * (len(row) - len(alone))  # finished rows are padded (pad == EOS)


def test_pad_equal_to_eos_does_not_keep_a_padded_row_from_stopping(eos_model):
    """The defect the issue reports: with pad == EOS a repetition penalty that sees the padding pushes a padded
    row away from EOS and it runs on (transformers' own generate; see tests/peer/gold for 4.55's)."""
    model, prompts, eos = eos_model
    rows = [prompts[0], prompts[1]]  # row 0 is padded, and alone it stops at EOS
    ids, mask = left_pad(rows, eos)
    with torch.no_grad():
        alone = model.generate(
            input_ids=rows[0][None], max_new_tokens=10, do_sample=False, repetition_penalty=1.3
        )
        ours = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                              repetition_penalty=1.3, custom_generate=cd.hf.greedy)  # fmt: skip
    alone_new = alone[0, rows[0].numel() :].tolist()
    assert eos in alone_new
    ours_new = ours[0, ids.shape[1] :].tolist()
    assert ours_new[: len(alone_new)] == alone_new
    assert ours_new[len(alone_new) :] == [eos] * (len(ours_new) - len(alone_new))


class CountCalls(LogitsProcessor):
    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, input_ids, scores):
        self.shapes.append(tuple(input_ids.shape))
        return scores


def test_an_unpadded_batch_calls_the_processors_once_per_step(llama):
    prompts = random_prompts([5, 5, 5], seed=27)
    ids = torch.stack(prompts)
    count = CountCalls()
    with torch.no_grad():
        llama.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                       custom_generate=cd.hf.greedy, logits_processor=LogitsProcessorList([count]))  # fmt: skip
    assert count.shapes == [(3, 5 + step) for step in range(4)]


# --- 4. hidden states, attentions, cache -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def eager():
    model = tiny_model("llama", num_layers=4, seed=8)
    model.set_attn_implementation("eager")
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def padded():
    prompts = random_prompts([5, 8, 3], seed=28)
    ids, mask = left_pad(prompts, PAD_TOKEN_ID)
    free_ids, free_mask = left_pad([p[-2:] for p in prompts], PAD_TOKEN_ID)
    # longer variants than the prompts: the stacked batch gets wider than the caller's
    cond = left_pad([torch.cat([p, p]) for p in prompts], PAD_TOKEN_ID)
    return prompts, ids, mask, (free_ids, free_mask), cond


OUTPUT_METHODS = {
    "greedy": lambda p: {"custom_generate": cd.hf.greedy},
    "contrastive_search": lambda p: {"custom_generate": cd.hf.contrastive_search, "penalty_alpha": 0.6, "top_k": 3},
    "dola": lambda p: {"custom_generate": cd.hf.dola, "dola_layers": [0, 2]},
    "expert_amateur": lambda p: {"custom_generate": cd.hf.expert_amateur,
                                 "amateur_model": tiny_model("llama", num_layers=2, seed=1)},
    "cad": lambda p: {"custom_generate": cd.hf.cad, "context_free_input_ids": p[3][0],
                      "context_free_attention_mask": p[3][1]},
    "condition_contrast": lambda p: {"custom_generate": cd.hf.condition_contrast,
                                     "condition_free_input_ids": [p[4][0]],
                                     "condition_free_attention_mask": [p[4][1]]},
    "layer_fusion": lambda p: {"custom_generate": cd.hf.layer_fusion, "amateur_input_ids": p[4][0],
                               "amateur_attention_mask": p[4][1]},
}  # fmt: skip


@pytest.mark.parametrize("method", list(OUTPUT_METHODS))
def test_hidden_states_attentions_and_cache_are_the_main_models(eager, padded, method):
    """Shapes as transformers returns them, and values equal to one plain forward over the final sequences
    (at the real positions: padding holds no values of its own)."""
    prompts, ids, mask = padded[:3]
    width = ids.shape[1]
    with torch.no_grad():
        out = eager.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False,
            pad_token_id=PAD_TOKEN_ID, return_dict_in_generate=True, output_hidden_states=True,
            output_attentions=True, **OUTPUT_METHODS[method](padded),
        )  # fmt: skip
        full_mask = torch.cat([mask, torch.ones(3, 4, dtype=mask.dtype)], dim=1)[:, :-1]
        full = eager(
            out.sequences[:, :-1], attention_mask=full_mask, position_ids=mask_positions(full_mask),
            output_hidden_states=True, output_attentions=True, use_cache=True,
        )  # fmt: skip
    layers = eager.config.num_hidden_layers
    assert len(out.hidden_states) == len(out.attentions) == 4
    real = mask.bool()
    for step, (hidden, attentions) in enumerate(zip(out.hidden_states, out.attentions, strict=True)):
        assert len(hidden) == layers + 1 and len(attentions) == layers
        if step == 0:
            assert hidden[0].shape == (3, width, eager.config.hidden_size)
            for ours, theirs in zip(hidden, full.hidden_states, strict=True):
                torch.testing.assert_close(ours[real], theirs[:, :width][real], atol=5e-4, rtol=1e-3)
            for ours, theirs in zip(attentions, full.attentions, strict=True):
                assert ours.shape == (3, eager.config.num_attention_heads, width, width)
                torch.testing.assert_close(ours.transpose(1, 2)[real], theirs[:, :, :width, :width].transpose(1, 2)[real],
                                           atol=5e-4, rtol=1e-3)  # fmt: skip
        else:
            position = width + step - 1
            for ours, theirs in zip(hidden, full.hidden_states, strict=True):
                assert ours.shape == (3, 1, eager.config.hidden_size)
                torch.testing.assert_close(ours[:, 0], theirs[:, position], atol=5e-4, rtol=1e-3)
            for ours, theirs in zip(attentions, full.attentions, strict=True):
                assert ours.shape == (3, eager.config.num_attention_heads, 1, position + 1)
                torch.testing.assert_close(
                    ours[:, :, 0], theirs[:, :, position, : position + 1], atol=5e-4, rtol=1e-3
                )
    cache_real = full_mask.bool()
    assert len(out.past_key_values.layers) == layers
    for ours, theirs in zip(out.past_key_values.layers, full.past_key_values.layers, strict=True):
        assert ours.keys.shape == theirs.keys.shape  # [B, heads, sequences - 1, head_dim]
        torch.testing.assert_close(ours.keys.transpose(1, 2)[cache_real], theirs.keys.transpose(1, 2)[cache_real],
                                   atol=5e-4, rtol=1e-3)  # fmt: skip
        torch.testing.assert_close(ours.values.transpose(1, 2)[cache_real],
                                   theirs.values.transpose(1, 2)[cache_real], atol=5e-4, rtol=1e-3)  # fmt: skip


def test_no_cache_without_use_cache_and_no_outputs_without_return_dict(eager, padded):
    _, ids, mask = padded[:3]
    with torch.no_grad():
        out = eager.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False,
                             return_dict_in_generate=True, use_cache=False, custom_generate=cd.hf.dola)  # fmt: skip
        plain = eager.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False,
                               output_hidden_states=True, custom_generate=cd.hf.dola)  # fmt: skip
    assert out.past_key_values is None and out.hidden_states is None and out.attentions is None
    assert isinstance(plain, torch.Tensor)
