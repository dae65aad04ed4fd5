"""The vLLM backend on architectures other than Llama / Qwen2, with no per-family code: tiny random-init Qwen3,
Gemma 3 (text, with final logit soft-capping) and Phi-3 experts (head_dim 64, which vLLM's CPU attention needs),
each with a tiny amateur of another architecture (Phi-3, Mistral, Gemma 3; same tokenizer). Greedy, DoLa (plain
and normed early exits), expert-amateur and CAD in one batch give the Hugging Face backend's tokens (float32).

How each captures DoLa's early exits: Qwen3 through vLLM's aux hidden states (``SupportsEagle3``), Gemma 3
through hooks on its decoder layers (it has no aux interface), Phi-3 through hooks too, forced with
``hf_overrides={"contrastive_early_exits": "hooks"}`` (its vLLM class is Llama's, which has the aux interface: the
hooks then read the fused ``(hidden, residual)`` layer outputs of vLLM's Llama family). Mistral runs as an amateur
only: its vLLM class is a Llama subclass whose aux path ``test_vllm_backend.py`` already tests, and a fourth
engine would cost another minute.

One engine at a time (module-scoped, one per expert; ~40-80 s each to start on 2 cores).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm")

from torch import nn  # noqa: E402

from contrastive_decoding.api import generate_outputs  # noqa: E402
from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402
from contrastive_decoding.vllm import LLM  # noqa: E402

from ..tiny_models import tiny_model, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.1, "max_num_seqs": 32}
PROMPTS = ["w5 w17 w300 w42", "w100 w101 w102 w103 w104 w105"]
# expert family -> (its vLLM architecture, amateur family, early-exit capture, extra hf_overrides)
ARCHITECTURES = {
    "qwen3": ("Qwen3ForCausalLM", "phi3", "aux", {"contrastive_early_exits": "aux"}),
    "gemma3_softcap": ("Gemma3ForCausalLM", "mistral", "hooks", {}),
    "phi3": ("Phi3ForCausalLM", "gemma3_text", "hooks", {"contrastive_early_exits": "hooks"}),
}
CASES = [
    {"method": "greedy"},
    {"method": "dola", "dola_layers": "high"},
    {"method": "dola", "dola_layers": [0, 1, 3], "early_exit_norm": True, "repetition_penalty": 1.2},
    {"method": "dola", "dola_layers": "low", "layer_choice": "jsd"},
    {"method": "expert_amateur"},
    {"method": "cad", "cad_alpha": 0.5},
]


def save(family: str, path, num_layers: int, seed: int) -> str:
    tiny_model(family, num_layers=num_layers, seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def engine(request, tmp_path_factory):
    family = request.param
    architecture, amateur_family, capture, overrides = ARCHITECTURES[family]
    root = tmp_path_factory.mktemp(family)
    expert_path = save(family, root / "expert", 4, 0)
    amateur_path = save(amateur_family, root / "amateur", 2, 1)
    expert, tokenizer = load_model_and_tokenizer(expert_path)
    amateur, _ = load_model_and_tokenizer(amateur_path)
    with LLM(expert_path, amateur_model=amateur_path, hf_overrides=overrides, **ENGINE) as llm:
        yield SimpleNamespace(
            family=family, architecture=architecture, capture=capture, llm=llm, expert=expert, amateur=amateur,
            tokenizer=tokenizer,
        )  # fmt: skip


def hf_reference(engine, request: dict) -> list[int]:
    request = dict(request)
    prompt, method = request.pop("prompt"), request.pop("method")
    if method == "expert_amateur":
        request["amateur_model"] = engine.amateur
    if "context_free_prompt" in request:
        request["context_free_prompts"] = [request.pop("context_free_prompt")]
    with torch.no_grad():
        return generate_outputs(engine.expert, engine.tokenizer, [prompt], method, **request)[0].token_ids


def test_every_method_in_one_batch_equals_the_hf_backend(engine):
    config = engine.llm.engine.llm_engine.vllm_config.model_config
    assert config.hf_config.architectures == [f"Contrastive{engine.architecture}"]
    assert config.enforce_eager or engine.capture == "aux"
    requests = []
    for case in CASES:
        for prompt in PROMPTS:
            request = {"prompt": prompt, "max_new_tokens": 8, **case}
            if case["method"] == "cad":
                request["context_free_prompt"] = " ".join(prompt.split()[-2:])
            requests.append(request)
    got = [output.token_ids for output in engine.llm.generate_requests(requests)]
    expected = [hf_reference(engine, request) for request in requests]
    assert got == expected
    dola = [tokens for tokens, request in zip(got, requests, strict=True) if request["method"] == "dola"]
    greedy = got[: len(PROMPTS)]
    assert any(tokens not in greedy for tokens in dola)  # the early exits did change the tokens


# ------------------------------------------------------------------------------------------------------------
# Without an engine: how the wrapper is built and what it refuses
# ------------------------------------------------------------------------------------------------------------


def test_the_wrapper_is_the_architectures_own_class_plus_the_mixin():
    from vllm.model_executor.models.interfaces import supports_eagle3

    from contrastive_decoding.backends.vllm import models
    from contrastive_decoding.backends.vllm.engine import needs_eager

    for architecture in ("Qwen3ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM", "Qwen3MoeForCausalLM"):
        wrapper = models.wrapper_class(architecture)
        base = models.base_class(architecture)
        assert wrapper.__mro__[1:3] == (models.ContrastiveMixin, base)
        assert wrapper is getattr(
            models, f"Contrastive{architecture}"
        )  # what vLLM's lazy registry entry loads
        assert needs_eager(architecture) is not supports_eagle3(base)
    assert needs_eager("Gemma3ForCausalLM") and not needs_eager("Qwen3ForCausalLM")
    assert needs_eager("Qwen3ForCausalLM", "hooks")


def test_the_plugin_registers_a_wrapper_for_every_architecture():
    from vllm import ModelRegistry

    from contrastive_decoding.backends.vllm.plugin import register

    register()
    supported = set(ModelRegistry.get_supported_archs())
    for architecture in ("Qwen3ForCausalLM", "Gemma3ForCausalLM", "MistralForCausalLM", "GraniteForCausalLM"):
        assert f"Contrastive{architecture}" in supported


def test_an_architecture_vllm_does_not_implement_is_named(tmp_path):
    from transformers import LlamaConfig

    from contrastive_decoding.backends.vllm.engine import engine_settings

    LlamaConfig(architectures=["NoSuchModelForCausalLM"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'NoSuchModelForCausalLM' is not implemented by vLLM 0.32"):
        engine_settings(str(tmp_path))


class _NoLayers(nn.Module):
    """A model with neither vLLM's aux-hidden-state interface nor a stack of its decoder layers."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4)])


def _stand_in_config(num_layers: int, enforce_eager: bool = True, mode: str = "auto"):
    hf_config = SimpleNamespace(contrastive_early_exits=mode)
    model_config = SimpleNamespace(
        hf_text_config=SimpleNamespace(num_hidden_layers=num_layers), hf_config=hf_config,
        enforce_eager=enforce_eager,
    )  # fmt: skip
    return SimpleNamespace(
        model_config=model_config, parallel_config=SimpleNamespace(pipeline_parallel_size=1)
    )


def test_a_model_neither_capture_can_serve_gets_one_clear_error():
    from contrastive_decoding.backends.vllm.models import early_exit_capture

    with pytest.raises(
        ValueError, match="_NoLayers has neither vLLM's aux-hidden-state interface .* nor a decoder"
    ):
        early_exit_capture(_NoLayers(), _stand_in_config(num_layers=3))
    with pytest.raises(ValueError, match="_NoLayers does not implement vLLM's SupportsEagle3"):
        early_exit_capture(_NoLayers(), _stand_in_config(num_layers=1, mode="aux"))
    with pytest.raises(ValueError, match="need enforce_eager=True"):
        early_exit_capture(_NoLayers(), _stand_in_config(num_layers=1, enforce_eager=False))


class _FusedLayer(nn.Module):
    """vLLM's fused-residual layer contract: takes (positions, hidden_states, residual), returns
    (hidden, residual) whose sum is the residual stream."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, positions, hidden_states, residual):
        stream = hidden_states if residual is None else hidden_states + residual
        return stream * self.scale, stream  # next stream = stream * (1 + scale)


def test_hooks_capture_the_residual_stream_entering_each_layer():
    from contrastive_decoding.backends.vllm.models import HookCapture

    layers = nn.ModuleList([_FusedLayer(1.0), _FusedLayer(2.0), _FusedLayer(3.0)])
    capture = HookCapture(layers, [0, 1, 2], "Stand-in")
    index = torch.tensor([2, 0])  # the sampled positions, in row order
    capture.begin(index)
    embeddings = torch.arange(3.0).repeat_interleave(4).view(3, 4) + 1  # [T, H]: row t holds t + 1
    hidden, residual = embeddings, None
    for layer in layers:
        hidden, residual = layer(None, hidden, residual)  # positional, as vLLM's decoders call them
    embeddings.zero_()  # fused add-norm kernels update their inputs in place: the captures are copies
    _, early = capture.collect(hidden, index)  # [R, L, H]
    assert early.shape == (2, 3, 4)
    assert early[:, :, 0].tolist() == [[3.0, 6.0, 18.0], [1.0, 2.0, 6.0]]  # embeddings, x2, x3 at rows 2, 0
    capture.begin(index)
    with pytest.raises(RuntimeError, match="did not run"):
        capture.collect(hidden, index)
    only_high = HookCapture(
        nn.ModuleList([_FusedLayer(1.0), _FusedLayer(2.0), _FusedLayer(3.0)]), [2], "Stand-in"
    )
    only_high.begin(None)  # a dummy run: nothing kept
    assert only_high.collect(hidden, None) == (hidden, None)


def _pulled(name: str) -> bool:
    from contrastive_decoding.models import _MARKER, cache_dir

    return (cache_dir() / "models" / name / _MARKER).is_file()


@pytest.mark.integration
@pytest.mark.skipif(not _pulled("gemma-3-270m"), reason="run `contrastive-decoding models pull gemma-3-270m`")
def test_gemma3_270m_dola_and_greedy_equal_the_hf_backend():
    """The real Gemma-3-270m (18 layers, head_dim 256, hooks capture): greedy and DoLa as on the HF backend."""
    model, tokenizer = load_model_and_tokenizer("gemma-3-270m")
    prompts = ["The capital of France is", "Water boils at"]
    cases = [("greedy", {}), ("dola", {"dola_layers": "high", "repetition_penalty": 1.2})]
    # 1 GiB of float32 weights and a 262k vocabulary: more than the tiny engines' 10% share of RAM
    settings = {"max_model_len": 512, "max_num_seqs": 4, "max_num_batched_tokens": 512}
    with LLM("gemma-3-270m", gpu_memory_utilization=0.3, **settings) as llm:
        got = {
            method: [o.token_ids for o in llm.generate(prompts, method, max_new_tokens=16, **params)]
            for method, params in cases
        }
    for method, params in cases:
        with torch.no_grad():
            want = [
                o.token_ids
                for o in generate_outputs(model, tokenizer, prompts, method, max_new_tokens=16, **params)
            ]
        assert got[method] == want, method
