"""The pair-aware scheduler under pressure: a small token budget (chunked prefill), a small max_num_seqs and a KV
cache too small for the batch (preemption). Every CAD / AdaCAD request must still decode exactly what the Hugging
Face backend decodes alone; with the guards switched off the same workload splits pairs, and those requests fail
loudly instead of decoding without their contrast.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from contrastive_decoding.api import generate_outputs  # noqa: E402
from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402
from contrastive_decoding.vllm import LLM  # noqa: E402

from ..tiny_models import tiny_model, tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.vllm
# 5 sequences (a pair can find one seat left), 72 tokens per step (the 20-token plain prompts get chunked next to
# the pairs), and 6 blocks of 32 tokens (5 usable) for 5 running requests that grow from 1 to 2 blocks (preemption).
# A preempted pair is recomputed in one step, so a pair's two prompts plus 2 x its new tokens fit 72.
TIGHT = {"max_model_len": 96, "gpu_memory_utilization": 0.1, "max_num_seqs": 5, "max_num_batched_tokens": 72,
         "block_size": 32, "num_gpu_blocks_override": 6, "disable_log_stats": False}  # fmt: skip
NEW_TOKENS = 24


def workload() -> list[dict]:
    requests = []
    for i in range(14):
        words = [f"w{(7 * i + 3 * j) % 400 + 10}" for j in range(5 + (5 * i) % 6)]
        request = {"prompt": " ".join(words), "max_new_tokens": NEW_TOKENS}
        if i % 4 == 3:  # plain greedy rows with long prompts between the pairs
            requests.append({**request, "prompt": " ".join(f"w{(11 * i + j) % 400 + 10}" for j in range(20))})
            continue
        method = "adacad" if i % 3 == 0 else "cad"
        requests.append({**request, "method": method, "context_free_prompt": " ".join(words[-1 - i % 3 :])})
    return requests


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    tiny_model("llama", num_layers=4, seed=2).save_pretrained(root)
    tiny_tokenizer().save_pretrained(root)
    return str(root)


def hf_reference(checkpoint: str, requests: list[dict]) -> list[list[int]]:
    model, tokenizer = load_model_and_tokenizer(checkpoint)
    outputs = []
    with torch.no_grad():
        for request in requests:
            method = request.get("method", "greedy")
            free = [request["context_free_prompt"]] if "context_free_prompt" in request else None
            outputs.append(
                generate_outputs(
                    model, tokenizer, [request["prompt"]], method, max_new_tokens=NEW_TOKENS,
                    context_free_prompts=free,
                )[0].token_ids
            )  # fmt: skip
    return outputs


def preemptions(llm: LLM) -> float:
    """Preemptions of finished requests (vLLM's own and the whole-pair ones the scheduler makes)."""
    return sum(
        getattr(m, "sum", 0) for m in llm.engine.get_metrics() if m.name == "vllm:request_num_preemptions"
    )


def test_pairs_stay_together_under_pressure(checkpoint):
    requests = workload()
    with LLM(checkpoint, **TIGHT) as llm:
        got = [output.token_ids for output in llm.generate_requests(requests)]
        preempted = preemptions(llm)
    assert got == hf_reference(checkpoint, requests)
    assert preempted > 0  # the KV cache really ran out: whole pairs were preempted and resumed


def test_a_split_pair_fails_loudly(checkpoint):
    """The same workload with the scheduler's guards off: vLLM splits pairs, and they fail with an error."""
    with LLM(checkpoint, **TIGHT, scheduler_cls="tests.vllm.pair_schedulers.UnguardedPairScheduler") as llm:
        with pytest.raises(
            RuntimeError, match="request\\(s\\) failed in the engine: contrastive pair failed"
        ):
            llm.generate_requests(workload())
        # the engine keeps serving: a request that fits still decodes
        assert len(llm.generate_requests([{"prompt": "w1 w2 w3", "max_new_tokens": 4}])[0].token_ids) == 4


def test_a_pair_that_cannot_fit_one_step_fails_at_arrival(checkpoint):
    long_prompt = " ".join(f"w{i + 10}" for i in range(40))
    with LLM(checkpoint, **TIGHT) as llm:
        with pytest.raises(RuntimeError, match="max_num_batched_tokens >= "):
            llm.generate_requests(
                [
                    {
                        "prompt": long_prompt,
                        "method": "cad",
                        "context_free_prompt": long_prompt,
                        "max_new_tokens": 4,
                    }
                ]
            )
        assert len(llm.generate_requests([{"prompt": "w1 w2", "max_new_tokens": 3}])[0].token_ids) == 3
