"""Only the layers an engine captures, only at the positions it samples (issue 16, item 2).

The wrapper keeps the early exits of the layers named by ``hf_overrides`` ``contrastive_early_exit_layers`` (all by
default) at the step's sampled positions only; its ``forward`` returns the model's own ``[T, H]`` untouched.
Requests naming a layer the engine does not capture, or expert-amateur on an engine without an amateur, are
refused in the front end (``LLM``, the server's middleware: a 400), never in the engine.

One engine: the tiny random Llama (6 layers) with a restricted capture set and no amateur.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm")

from contrastive_decoding.api import generate_outputs  # noqa: E402
from contrastive_decoding.backends.vllm.requests import (  # noqa: E402
    captured_layers,
    check_engine_request,
    parse_extra_args,
)
from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402
from contrastive_decoding.vllm import LLM  # noqa: E402

from ..tiny_models import save_tiny_pair  # noqa: E402
from .test_server import call, fake_state  # noqa: E402

pytestmark = pytest.mark.vllm
ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.1, "max_num_seqs": 16}
PROMPTS = ["w5 w17 w300 w42", "w100 w101 w102 w103 w104 w105"]
CAPTURED = [2, 4]


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    paths = save_tiny_pair(tmp_path_factory.mktemp("capture"))
    expert, tokenizer = load_model_and_tokenizer(paths["expert"])
    with LLM(paths["expert"], hf_overrides={"contrastive_early_exit_layers": CAPTURED}, **ENGINE) as llm:
        yield llm, expert, tokenizer


def test_dola_on_the_captured_layers_equals_the_hf_backend(restricted):
    llm, expert, tokenizer = restricted
    got = [out.token_ids for out in llm.generate(PROMPTS, "dola", max_new_tokens=10, dola_layers=CAPTURED)]
    with torch.no_grad():
        want = [
            out.token_ids
            for out in generate_outputs(
                expert, tokenizer, PROMPTS, "dola", max_new_tokens=10, dola_layers=CAPTURED
            )
        ]
    assert got == want
    greedy = [out.token_ids for out in llm.generate(PROMPTS, "greedy", max_new_tokens=10)]
    assert greedy != got  # the early exits changed the tokens


def test_uncaptured_layers_and_a_missing_amateur_are_refused_before_the_engine(restricted):
    llm = restricted[0]
    with pytest.raises(
        ValueError, match=r"reads early exits of layers \[0, 1, 3\], which this engine does not"
    ):
        llm.generate(PROMPTS[0], "dola", dola_layers=[0, 1, 2, 3])
    with pytest.raises(
        ValueError, match=r"layers \[0, 1, 3, 5\], .*\(contrastive_early_exit_layers=\[2, 4\]\)"
    ):
        llm.generate(PROMPTS[0], "sled")  # every layer
    with pytest.raises(ValueError, match="expert_amateur needs an engine with an amateur model"):
        llm.generate(PROMPTS[0], "expert_amateur")
    assert len(llm.generate(PROMPTS, "dola", max_new_tokens=3, dola_layers=[4])) == 2  # still serving


def test_the_capture_settings():
    assert captured_layers("all", 6, False) == [0, 1, 2, 3, 4, 5]
    assert captured_layers("none", 6, False) == []
    assert captured_layers("dola", 30, True) == [2, 4, 6, 8, 10, 12, 14, 15, 17, 19, 21, 23, 25, 27, 29]
    assert captured_layers("dola", 2, True) == [1]  # "low" and "high" are both [1] at this depth
    assert captured_layers([4, 2, 4], 6, False) == [2, 4]
    for bad in ("some", [6], [-1], [True], 3):
        with pytest.raises(ValueError, match=r"contrastive_early_exit_layers must be .* in \[0, 5\]"):
            captured_layers(bad, 6, False)


def _vllm_state(**hf_config):
    text = SimpleNamespace(num_hidden_layers=6, tie_word_embeddings=False)
    model_config = SimpleNamespace(
        hf_config=SimpleNamespace(**hf_config), hf_text_config=text, hf_overrides={}
    )
    return SimpleNamespace(**vars(fake_state()), vllm_config=SimpleNamespace(model_config=model_config))


def test_check_engine_request_names_what_the_engine_lacks():
    config = SimpleNamespace(contrastive_early_exit_layers="dola")
    text = SimpleNamespace(num_hidden_layers=6, tie_word_embeddings=False)
    request, _ = parse_extra_args({"method": "dola", "dola_layers": "high"})
    check_engine_request(request, config, text)  # "high" = [3, 5], both in "dola"
    request, _ = parse_extra_args({"method": "dola", "dola_layers": [1]})
    with pytest.raises(ValueError, match=r"layers \[1\]"):
        check_engine_request(request, config, text)
    request, _ = parse_extra_args({"method": "greedy"})
    check_engine_request(request, SimpleNamespace(contrastive_early_exit_layers="none"), text)


def test_the_server_answers_400_for_what_the_engine_cannot_run():
    state = _vllm_state(contrastive_early_exit_layers=[2, 4])
    for xargs, message in [
        ({"method": "dola", "dola_layers": [1, 2]}, "layers [1]"),
        ({"method": "expert_amateur"}, "needs an engine with an amateur model"),
    ]:
        for stream in (False, True):
            body = {"model": "m", "prompt": "w5", "stream": stream, "vllm_xargs": xargs}
            answer = call(state, "POST", "/v1/completions", body)
            assert answer.status_code == 400, xargs
            assert message in answer.json()["error"]["message"]
            assert answer.json()["error"]["param"] == "vllm_xargs"
    fine = {"model": "m", "prompt": "w5", "vllm_xargs": {"method": "dola", "dola_layers": [2, 4]}}
    assert call(state, "POST", "/v1/completions", fine).status_code == 200


def test_booleans_that_vllm_xargs_turned_into_ints_mean_true_and_false():
    """vLLM's request schema types vllm_xargs as str | int | float | list: a JSON true arrives as 1."""
    request, _ = parse_extra_args({"method": "dola", "early_exit_norm": 1})
    assert request.config.early_exit_norm is True
    request, _ = parse_extra_args({"method": "sled", "early_exit_norm": 0})
    assert request.config.early_exit_norm is False
    with pytest.raises(ValueError, match="early_exit_norm must be true or false, got 2"):
        parse_extra_args({"method": "dola", "early_exit_norm": 2})
    request, _ = parse_extra_args({"method": "dola", "relative_top": 1})  # a number parameter stays a number
    assert request.config.relative_top == 1 and not isinstance(request.config.relative_top, bool)
