"""vLLM backend: per-request contrastive methods in batched vLLM inference through vLLM's plugin points.

- :mod:`.requests`: what a request asks for (``SamplingParams.extra_args``), parsed and validated without vLLM.
- :mod:`.processors`: V1 logits processors: admission-time validation, the per-row method table shared with the
  model wrapper, the paired methods' contrast and token forcing (CAD / AdaCAD), and typical sampling.
- :mod:`.scheduler`: the pair-aware scheduler that makes each CAD request's context-free twin and keeps pairs
  together (admission, token budget, preemption, aborts), failing a pair loudly if it is split anyway.
- :mod:`.models`: model wrappers (one per supported architecture) that expose early-exit hidden states for DoLa
  and run an amateur model inside the same forward for expert-amateur decoding.
- :mod:`.plugin`: the ``vllm.general_plugins`` entry point registering those architectures.
- :mod:`.server`: the ASGI middleware of ``contrastive-decoding serve`` (methods endpoint, chat CAD, early 400s).

Importing this package does not import vLLM; the submodules that need it do.
"""
