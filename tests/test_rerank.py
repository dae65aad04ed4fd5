"""rerank on the Hugging Face backend: over-generate and rerank and RankGen's beam search, against slow
reference loops, plain seeded sampling, batching and seeds; the RankGen scorer on a tiny random T5 saved to
disk against a literal transcription of RankGen's code; the MiniLM scorer on the real packaged model."""

from __future__ import annotations

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.api import generate_outputs

from . import reference_loops
from .tiny_models import EOS_TOKEN_ID, tiny_model, tiny_tokenizer, word_level_tokenizer

PROMPTS = ["w5 w17 w300 w42", "w9 w8", "w100 w101 w102 w103 w104 w105"]
SAMPLING = {"do_sample": True, "temperature": 3.0, "seed": 7}
CS = {"scorer": "contrastive_search", "scorer_alpha": 0.6}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=2)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def token_ids(model, tokenizer, method="rerank", prompts=PROMPTS, **params):
    return [o.token_ids for o in generate_outputs(model, tokenizer, prompts, method, **params)]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt)["input_ids"]


# ------------------------------------------------------------------------------- reduces to plain sampling


@pytest.mark.parametrize("segment_length", [None, 3])
def test_one_sample_one_beam_is_plain_seeded_sampling(model, tokenizer, segment_length):
    params = {"max_new_tokens": 8, "repetition_penalty": 1.3, **SAMPLING}
    plain = token_ids(model, tokenizer, "plain", **params)
    assert token_ids(model, tokenizer, num_samples=1, segment_length=segment_length, **params) == plain


def test_one_sample_with_the_new_filters_is_plain_seeded_sampling(model, tokenizer):
    params = {"max_new_tokens": 8, **SAMPLING, "temperature": 2.0, "top_n_sigma": 1.0, "min_p": 0.05}
    plain = token_ids(model, tokenizer, "plain", **params)
    assert token_ids(model, tokenizer, num_samples=1, **params) == plain


# ------------------------------------------------------------------------------- against reference loops


def test_overgenerate_keeps_the_best_plain_sample_by_the_scorer(model, tokenizer):
    """N samples (seeds s .. s + N - 1, what plain sampling draws with those seeds), the best by the scorer."""
    ours = token_ids(model, tokenizer, num_samples=4, max_new_tokens=6, **CS, **SAMPLING)
    for prompt, chosen in zip(PROMPTS, ours, strict=True):
        ids = prompt_ids(tokenizer, prompt)
        samples = [
            token_ids(model, tokenizer, "plain", [prompt], max_new_tokens=6, do_sample=True, temperature=3.0, seed=7 + j)[0]
            for j in range(4)
        ]  # fmt: skip
        scores = [reference_loops.candidate_contrastive_score(model, ids, s, 0.6) for s in samples]
        assert chosen == samples[max(range(4), key=lambda j: (scores[j], -j))], prompt


@pytest.mark.slow
@pytest.mark.parametrize("beam_width, num_samples, segment_length", [(2, 3, 3), (3, 2, 2), (1, 3, 4)])
def test_beam_search_equals_the_reference_loop(model, tokenizer, beam_width, num_samples, segment_length):
    params = dict(beam_width=beam_width, num_samples=num_samples, segment_length=segment_length)
    ours = token_ids(model, tokenizer, prompts=PROMPTS[:2], max_new_tokens=6, **params, **CS, **SAMPLING)
    for prompt, chosen in zip(PROMPTS[:2], ours, strict=True):
        expected = reference_loops.rerank_beam_search(
            model, prompt_ids(tokenizer, prompt), 6, temperature=3.0, seed=7, penalty_alpha=0.6,
            eos=EOS_TOKEN_ID, **params,
        )  # fmt: skip
        assert chosen == expected, prompt


@pytest.mark.slow
def test_beams_that_end_keep_their_place():
    """A model that ends often (one token in eight is an EOS): finished beams stay in the table with their
    score, and every round pools them with the new candidates (the reference agrees)."""
    model = tiny_model("llama", num_layers=2, seed=3)
    eos = list(range(EOS_TOKEN_ID, 512, 8))
    model.generation_config.eos_token_id = eos
    tokenizer = tiny_tokenizer()
    params = dict(beam_width=2, num_samples=3, segment_length=2)
    ours = generate_outputs(
        model, tokenizer, PROMPTS[:2], "rerank", max_new_tokens=6, **params, **CS, **SAMPLING
    )
    for prompt, output in zip(PROMPTS[:2], ours, strict=True):
        expected = reference_loops.rerank_beam_search(
            model,
            prompt_ids(tokenizer, prompt),
            6,
            temperature=3.0,
            seed=7,
            penalty_alpha=0.6,
            eos=eos,
            **params,
        )
        assert output.token_ids == expected, prompt
    assert any(set(eos) & set(o.token_ids) for o in ours), "no output ended: the test checks little"


# ------------------------------------------------------------------------------- batching, seeds


def test_batched_equals_one_by_one_and_seeds_reproduce(model, tokenizer):
    params = dict(num_samples=3, beam_width=2, segment_length=3, max_new_tokens=8, **CS, **SAMPLING)
    together = token_ids(model, tokenizer, **params)
    assert token_ids(model, tokenizer, **params) == together
    assert token_ids(model, tokenizer, batch_size=1, **params) == together
    assert token_ids(model, tokenizer, batch_size=2, **params) == together
    assert token_ids(model, tokenizer, **{**params, "seed": 8}) != together


def test_drop_in_for_model_generate(model, tokenizer):
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(
        **encoded, custom_generate=cd.hf.rerank, max_new_tokens=6, pad_token_id=0, num_samples=3, top_k=0,
        beam_width=2, segment_length=2, **CS, **SAMPLING,
    )  # fmt: skip
    expected = token_ids(
        model, tokenizer, num_samples=3, beam_width=2, segment_length=2, max_new_tokens=6, **CS, **SAMPLING
    )
    width = encoded["input_ids"].shape[1]
    for row, ids in zip(out[:, width:].tolist(), expected, strict=True):
        assert row[: len(ids)] == ids and all(t == 0 for t in row[len(ids) :])
    result = model.generate(
        **encoded, custom_generate=cd.hf.rerank, max_new_tokens=6, pad_token_id=0, return_dict_in_generate=True,
        num_samples=3, **CS, **SAMPLING,
    )  # fmt: skip
    assert result.sequences.shape[0] == len(PROMPTS)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "rerank ranks sampled candidates; do_sample=False is not supported"),
        ({**SAMPLING, "num_samples": 0}, r"num_samples must be in \[1, 1000\], got 0"),
        ({**SAMPLING, "scorer": "rankgen"}, "rerank scorer 'rankgen' needs scorer_path"),
        ({**SAMPLING, "scorer": "rankgen", "scorer_path": "/does/not/exist"}, "is not a directory"),
        (
            {**SAMPLING, "scorer": "minilm", "scorer_path": "/does/not/exist"},
            "not a sentence-embedding model",
        ),
        ({**SAMPLING, "scorer": "minlm"}, "Did you mean 'minilm'"),
    ],
)
def test_clear_errors(model, tokenizer, params, message):
    with pytest.raises(ValueError, match=message):
        generate_outputs(model, tokenizer, PROMPTS, "rerank", max_new_tokens=3, **params)


def test_drop_in_refusals(model, tokenizer):
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    common = dict(custom_generate=cd.hf.rerank, max_new_tokens=3, pad_token_id=0, **CS)
    with pytest.raises(ValueError, match="do_sample=False is not supported"):
        model.generate(**encoded, **common)
    with pytest.raises(ValueError, match="num_return_sequences=2 is not supported"):
        model.generate(**encoded, **common, do_sample=True, num_return_sequences=2)
    with pytest.raises(ValueError, match="output_scores"):
        model.generate(**encoded, **common, do_sample=True, return_dict_in_generate=True, output_scores=True)
    with pytest.raises(ValueError, match="minilm scorer reads text: pass lm_tokenizer"):
        model.generate(
            **encoded, custom_generate=cd.hf.rerank, max_new_tokens=3, pad_token_id=0, do_sample=True
        )


def test_score_is_not_applicable():
    from contrastive_decoding.scoring import score

    with pytest.raises(ValueError, match="rerank cannot score continuations"):
        score(None, None, ["a"], [" b"], method="rerank")


# ------------------------------------------------------------------------------- RankGen scorer


def _rankgen_transcription():
    """RankGen's code, transcribed: ``rankgen_model/modeling_rankgen.py``'s ``T5EncoderWithProjection`` and
    ``rankgen/rankgen_encoder.py``'s ``RankGenEncoder.encode`` / ``rankgen_generator.py``'s ``rankgen_scorer``
    (with the model and tokenizer handed in instead of downloaded; tqdm and the device dropped)."""
    from torch import nn
    from transformers import T5EncoderModel, T5PreTrainedModel

    class T5EncoderWithProjection(T5PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.config = config
            self.t5_encoder = T5EncoderModel(config)
            self.projection = nn.Linear(config.d_model, config.d_model, bias=False)
            # Initialize weights and apply final processing
            self.post_init()

        def forward(self, **input_args):
            hidden_states = self.t5_encoder(**input_args).last_hidden_state
            hidden_states = hidden_states[:, 0, :]
            batch_embeddings = self.projection(hidden_states)
            return batch_embeddings

    def encode(model, tokenizer, inputs, vectors_type="prefix", max_batch_size=32):
        if isinstance(inputs, str):
            inputs = [inputs]
        if vectors_type == "prefix":
            inputs = ["pre " + input for input in inputs]
            max_length = 512
        else:
            inputs = ["suffi " + input for input in inputs]
            max_length = 128

        all_embeddings = []
        for i in range(0, len(inputs), max_batch_size):
            tokenized_inputs = tokenizer(inputs[i : i + max_batch_size], return_tensors="pt", padding=True)
            for k, v in tokenized_inputs.items():
                tokenized_inputs[k] = v[:, :max_length]
            with torch.inference_mode():
                batch_embeddings = model(**tokenized_inputs)
            all_embeddings.append(batch_embeddings)
        return {"embeddings": torch.cat(all_embeddings, dim=0)}

    def rankgen_scorer(model, tokenizer, prefix, suffixes):
        prefix_vector = encode(model, tokenizer, prefix, vectors_type="prefix")["embeddings"]
        suffix_vectors = encode(model, tokenizer, suffixes, vectors_type="suffix")["embeddings"]
        return torch.matmul(prefix_vector, suffix_vectors.t()).squeeze(dim=0)

    return T5EncoderWithProjection, rankgen_scorer


def _t5_like_tokenizer():
    """A word-level tokenizer over the tiny LM's words plus RankGen's ``pre`` / ``suffi``, which appends
    ``</s>`` and pads on the right, as T5's tokenizer does."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = word_level_tokenizer(range(3, 512), special={512: "pre", 513: "suffi"})
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", EOS_TOKEN_ID)]
    )
    tokenizer.padding_side = "right"
    return tokenizer


@pytest.fixture(scope="module")
def rankgen_checkpoint(tmp_path_factory):
    """A tiny random-init RankGen encoder (T5 encoder + projection) saved with ``save_pretrained``: the layout
    of RankGen's published checkpoints (no RankGen weights are reachable here)."""
    from transformers import T5Config

    T5EncoderWithProjection, _ = _rankgen_transcription()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=520, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=EOS_TOKEN_ID, decoder_start_token_id=0,
    )  # fmt: skip
    encoder = T5EncoderWithProjection(config).eval()
    path = tmp_path_factory.mktemp("rankgen-tiny")
    encoder.save_pretrained(path)
    tokenizer = _t5_like_tokenizer()
    tokenizer.save_pretrained(path)
    return path, encoder, tokenizer


def test_rankgen_scorer_equals_rankgen_code(rankgen_checkpoint):
    from contrastive_decoding.rerank_scorers import Candidates, RankGenEncoder, rankgen_scorer

    path, encoder, tokenizer = rankgen_checkpoint
    _, reference_scorer = _rankgen_transcription()
    prefixes = ["w5 w17 w300 w42", "w9 w8"]
    long_text = " ".join(f"w{3 + i % 500}" for i in range(200))  # past the 128-token cut of continuations
    texts = ["w6 w7", "w300 w42 w42", long_text, "w8 w9 w10"]
    index = [0, 0, 0, 1]
    ours = rankgen_scorer(str(path))(Candidates(prefixes, texts, index))
    for p, prefix in enumerate(prefixes):
        rows = [r for r, i in enumerate(index) if i == p]
        expected = reference_scorer(encoder, tokenizer, prefix, [texts[r] for r in rows])
        assert torch.allclose(ours[rows], expected.reshape(-1), atol=1e-5), prefix
    # the loaded weights are the saved ones (tied embeddings included)
    loaded = RankGenEncoder(path)
    for name, value in encoder.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


def test_rerank_with_the_rankgen_scorer_keeps_the_best_by_rankgen(model, tokenizer, rankgen_checkpoint):
    path, encoder, rankgen_tokenizer = rankgen_checkpoint
    _, reference_scorer = _rankgen_transcription()
    ours = token_ids(
        model, tokenizer, num_samples=4, max_new_tokens=5, scorer="rankgen", scorer_path=str(path), **SAMPLING
    )
    for prompt, chosen in zip(PROMPTS, ours, strict=True):
        samples = [
            token_ids(model, tokenizer, "plain", [prompt], max_new_tokens=5, do_sample=True, temperature=3.0, seed=7 + j)[0]
            for j in range(4)
        ]  # fmt: skip
        texts = [tokenizer.decode(s, skip_special_tokens=True) for s in samples]
        scores = reference_scorer(encoder, rankgen_tokenizer, prompt, texts).tolist()
        assert chosen == samples[max(range(4), key=lambda j: (scores[j], -j))], prompt


def test_rankgen_scorer_missing_files_give_one_clear_error(rankgen_checkpoint, tmp_path):
    import shutil

    from contrastive_decoding.rerank_scorers import RankGenEncoder

    path, _, _ = rankgen_checkpoint
    for missing, message in [
        ("config.json", "has no config.json"),
        ("model.safetensors", r"has no weights \(model.safetensors or pytorch_model.bin\)"),
        ("tokenizer.json", "has no tokenizer.*google/t5-v1_1-<size> tokenizer"),
    ]:
        copy = tmp_path / missing
        shutil.copytree(path, copy)
        (copy / missing).unlink()
        with pytest.raises(ValueError, match=message):
            RankGenEncoder(copy)


# ------------------------------------------------------------------------------- MiniLM scorer


@pytest.mark.integration
def test_minilm_scorer_is_the_cosine_of_the_benchmark_embeddings():
    from contrastive_decoding.benchmarks.embeddings import default_embedder
    from contrastive_decoding.rerank_scorers import Candidates, minilm_scorer

    prefixes = ["Paris is the capital of France."]
    texts = ["It is famous for the Eiffel Tower and the Louvre.", "Photosynthesis turns light into sugar."]
    scores = minilm_scorer()(Candidates(prefixes, texts, [0, 0]))
    vectors = default_embedder()([*prefixes, *texts])  # [3, 384] unit rows
    assert torch.allclose(scores, torch.from_numpy(vectors[1:] @ vectors[0]), atol=1e-5)
    assert scores[0] > scores[1]


@pytest.mark.integration
def test_rerank_with_minilm_runs_through_the_api(model, tokenizer):
    """The default scorer end to end: the best of 3 by MiniLM cosine with the prompt."""
    from contrastive_decoding.benchmarks.embeddings import default_embedder

    ours = generate_outputs(
        model, tokenizer, PROMPTS[:2], "rerank", num_samples=3, max_new_tokens=4, **SAMPLING
    )
    for prompt, output in zip(PROMPTS[:2], ours, strict=True):
        samples = [
            generate_outputs(model, tokenizer, [prompt], "plain", max_new_tokens=4, do_sample=True, temperature=3.0, seed=7 + j)[0]
            for j in range(3)
        ]  # fmt: skip
        vectors = default_embedder()([prompt, *[s.text for s in samples]])
        scores = (vectors[1:] @ vectors[0]).tolist()
        assert output.token_ids == samples[max(range(3), key=lambda j: (scores[j], -j))].token_ids


# ------------------------------------------------------------------------------- CLI


def test_cli_generate_with_rerank(tmp_path):
    import json

    from click.testing import CliRunner

    from contrastive_decoding.cli import main
    from contrastive_decoding.models import load_model_and_tokenizer

    from .tiny_models import save_tiny_pair

    checkpoint = save_tiny_pair(tmp_path)["amateur"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    settings = ["--set", "rerank.num_samples=3", "--set", "rerank.scorer=contrastive_search", "--set", "do_sample=true",
                "--set", "seed=5", "--set", "rerank.segment_length=2", "--set", "beam_width=2"]  # fmt: skip
    result = CliRunner().invoke(
        main,
        ["generate", "--model", checkpoint, "--method", "rerank", *settings, "--max-new-tokens", "4",
         "--input", str(source), "--output", str(tmp_path / "out.jsonl")],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    model, tokenizer = load_model_and_tokenizer(checkpoint)
    expected = generate_outputs(
        model, tokenizer, PROMPTS[:2], "rerank", max_new_tokens=4, num_samples=3, scorer="contrastive_search",
        do_sample=True, seed=5, segment_length=2, beam_width=2,
    )  # fmt: skip
    assert [row["token_ids"] for row in rows] == [o.token_ids for o in expected]

    refused = CliRunner().invoke(
        main,
        ["generate", "--model", checkpoint, "--method", "rerank", "--prompt", "w5", "--max-new-tokens", "2"],
    )
    assert refused.exit_code != 0 and "do_sample=False is not supported" in refused.output
    assert "Traceback" not in refused.output
