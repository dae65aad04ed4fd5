"""vLLM backend: per-request contrastive methods in batched vLLM inference through vLLM's plugin points.

- :mod:`.engine`: the engine helper ``LLM`` and ``engine_settings`` (public as ``contrastive_decoding.vllm``).
- :mod:`.requests`: what a request asks for (``SamplingParams.extra_args``), parsed and validated without vLLM.
- :mod:`.rows`: the per-engine row table (which batch row asks for which method) that the logits processor fills
  and the model wrapper reads, and the order in which vLLM calls the two in a step.
- :mod:`.processors`: V1 logits processors: admission-time validation, filling the row table, the paired
  methods' contrast and token forcing (CAD / AdaCAD), and typical sampling.
- :mod:`.scheduler`: the pair-aware scheduler that makes each CAD request's context-free twin and keeps pairs
  together (admission, token budget, preemption, aborts), failing a pair loudly if it is split anyway.
- :mod:`.models`: the model wrapper, built for any architecture vLLM implements from that architecture's own
  class, that exposes early-exit hidden states for DoLa (vLLM's aux hidden states or decoder-layer hooks) and runs
  an amateur model (any architecture, same tokenizer) inside the same forward for expert-amateur decoding.
- :mod:`.plugin`: the ``vllm.general_plugins`` entry point registering a wrapper name for every architecture.
- :mod:`.middleware`: the ASGI middleware of the server (methods endpoint, chat CAD, early 400s).
- :mod:`.launch`: ``contrastive-decoding serve``: ``vllm serve`` arguments from ``engine_settings``, run in-process.
- :mod:`.server`: the middleware's former module, re-exporting it (and the launcher) for existing commands.

Importing this package does not import vLLM; the submodules that need it do. Layers point down: nothing here
imports ``contrastive_decoding.vllm``, ``contrastive_decoding.api`` or the Hugging Face backend; what both
backends share lives in backend-neutral modules (``decoding``, ``samplers``, ``generation``, ``vocabulary``).
"""
