"""Port of transformers' own generation tests for contrastive search and DoLa to our drop-ins.

Upstream: ``tests/generation/test_utils.py`` at tag v4.55.4, class ``GenerationTesterMixin``: the tests
``test_contrastive_generate``, ``test_contrastive_generate_dict_outputs_use_cache``,
``test_contrastive_generate_low_memory``, ``test_dola_decoding_sample`` (and ``test_greedy_generate_dict_outputs_use_cache``
for our plain loop), with the output checks ``_check_generate_outputs``, ``_check_scores``, ``_check_logits``,
``_check_attentions_for_generate``, ``_check_hidden_states_for_generate`` and
``_check_past_key_values_for_generate``. They run on upstream's tiny configs (``upstream_configs``) for the
five model families whose test classes include the mixin there: Llama, GPT-2, Qwen2, Gemma, Mistral.

Where the port differs from upstream, and why:

- ``custom_generate=cd.hf.contrastive_search`` / ``cd.hf.dola`` instead of transformers' core modes (removed in 5.x).
- Attention checks load the model with ``attn_implementation="eager"``: transformers 5.x's SDPA returns no
  attention weights (upstream 4.55 fell back to them); hidden states / cache checks use the default SDPA.
- The cache is read through 5.x's ``DynamicCache.layers[i].keys`` (4.55: ``key_cache[i]``).
- Beyond upstream, the checks also count the layers of each step's hidden states / attentions, and the plain
  output is compared with the dict output's ``sequences``.
- Upstream lets ``do_sample=True`` with ``penalty_alpha`` fall back to sampling; our contrastive search refuses
  it with a clear error (documented in the README), tested here too.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.utils import GenerateDecoderOnlyOutput

import contrastive_decoding as cd

from .upstream_configs import FAMILIES, SEQ_LENGTH, prepare_config_and_inputs_for_generate, upstream_model

MAX_NEW_TOKENS = 3  # GenerationTesterMixin.max_new_tokens


def logits_processor_kwargs(do_sample: bool = False) -> dict:
    """``GenerationTesterMixin._get_logits_processor_kwargs``."""
    kwargs = {"bad_words_ids": [[1, 0]], "repetition_penalty": 1.2, "remove_invalid_values": True}
    if do_sample:
        kwargs.update(top_k=10, top_p=0.7, temperature=0.7)
    return kwargs


def contrastive_generate(model, inputs: dict, **outputs):
    """``GenerationTesterMixin._contrastive_generate``, on our drop-in."""
    with torch.no_grad():
        return model.generate(
            custom_generate=cd.hf.contrastive_search,
            do_sample=False,
            num_beams=1,
            max_new_tokens=MAX_NEW_TOKENS,
            penalty_alpha=0.6,
            top_k=5,
            **logits_processor_kwargs(),
            **outputs,
            **inputs,
        )


DICT_OUTPUTS = dict(
    output_scores=True,
    output_logits=True,
    output_hidden_states=True,
    output_attentions=True,
    return_dict_in_generate=True,
    use_cache=True,
)


# --- the output checks (GenerationTesterMixin._check_*), decoder-only branch ----------------------------------


def check_generate_outputs(output, config, prompt_length: int, use_cache: bool = True) -> None:
    batch = output.sequences.shape[0]
    output_length = output.sequences.shape[-1]
    generated_length = output_length - prompt_length
    vocab_size = config.get_text_config().vocab_size
    layers = config.get_text_config().num_hidden_layers
    # scores and logits
    assert isinstance(output.scores, tuple) and len(output.scores) == generated_length
    assert [s.shape for s in output.scores] == [(batch, vocab_size)] * generated_length
    assert isinstance(output.logits, tuple)
    assert [logits.shape[0] for logits in output.logits] == [batch] * len(output.logits)
    assert all(logits.shape[-1] == vocab_size for logits in output.logits)
    # attentions: the first forward has the whole prompt as input, then one token per step with the cache
    assert isinstance(output.attentions, tuple) and len(output.attentions) == output_length - prompt_length
    for generated, step in enumerate(output.attentions):
        assert isinstance(step, tuple) and len(step) == layers
        query = 1 if use_cache and generated > 0 else prompt_length + generated
        expected = (batch, config.num_attention_heads, query, prompt_length + generated)
        assert [a.shape for a in step] == [expected] * len(step)
    # hidden states
    assert isinstance(output.hidden_states, tuple) and len(output.hidden_states) == generated_length
    for generated, step in enumerate(output.hidden_states):
        assert isinstance(step, tuple) and len(step) == layers + 1  # the embeddings, then each layer
        query = 1 if use_cache and generated > 0 else prompt_length + generated
        assert [h.shape for h in step] == [(batch, query, config.hidden_size)] * len(step)
    # the cache covers every token but the last one (its inputs are those of the latest forward)
    if use_cache:
        check_past_key_values(output.past_key_values, config, batch, cache_length=output_length - 1)
    else:
        assert output.past_key_values is None


def check_past_key_values(cache, config, batch: int, cache_length: int) -> None:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    expected = (batch, heads, cache_length, config.hidden_size // config.num_attention_heads)
    layers = list(cache.layers)
    assert len(layers) == config.get_text_config().num_hidden_layers
    assert [layer.keys.shape for layer in layers] == [expected] * len(layers)
    assert [layer.values.shape for layer in layers] == [expected] * len(layers)


# --- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_contrastive_generate(family):
    """``GenerationTesterMixin.test_contrastive_generate`` (tests/generation/test_utils.py, v4.55.4)."""
    model = upstream_model(family)
    inputs = prepare_config_and_inputs_for_generate(model)
    output = contrastive_generate(model, inputs, use_cache=True)
    assert output.shape[-1] == MAX_NEW_TOKENS + inputs["input_ids"].shape[-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_contrastive_generate_dict_outputs_use_cache(family):
    """``GenerationTesterMixin.test_contrastive_generate_dict_outputs_use_cache`` (tests/generation/test_utils.py,
    v4.55.4), plus: the plain output is the dict output's ``sequences``."""
    model = upstream_model(family, attn_implementation="eager")
    inputs = prepare_config_and_inputs_for_generate(model)
    output = contrastive_generate(model, inputs, **DICT_OUTPUTS)
    assert isinstance(output, GenerateDecoderOnlyOutput)
    assert output.sequences.shape[-1] == MAX_NEW_TOKENS + inputs["input_ids"].shape[-1]
    check_generate_outputs(output, model.config, SEQ_LENGTH, use_cache=True)
    plain = contrastive_generate(model, inputs, use_cache=True)
    assert plain.tolist() == output.sequences.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_contrastive_generate_low_memory(family):
    """``GenerationTesterMixin.test_contrastive_generate_low_memory`` (tests/generation/test_utils.py, v4.55.4):
    ``low_memory`` does not change the output (ours has no low-memory mode to switch: it changes nothing)."""
    model = upstream_model(family)
    inputs = prepare_config_and_inputs_for_generate(model, batch_size=1)

    def run(low_memory: bool):
        with torch.no_grad():
            return model.generate(
                custom_generate=cd.hf.contrastive_search,
                top_k=4,
                penalty_alpha=0.6,
                low_memory=low_memory,
                max_new_tokens=MAX_NEW_TOKENS,
                use_cache=True,
                **inputs,
            )

    assert run(True).tolist() == run(False).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_dola_decoding_sample(family):
    """``GenerationTesterMixin.test_dola_decoding_sample`` (tests/generation/test_utils.py, v4.55.4): sampled DoLa
    with the mixin's processors and warpers; no EOS (``eos_token_id=-1``), at least two forwards."""
    model = upstream_model(family, attn_implementation="eager")
    inputs = prepare_config_and_inputs_for_generate(model)
    torch.manual_seed(0)
    with torch.no_grad():
        output = model.generate(
            custom_generate=cd.hf.dola,
            eos_token_id=-1,
            max_new_tokens=4,
            num_beams=1,
            do_sample=True,
            output_scores=True,
            output_logits=True,
            output_hidden_states=True,
            output_attentions=True,
            return_dict_in_generate=True,
            use_cache=True,
            dola_layers="low",
            **logits_processor_kwargs(do_sample=True),
            **inputs,
        )
    check_generate_outputs(output, model.config, SEQ_LENGTH, use_cache=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generate_dict_outputs_use_cache(family):
    """``GenerationTesterMixin.test_greedy_generate_dict_outputs_use_cache`` (tests/generation/test_utils.py,
    v4.55.4), on our plain loop ``cd.hf.greedy``, whose outputs must be transformers' own greedy ones."""
    model = upstream_model(family, attn_implementation="eager")
    inputs = prepare_config_and_inputs_for_generate(model)
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS, **logits_processor_kwargs())
    with torch.no_grad():
        ours = model.generate(custom_generate=cd.hf.greedy, **kwargs, **DICT_OUTPUTS, **inputs)
        theirs = model.generate(**kwargs, **DICT_OUTPUTS, **inputs)
    check_generate_outputs(ours, model.config, SEQ_LENGTH, use_cache=True)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for step_ours, step_theirs in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        for a, b in zip(step_ours, step_theirs, strict=True):
            torch.testing.assert_close(a, b)
    for step_ours, step_theirs in zip(ours.attentions, theirs.attentions, strict=True):
        for a, b in zip(step_ours, step_theirs, strict=True):
            torch.testing.assert_close(a, b)
    for a, b in zip(ours.past_key_values.layers, theirs.past_key_values.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys)


def test_contrastive_search_refuses_sampling():
    """Not upstream: transformers 4.55 silently decoded ``do_sample=True, penalty_alpha=...`` as plain sampling;
    our contrastive search is deterministic and says so."""
    model = upstream_model("llama")
    inputs = prepare_config_and_inputs_for_generate(model)
    with pytest.raises(ValueError, match="contrastive_search is deterministic"):
        model.generate(custom_generate=cd.hf.contrastive_search, do_sample=True, max_new_tokens=2, **inputs)
