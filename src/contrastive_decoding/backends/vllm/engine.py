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
vLLM keeps one of two cores idle). Scripts that create an engine need ``if __name__ == "__main__":``.
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
from .plugin import AMATEUR_KEY, EARLY_EXITS_KEY, wrapper_architecture
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
    """
    from transformers import AutoConfig

    architecture = (AutoConfig.from_pretrained(model_path).architectures or [""])[0]
    eager = needs_eager(architecture, engine_kwargs.get("hf_overrides", {}).get(EARLY_EXITS_KEY, "auto"))
    settings: dict[str, Any] = {}
    on_cpu = _on_cpu()
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        settings.update(CPU_DEFAULTS)
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
    return settings


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
