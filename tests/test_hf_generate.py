"""The drop-in ``model.generate(custom_generate=...)`` callables keep transformers' generate contract:
streamers, stopping criteria, user logits processors, EOS / padding, ``return_dict_in_generate`` outputs,
sampling (seeded, typical / top-p / top-k / temperature / min-p / top-nσ / epsilon / eta), and one clear error
per bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPTNeoXConfig,
    LlamaConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.runner import left_pad
from contrastive_decoding.samplers import (
    SamplingConfig,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    apply_typical,
)

from .tiny_models import EOS_TOKEN_ID, PAD_TOKEN_ID, random_prompts, tiny_model, tiny_tokenizer

METHODS = ["greedy", "contrastive_search", "dola", "expert_amateur", "cad", "adacad", "sled"]
SAMPLED_METHODS = [m for m in METHODS if m != "contrastive_search"]


@pytest.fixture(scope="module")
def expert():
    return tiny_model("llama", num_layers=6)


@pytest.fixture(scope="module")
def amateur():
    return tiny_model("llama", num_layers=2, seed=1)


@pytest.fixture(scope="module")
def batch():
    input_ids, attention_mask = left_pad(random_prompts([4, 8, 6], seed=11), PAD_TOKEN_ID)
    free_ids, free_mask = left_pad(random_prompts([2, 3, 1], seed=12), PAD_TOKEN_ID)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "free_ids": free_ids,
        "free_mask": free_mask,
    }


def method_kwargs(method: str, batch: dict, amateur) -> dict:
    kwargs = {
        "greedy": {"custom_generate": cd.hf.greedy},
        "contrastive_search": {"custom_generate": cd.hf.contrastive_search, "penalty_alpha": 0.6, "top_k": 4},
        "dola": {"custom_generate": cd.hf.dola, "dola_layers": "low"},
        "expert_amateur": {"custom_generate": cd.hf.expert_amateur, "amateur_model": amateur},
        "cad": {"custom_generate": cd.hf.cad, "cad_alpha": 0.5},
        "adacad": {"custom_generate": cd.hf.adacad},
        "sled": {"custom_generate": cd.hf.sled, "evolution_rate": 1.5},
    }[method]
    if method in ("cad", "adacad"):
        kwargs = {
            **kwargs,
            "context_free_input_ids": batch["free_ids"],
            "context_free_attention_mask": batch["free_mask"],
        }
    return kwargs


def run(model, batch, method, amateur, **kwargs):
    with torch.no_grad():
        return model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            **method_kwargs(method, batch, amateur),
            **kwargs,
        )


class CollectingStreamer(BaseStreamer):
    def __init__(self):
        self.chunks: list[list[int]] = []
        self.ended = False

    def put(self, value):
        self.chunks.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


class BanToken(LogitsProcessor):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token] = -float("inf")
        return scores


def own_prompts(batch: dict) -> list[list[int]]:
    """Each row's prompt without its padding: what processors and stopping criteria see of it."""
    return [
        row[mask.bool()].tolist()
        for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]


# User processors and stopping criteria see each row's own history (``input_ids`` of one group of rows with the
# same padding, unpadded): they are written as a row alone would need them, here by recognising a row's prompt.


class ForceEos(LogitsProcessor):
    """The row whose prompt is ``prompt`` emits EOS once it has generated ``after`` tokens."""

    def __init__(self, prompt: list[int], after: int):
        self.prompt, self.after = prompt, after

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for i, row in enumerate(input_ids.tolist()):
            if row[: len(self.prompt)] == self.prompt and len(row) - len(self.prompt) == self.after:
                scores[i] = -float("inf")
                scores[i, EOS_TOKEN_ID] = 0.0
        return scores


class Record(LogitsProcessor):
    """Keeps the scores it sees per row (user processors run before the sampling warpers)."""

    def __init__(self, prompts: list[list[int]]):
        self.prompts = prompts
        self.seen: list[list[torch.Tensor]] = [[] for _ in prompts]  # per row, per step: [V]

    def __call__(self, input_ids, scores):
        for history, row_scores in zip(input_ids.tolist(), scores, strict=True):
            self.seen[self._row(history)].append(row_scores.clone())
        return scores

    def _row(self, history: list[int]) -> int:
        for row, prompt in enumerate(self.prompts):
            if history[: len(prompt)] == prompt and len(history) - len(prompt) == len(self.seen[row]):
                return row
        raise AssertionError(f"no row has the history {history}")

    def per_step(self) -> list[torch.Tensor]:  # per step: [B, V]
        return [torch.stack(step) for step in zip(*self.seen, strict=True)]


class StopAfter(StoppingCriteria):
    """Stop a row once its own sequence (prompt + new tokens) has ``length`` tokens."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


@pytest.mark.parametrize("method", METHODS)
def test_streamer_gets_prompt_then_every_new_token(expert, amateur, batch, method):
    streamer = CollectingStreamer()
    out = run(expert, batch, method, amateur, max_new_tokens=5, do_sample=False, streamer=streamer)
    prompt_length = batch["input_ids"].shape[1]
    assert streamer.chunks[0] == batch["input_ids"].reshape(-1).tolist()
    new = out[:, prompt_length:]
    assert streamer.chunks[1:] == [new[:, step].tolist() for step in range(new.shape[1])]
    assert streamer.ended


@pytest.mark.parametrize("method", METHODS)
def test_user_stopping_criteria_and_logits_processor(expert, amateur, batch, method):
    prompt_length = batch["input_ids"].shape[1]
    baseline = run(expert, batch, method, amateur, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    banned = int(baseline[0, prompt_length])  # the first token of row 0
    out = run(
        expert,
        batch,
        method,
        amateur,
        max_new_tokens=20,
        do_sample=False,
        min_new_tokens=20,
        logits_processor=LogitsProcessorList([BanToken(banned)]),
        stopping_criteria=StoppingCriteriaList([StopAfter(prompt_length + 4)]),
    )
    # Each row stops when its own sequence reaches prompt_length + 4 tokens; finished rows are padded.
    own_lengths = [len(prompt) for prompt in own_prompts(batch)]
    assert out.shape[1] == prompt_length + 4 + (prompt_length - min(own_lengths))
    for row, length in enumerate(own_lengths):
        new = out[row, prompt_length:].tolist()
        steps = prompt_length + 4 - length
        assert new[steps:] == [PAD_TOKEN_ID] * (len(new) - steps)
    assert banned not in out[:, prompt_length:].reshape(-1).tolist()


@pytest.mark.parametrize("method", METHODS)
def test_finished_rows_are_padded_after_eos(expert, amateur, batch, method):
    prompt_length = batch["input_ids"].shape[1]
    force = LogitsProcessorList([ForceEos(own_prompts(batch)[1], after=2)])
    out = run(expert, batch, method, amateur, max_new_tokens=6, do_sample=False, logits_processor=force)
    new = out[:, prompt_length:].tolist()
    assert new[1][2] == EOS_TOKEN_ID
    assert new[1][3:] == [PAD_TOKEN_ID] * (len(new[1]) - 3)
    # The other rows are what they are without the forced EOS (one row finishing does not disturb them).
    alone = run(expert, batch, method, amateur, max_new_tokens=6, do_sample=False)[:, prompt_length:].tolist()
    for row in (0, 2):
        length = min(len(alone[row]), len(new[row]))
        assert new[row][:length] == alone[row][:length]


@pytest.mark.parametrize("method", METHODS)
def test_return_dict_with_scores_and_logits(expert, amateur, batch, method):
    out = run(
        expert,
        batch,
        method,
        amateur,
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    prompt_length = batch["input_ids"].shape[1]
    new = out.sequences[:, prompt_length:]
    assert len(out.scores) == len(out.logits) == new.shape[1] == 5
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits, strict=True)):
        assert scores.shape == logits.shape == (3, expert.config.vocab_size)
        if method != "contrastive_search":  # contrastive search re-ranks, the rest take the argmax
            assert scores.argmax(-1).tolist() == new[:, step].tolist()
        assert torch.isfinite(scores.gather(1, new[:, step : step + 1])).all()


@pytest.mark.parametrize("method", SAMPLED_METHODS)
def test_seeded_sampling_reproduces_and_warpers_apply(expert, amateur, batch, method):
    warp = {"temperature": 0.8, "top_k": 50, "top_p": 0.9, "typical_p": 0.7}
    extra = {}
    if method == "dola":  # DoLa's scores on these peaked tiny models are steep: flatten them so draws vary
        warp = {"temperature": 4.0, "top_k": 0, "top_p": 1.0, "typical_p": 0.95}
        extra = {"relative_top": 0.0}

    def sample(seed):
        record = Record(own_prompts(batch))
        torch.manual_seed(seed)
        out = run(
            expert,
            batch,
            method,
            amateur,
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=True,
            return_dict_in_generate=True,
            output_scores=True,
            logits_processor=LogitsProcessorList([record]),
            **warp,
            **extra,
        )
        return out, record.per_step()

    first, seen = sample(0)
    again, _ = sample(0)
    other, _ = sample(1)
    assert first.sequences.tolist() == again.sequences.tolist()
    assert first.sequences.tolist() != other.sequences.tolist()
    prompt_length = batch["input_ids"].shape[1]
    for step, (before, after) in enumerate(zip(seen, first.scores, strict=True)):
        expected = apply_typical(
            apply_top_p(
                apply_top_k(apply_temperature(before, warp["temperature"]), warp["top_k"]), warp["top_p"]
            ),
            warp["typical_p"],
        )
        torch.testing.assert_close(after, expected, rtol=0, atol=0)
        chosen = first.sequences[:, prompt_length + step]
        assert torch.isfinite(after.gather(1, chosen[:, None])).all()


def test_num_return_sequences_expands_context_free_rows(expert, amateur, batch):
    torch.manual_seed(0)
    out = run(expert, batch, "cad", amateur, max_new_tokens=4, do_sample=True, num_return_sequences=2)
    assert out.shape[0] == 6


# Flat enough on the tiny models that draws vary (DoLa's contrast is steep: no relative-top head for it).
FLAT = {"temperature": 3.0}
FLAT_EXTRA = {"dola": {"relative_top": 0.0}}


def sample_rows(model, batch, method, amateur, seed, rows=None, max_new_tokens=8, **kwargs):
    """New tokens of ``rows`` of the batch (unpadded, alone when ``rows`` is one row), sampled with ``seed``."""
    if rows is not None:
        ids, mask = left_pad(unpad_rows(batch["input_ids"], batch["attention_mask"], rows), PAD_TOKEN_ID)
        free_ids, free_mask = left_pad(unpad_rows(batch["free_ids"], batch["free_mask"], rows), PAD_TOKEN_ID)
        batch = {"input_ids": ids, "attention_mask": mask, "free_ids": free_ids, "free_mask": free_mask}
    out = run(
        model, batch, method, amateur, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
        do_sample=True, seed=seed,
        **FLAT, **FLAT_EXTRA.get(method, {}), **kwargs,
    )  # fmt: skip
    return out[:, batch["input_ids"].shape[1] :].tolist()


def unpad_rows(ids, mask, rows):
    return [ids[row][mask[row].bool()] for row in rows]


@pytest.mark.parametrize("method", SAMPLED_METHODS)
def test_seed_kwarg_samples_each_row_as_alone(expert, amateur, batch, method):
    together = sample_rows(expert, batch, method, amateur, 7)
    for row in range(3):
        assert sample_rows(expert, batch, method, amateur, 7, rows=[row]) == [together[row]], f"row {row}"
    torch.manual_seed(123)  # the global RNG plays no part in seeded rows
    assert sample_rows(expert, batch, method, amateur, 7) == together
    assert sample_rows(expert, batch, method, amateur, 8) != together


def test_seed_per_prompt_and_num_return_sequences(expert, amateur, batch):
    per_row = sample_rows(expert, batch, "cad", amateur, [7, 8, 9])
    assert sample_rows(expert, batch, "cad", amateur, 8, rows=[1]) == [per_row[1]]
    assert per_row[0] == sample_rows(expert, batch, "cad", amateur, 7)[0]
    # sequence j of a prompt seeded s draws with s + j, as vLLM seeds the n > 1 children of a request
    repeated = sample_rows(expert, batch, "cad", amateur, 7, num_return_sequences=2)
    assert repeated[0::2] == sample_rows(expert, batch, "cad", amateur, 7)
    assert repeated[1::2] == sample_rows(expert, batch, "cad", amateur, 8)


# The newer filters, one at a time, at values that keep several tokens on the flattened tiny models.
FILTERS = [{"min_p": 0.1}, {"top_n_sigma": 1.0}, {"epsilon_cutoff": 0.002}, {"eta_cutoff": 0.002}]


@pytest.mark.parametrize("method", SAMPLED_METHODS)
@pytest.mark.parametrize("filters", FILTERS, ids=[next(iter(f)) for f in FILTERS])
def test_new_filters_apply_reproduce_and_sample_each_row_as_alone(expert, amateur, batch, method, filters):
    """Each filter reaches the scores every sampled method draws from (the warped scores equal
    ``SamplingConfig.warp`` of what the user's processors saw), and a seeded row samples what it samples alone."""
    record = Record(own_prompts(batch))
    out = run(
        expert, batch, method, amateur, max_new_tokens=6, min_new_tokens=6, do_sample=True, seed=7, top_k=0,
        return_dict_in_generate=True, output_scores=True, logits_processor=LogitsProcessorList([record]),
        **FLAT, **FLAT_EXTRA.get(method, {}), **filters,
    )  # fmt: skip
    config = SamplingConfig(do_sample=True, **FLAT, **filters)
    unfiltered = SamplingConfig(do_sample=True, **FLAT)
    prompt_length = batch["input_ids"].shape[1]
    cut = 0
    for step, (before, after) in enumerate(zip(record.per_step(), out.scores, strict=True)):
        torch.testing.assert_close(after, config.warp(before), rtol=0, atol=0)
        cut += int((torch.isinf(after) & ~torch.isinf(unfiltered.warp(before))).sum())
        chosen = out.sequences[:, prompt_length + step]
        assert torch.isfinite(after.gather(1, chosen[:, None])).all()
    if method != "expert_amateur":  # its plausibility head already keeps only a few likely tokens
        assert cut > 0  # the filter did cut tokens
    together = out.sequences[:, prompt_length:].tolist()
    for row in (0, 2):  # the most padded row and another
        alone = sample_rows(
            expert, batch, method, amateur, 7, rows=[row], max_new_tokens=6, top_k=0, **filters
        )
        assert alone == [together[row]], f"row {row}"
    assert sample_rows(expert, batch, method, amateur, 7, max_new_tokens=6, top_k=0, **filters) == together


def test_unseeded_sampling_with_min_p_epsilon_eta_draws_what_transformers_draws(expert, batch):
    """transformers' own ``MinPLogitsWarper`` / ``EpsilonLogitsWarper`` / ``EtaLogitsWarper`` and ours give the
    same tokens for the same global seed (the warpers match bit for bit)."""
    for filters in FILTERS[:1] + FILTERS[2:]:
        common = dict(max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=0, temperature=2.0, **filters)
        torch.manual_seed(5)
        ours = run(expert, batch, "greedy", None, **common)
        torch.manual_seed(5)
        with torch.no_grad():
            theirs = expert.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **common
            )
        assert ours.tolist() == theirs.tolist(), filters


def test_filters_come_from_kwargs_then_generation_config(expert, batch):
    """A keyword argument wins over the ``generation_config`` passed to generate, as in transformers; top_n_sigma,
    which transformers lacks, is read from the config's attribute of that name too."""

    def warped(**kwargs):
        record = Record(own_prompts(batch))
        out = run(
            expert, batch, "greedy", None, max_new_tokens=1, return_dict_in_generate=True, output_scores=True,
            logits_processor=LogitsProcessorList([record]), seed=0, **kwargs,
        )  # fmt: skip
        return record.per_step()[0], out.scores[0]

    config = GenerationConfig(do_sample=True, temperature=3.0, top_k=0, min_p=0.2, top_n_sigma=1.5)
    before, after = warped(generation_config=config)
    expected = SamplingConfig(do_sample=True, temperature=3.0, min_p=0.2, top_n_sigma=1.5).warp(before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    before, after = warped(generation_config=config, min_p=0.05, top_n_sigma=0.5)
    expected = SamplingConfig(do_sample=True, temperature=3.0, min_p=0.05, top_n_sigma=0.5).warp(before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    # top_n_sigma alone (transformers builds no warper for it): still applied
    before, after = warped(do_sample=True, temperature=1.0, top_k=0, top_n_sigma=0.5)
    torch.testing.assert_close(
        after, SamplingConfig(do_sample=True, top_n_sigma=0.5).warp(before), rtol=0, atol=0
    )
    assert torch.isinf(after).sum() > torch.isinf(before).sum()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"top_n_sigma": -1.0}, r"top_n_sigma must be in \[0, inf\) \(0 disables it\), got -1.0"),
        ({"top_n_sigma": float("inf")}, r"top_n_sigma must be in \[0, inf\)"),
    ],
)
def test_bad_top_n_sigma_is_rejected(expert, batch, bad, message):
    with pytest.raises(ValueError, match=message):
        run(expert, batch, "greedy", None, max_new_tokens=2, do_sample=True, **bad)


def test_unseeded_sampling_draws_what_transformers_draws(expert, batch):
    """Without a seed the loop draws from the global RNG exactly as transformers' ``_sample`` does."""
    common = dict(max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=20, temperature=1.5)
    torch.manual_seed(5)
    ours = run(expert, batch, "greedy", None, **common)
    torch.manual_seed(5)
    with torch.no_grad():
        theirs = expert.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **common
        )
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize("seed", ["7", 1.5, [], [1, "x"]])
def test_bad_seed_is_rejected(expert, amateur, batch, seed):
    with pytest.raises(ValueError, match="seed"):
        run(expert, batch, "greedy", amateur, max_new_tokens=2, do_sample=True, seed=seed)


# --- bad input: one clear error each -----------------------------------------------------------------------


def test_contrastive_search_rejects_sampling(expert, amateur, batch):
    with pytest.raises(ValueError, match="contrastive_search is deterministic"):
        run(expert, batch, "contrastive_search", amateur, max_new_tokens=2, do_sample=True)


@pytest.mark.parametrize("method", ["contrastive_search", "dola", "cad"])
def test_beam_search_is_rejected(expert, amateur, batch, method):
    with pytest.raises(ValueError, match="beam search"):
        run(expert, batch, method, amateur, max_new_tokens=2, num_beams=2)


@pytest.mark.parametrize(
    "method, bad, message",
    [
        ("contrastive_search", {"penalty_alpha": 1.5}, r"penalty_alpha must be in \[0, 1\], got 1.5"),
        ("contrastive_search", {"top_k": 0}, r"top_k must be in \[1, 1000\], got 0"),
        ("dola", {"dola_layers": "middle"}, "dola_layers must be 'low', 'high' or a list"),
        ("dola", {"relative_top": 2.0}, r"relative_top must be in \[0, 1\], got 2.0"),
        ("expert_amateur", {"plausibility_alpha": -0.1}, r"plausibility_alpha must be in \[0, 1\]"),
        ("expert_amateur", {"amateur_temperature": 0.0}, r"amateur_temperature must be in \(0, inf\)"),
        ("cad", {"cad_alpha": -1.0}, r"cad_alpha must be in \[0, 100\], got -1.0"),
    ],
)
def test_parameter_out_of_range_names_it(expert, amateur, batch, method, bad, message):
    with pytest.raises(ValueError, match=message):
        with torch.no_grad():
            expert.generate(
                input_ids=batch["input_ids"],
                max_new_tokens=2,
                **{**method_kwargs(method, batch, amateur), **bad},
            )


def test_cad_without_context_free_prompt(expert, batch):
    with pytest.raises(ValueError, match="cad needs context_free_input_ids"):
        expert.generate(input_ids=batch["input_ids"], custom_generate=cd.hf.cad, max_new_tokens=2)


def test_dola_runs_on_a_decoder_without_a_family_table_and_names_a_missing_final_norm():
    """GPT-NeoX (``final_layer_norm``) runs with normed early exits; a decoder whose final norm is found under
    none of the known names gets an error that lists them."""
    config = GPTNeoXConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    kwargs = {"custom_generate": cd.hf.dola, "max_new_tokens": 2, "early_exit_norm": True, "dola_layers": [0]}
    with torch.no_grad():
        assert model.generate(input_ids=torch.tensor([[5, 6, 7]]), **kwargs).shape == (1, 5)
    decoder = model.get_decoder()
    decoder.add_module("last_norm", decoder.final_layer_norm)
    del decoder.final_layer_norm
    with pytest.raises(
        ValueError, match="no final norm found on its decoder.*looked for norm, final_layernorm"
    ):
        model.generate(input_ids=torch.tensor([[5, 6, 7]]), **kwargs)


def test_expert_amateur_needs_an_amateur(expert, batch):
    with pytest.raises(ValueError, match="expert_amateur needs amateur_model"):
        expert.generate(input_ids=batch["input_ids"], custom_generate=cd.hf.expert_amateur, max_new_tokens=2)


def test_expert_amateur_rejects_another_vocabulary(expert, batch):
    config = LlamaConfig(
        vocab_size=600, hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
        head_dim=64,
    )  # fmt: skip
    other = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(
        ValueError, match=r"amateur_model's vocabulary \(600 tokens\) differs from the expert's \(512\)"
    ):
        expert.generate(
            input_ids=batch["input_ids"],
            custom_generate=cd.hf.expert_amateur,
            amateur_model=other,
            max_new_tokens=2,
        )


def test_expert_amateur_rejects_another_tokenizer(expert, amateur, batch):
    tokenizer = tiny_tokenizer()
    other = tiny_tokenizer()
    other.add_tokens(["extra"])
    with pytest.raises(
        ValueError, match=r"the amateur's tokenizer \(513 tokens\) differs from the expert's \(512 tokens\)"
    ):
        expert.generate(
            input_ids=batch["input_ids"],
            custom_generate=cd.hf.expert_amateur,
            amateur_model=amateur,
            expert_tokenizer=tokenizer,
            amateur_tokenizer=other,
            max_new_tokens=2,
        )


def test_misspelled_method_kwarg_is_rejected_by_generate(expert, batch):
    with pytest.raises(ValueError, match="dola_layer"):
        expert.generate(
            input_ids=batch["input_ids"], custom_generate=cd.hf.dola, dola_layer="high", max_new_tokens=2
        )
