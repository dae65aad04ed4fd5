"""`contrastive-decoding serve` and `generate --backend vllm` on architectures beyond Llama (issue 16's "done when").

One server on a tiny random Gemma 3 expert with final logit soft-capping (early exits through layer hooks) and a
Mistral amateur (another architecture, same tokenizer): DoLa, expert-amateur and greedy completions over HTTP equal
the Hugging Face backend's tokens; a DoLa request naming a layer beyond the model is refused with a 400 while the
server keeps serving. Then `generate --backend vllm` on a tiny Qwen3 (aux hidden states) with a Phi-3 amateur
writes the HF backend's tokens for DoLa and expert-amateur.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from click.testing import CliRunner  # noqa: E402

from contrastive_decoding.api import generate_outputs  # noqa: E402
from contrastive_decoding.cli import main  # noqa: E402
from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402

from ..tiny_models import tiny_model, tiny_tokenizer  # noqa: E402
from .test_server import free_port, serving  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
PROMPTS = ["w5 w17 w300 w42", "w100 w101 w102 w103 w104 w105"]
CASES = {
    "greedy": {"method": "greedy"},
    "dola-high": {"method": "dola", "dola_layers": "high"},
    "dola-list-normed": {"method": "dola", "dola_layers": [0, 1, 3], "early_exit_norm": True},
    "expert_amateur": {"method": "expert_amateur", "contrast_beta": 0.5},
}
MAX_TOKENS = 8


def save(family: str, path: Path, num_layers: int, seed: int) -> str:
    tiny_model(family, num_layers=num_layers, seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def hf_tokens(expert_path: str, amateur_path: str, prompt: str, case: dict) -> list[int]:
    expert, tokenizer = load_model_and_tokenizer(expert_path)
    params = {key: value for key, value in case.items() if key != "method"}
    if case["method"] == "expert_amateur":
        params["amateur_model"] = load_model_and_tokenizer(amateur_path)[0]
    with torch.no_grad():
        [out] = generate_outputs(
            expert, tokenizer, [prompt], case["method"], max_new_tokens=MAX_TOKENS, **params
        )
    return out.token_ids


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3-serve")
    expert, amateur = save("gemma3_softcap", root / "expert", 4, 0), save("mistral", root / "amateur", 2, 1)
    expected = {
        (name, prompt): hf_tokens(expert, amateur, prompt, case)
        for name, case in CASES.items()
        for prompt in PROMPTS
    }
    port = free_port()
    log_path = root / "server.log"
    command = [
        str(Path(sys.executable).parent / "contrastive-decoding"),
        "serve", expert, "--amateur-model", amateur, "--port", str(port), "--host", "127.0.0.1",
        "--max-model-len", "256", "--gpu-memory-utilization", "0.1", "--max-num-seqs", "16",
    ]  # fmt: skip
    with serving(command, port, log_path) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        yield client, expert, expected


def test_serve_on_gemma3_with_a_mistral_amateur_equals_the_hf_backend(gemma_server):
    client, model, expected = gemma_server
    for name, case in CASES.items():
        for prompt in PROMPTS:
            answer = client.completions.create(
                model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                extra_body={"vllm_xargs": case, "return_token_ids": True},
            )  # fmt: skip
            assert list(answer.choices[0].token_ids) == expected[name, prompt], (name, prompt)
    with pytest.raises(openai.BadRequestError, match="has no layer below the model's 4 layers"):
        client.completions.create(
            model=model,
            prompt=PROMPTS[0],
            max_tokens=4,
            extra_body={"vllm_xargs": {"method": "dola", "dola_layers": [9]}},
        )
    again = client.completions.create(
        model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"vllm_xargs": CASES["dola-high"], "return_token_ids": True},
    )  # fmt: skip
    assert list(again.choices[0].token_ids) == expected["dola-high", PROMPTS[0]]  # still serving


def test_generate_backend_vllm_on_qwen3_with_a_phi3_amateur_equals_the_hf_backend(tmp_path):
    expert, amateur = save("qwen3", tmp_path / "expert", 4, 0), save("phi3", tmp_path / "amateur", 2, 1)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in PROMPTS))
    for name in ("dola-high", "expert_amateur"):
        case = CASES[name]
        settings = [
            arg for key, value in case.items() if key != "method" for arg in ("--set", f"{key}={value}")
        ]
        target = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(
            main,
            ["generate", "--model", expert, "--amateur-model", amateur, "--backend", "vllm", "--method",
             case["method"], *settings, "--max-new-tokens", str(MAX_TOKENS), "--input", str(source), "--output",
             str(target)],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        got = [json.loads(line)["token_ids"] for line in target.read_text().splitlines()]
        assert got == [hf_tokens(expert, amateur, prompt, case) for prompt in PROMPTS], name
