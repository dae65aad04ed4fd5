"""Pair-aware scheduling for paired requests (CAD / AdaCAD: a context-free twin per request).

A paired request names its prompt without the context (``extra_args["context_free_prompt"]`` text or
``["context_free_prompt_ids"]``). The scheduler, inside the engine, makes the twin itself when the request
arrives, so the front end (``LLM``, ``vllm serve``) sees one request and one output, and the pair is atomic from
the start. The logits processor then decodes both rows with the contrast and forces the chosen token into both.

vLLM's stock scheduler splits pairs (one admitted, the other not; one in chunked prefill; one preempted). The
step algorithm here keeps them together without rewriting vLLM's scheduler: before each step it

1. preempts whole pairs (the most recent first) when the KV cache cannot hold every running request's next
   tokens, so vLLM never has to preempt one twin;
2. moves running pair members to the front of the running queue, so their decode tokens come out of the token
   budget before anyone's prefill chunk (``max_num_batched_tokens >= max_num_seqs``: they always fit);
3. exposes a waiting pair only when both whole prompts fit this step (token budget, free sequence slots and KV
   blocks, counting everything ahead of it); otherwise the pair and every request after it wait (first come,
   first served, as vLLM's own loop stops at the first request it cannot admit). So a pair is never chunked.

After vLLM schedules, every pair is checked: both members scheduled or neither, both sampling a token in this
step or neither, at the same output length. A pair that still comes out split (an engine setting this algorithm
does not cover) is failed loudly: both requests finish with ``finish_reason="error"`` and an error log line, and
the step's tokens for them are dropped; a pair never decodes without its contrast. A pair whose two prompts can
never be scheduled in one step (longer than the token budget) fails the same way when it arrives.

The interface of vLLM's scheduler is not public: this is written against vllm 0.32 (pinned by the ``vllm``
extra). ``AsyncPairScheduler`` is the same over vLLM's async scheduler (the GPU default); tested on CPU, where
vLLM schedules synchronously.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

from .requests import METHOD_KEY, PAIR_KEY, PAIR_METHODS, context_free_prompt

logger = logging.getLogger(__name__)

TWIN_SUFFIX = "::context-free-twin"


class PairSchedulingMixin:
    """The pair-aware step algorithm over a vLLM ``Scheduler`` (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.twins: dict[str, Request] = {}  # main request id -> its twin (id: main id + TWIN_SUFFIX)
        self.failed_pairs: dict[str, str] = {}  # main request id -> why it is failed at the next output
        self._tokenizer = None

    # ------------------------------------------------------------------ arrival and the end of a pair

    def add_request(self, request: Request) -> None:
        extra = request.sampling_params.extra_args if request.sampling_params else None
        if not extra or extra.get(METHOD_KEY) not in PAIR_METHODS or PAIR_KEY in extra:
            return super().add_request(request)
        main_id = request.request_id
        twin_ids = self._cd_context_free_ids(extra)
        problem = self._cd_unschedulable(request, twin_ids)
        if problem:
            self.failed_pairs[main_id] = problem
            return super().add_request(request)  # held back from scheduling; failed at the next output
        twin_params = request.sampling_params.clone()
        twin_extra = {
            k: v for k, v in extra.items() if k not in ("context_free_prompt", "context_free_prompt_ids")
        }
        twin_params.extra_args = {**twin_extra, PAIR_KEY: {"id": main_id, "role": "twin"}}
        extra[PAIR_KEY] = {"id": main_id, "role": "main"}
        twin = Request(
            request_id=main_id + TWIN_SUFFIX,
            prompt_token_ids=twin_ids,
            sampling_params=twin_params,
            pooling_params=None,
            client_index=request.client_index,
            arrival_time=request.arrival_time,
            lora_request=request.lora_request,
            cache_salt=request.cache_salt,
            priority=request.priority,
            block_hasher=request._block_hasher,
        )
        self.twins[main_id] = twin
        super().add_request(twin)  # twin first, then main: consecutive in the waiting queue
        super().add_request(request)

    def _cd_context_free_ids(self, extra: dict) -> list[int]:
        prompt = context_free_prompt(extra)
        if isinstance(prompt, list):
            return prompt
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            model_config = self.vllm_config.model_config
            self._tokenizer = AutoTokenizer.from_pretrained(
                model_config.tokenizer, revision=model_config.tokenizer_revision
            )
        return self._tokenizer(prompt).input_ids  # special tokens added, as for a completions prompt

    def _cd_unschedulable(self, request: Request, twin_ids: list[int]) -> str | None:
        budget = self.max_num_scheduled_tokens
        total = request.num_prompt_tokens + len(twin_ids)
        if total > budget:
            return (
                f"the prompt ({request.num_prompt_tokens} tokens) and its context-free twin ({len(twin_ids)}) must "
                f"be prefilled in one step, which needs max_num_batched_tokens >= {total} (it is {budget})"
            )
        threshold = self.scheduler_config.long_prefill_token_threshold
        if threshold and max(request.num_prompt_tokens, len(twin_ids)) > threshold:
            return (
                f"a paired prompt is longer than long_prefill_token_threshold={threshold}; raise or unset it"
            )
        if len(twin_ids) + (request.max_tokens or 0) > self.vllm_config.model_config.max_model_len:
            return "the context-free prompt plus max_tokens exceeds the model's context length"
        if self.max_num_running_reqs < 2:
            return "a pair needs max_num_seqs >= 2"
        return None

    def finish_requests(self, request_ids: str | Iterable[str] | None, finished_status: RequestStatus):
        if request_ids is not None:
            ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
            request_ids = ids + [self.twins[i].request_id for i in ids if i in self.twins]
        finished = super().finish_requests(request_ids, finished_status)
        self._cd_forget_finished_pairs()
        return finished

    def _cd_forget_finished_pairs(self) -> None:
        for main_id, twin in list(self.twins.items()):
            main = self.requests.get(main_id)
            if twin.is_finished() and (main is None or main.is_finished()):
                del self.twins[main_id]

    # ------------------------------------------------------------------ one step

    def schedule(self, *args, **kwargs) -> SchedulerOutput:
        self._cd_preempt_pairs_under_kv_pressure()
        self._cd_pairs_first_in_running()
        hidden = self._cd_hide_waiting_pairs_that_do_not_fit()
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            for request in hidden:
                self.waiting.add_request(request)
        self._cd_check_pairs(output)
        return output

    def _cd_pair_members(self) -> set[str]:
        return set(self.twins) | {twin.request_id for twin in self.twins.values()}

    def _cd_main_of(self, twin_id: str) -> str | None:
        """The main request id of a live twin, or None when ``twin_id`` is not one."""
        main_id = twin_id.removesuffix(TWIN_SUFFIX)
        return main_id if main_id != twin_id and main_id in self.twins else None

    def _cd_partner(self, request_id: str) -> Request | None:
        if request_id in self.twins:
            return self.twins[request_id]
        main_id = self._cd_main_of(request_id)
        return self.requests.get(main_id) if main_id is not None else None

    def _cd_kv_groups(self) -> int:
        return max(1, len(self.kv_cache_config.kv_cache_groups))

    def _cd_blocks_for(self, num_tokens: int) -> int:
        return math.ceil(num_tokens / self.block_size) * self._cd_kv_groups()

    def _cd_new_blocks_running(self, request: Request) -> int:
        """KV blocks a running request needs for this step's tokens (an upper bound)."""
        held = sum(len(ids) for ids in self.kv_cache_manager.get_block_ids(request.request_id))
        target = request.num_tokens_with_spec + request.num_output_placeholders + 1
        return max(0, self._cd_blocks_for(target) - held)

    def _cd_free_blocks(self) -> int:
        return self.kv_cache_manager.block_pool.get_num_free_blocks()

    def _cd_never_fits(self, pair: list[Request]) -> str | None:
        """Why ``pair`` (waiting) can never be scheduled whole in one step, even on an idle engine, or None."""
        tokens = sum(r.num_tokens - r.num_computed_tokens for r in pair)
        if tokens > self.max_num_scheduled_tokens:
            return (
                f"recomputing the preempted pair needs {tokens} tokens in one step, more than "
                f"max_num_batched_tokens={self.max_num_scheduled_tokens}"
            )
        blocks = sum(self._cd_blocks_for(r.num_tokens + 1) for r in pair)
        if blocks > self.kv_cache_manager.block_pool.num_gpu_blocks:
            return f"the pair needs {blocks} KV blocks, more than the cache holds"
        return None

    def _cd_preempt_pairs_under_kv_pressure(self) -> None:
        """Preempt whole pairs (most recent first) when the running requests' next tokens do not fit the free KV
        blocks. Pairs whose recompute would not fit one step are kept running (vLLM preempts others first)."""
        if not self.twins:  # engines without pairs pay nothing
            return
        deficit = sum(self._cd_new_blocks_running(r) for r in self.running) - self._cd_free_blocks()
        if deficit <= 0:
            return
        timestamp = time.monotonic()
        for request in reversed(list(self.running)):  # most recent first, as vLLM preempts
            if deficit <= 0:
                break
            if request.request_id not in self.twins:  # act on mains; the twin goes with it
                continue
            twin = self.twins[request.request_id]
            pair = [r for r in (twin, request) if r.status == RequestStatus.RUNNING]
            if sum(r.num_tokens for r in pair) + 2 > self.max_num_scheduled_tokens:
                continue
            deficit -= sum(
                len(ids) for r in pair for ids in self.kv_cache_manager.get_block_ids(r.request_id)
            )
            self.running = [r for r in self.running if r not in pair]
            logger.warning(
                "contrastive-decoding: KV cache full, preempting the pair of request %s", request.request_id
            )
            for member in reversed(pair):  # prepend main, then twin: the twin leads the waiting queue again
                self._preempt_request(member, timestamp)

    def _cd_pairs_first_in_running(self) -> None:
        members = self._cd_pair_members()
        if members and self.running:
            paired = [r for r in self.running if r.request_id in members]
            if paired:
                self.running = paired + [r for r in self.running if r.request_id not in members]

    def _cd_hide_waiting_pairs_that_do_not_fit(self) -> list[Request]:
        """Take out of the waiting queue every pair that cannot be admitted whole this step, and everything
        after the first such pair; return them (in queue order) to put back after scheduling."""
        members = self._cd_pair_members()
        waiting = list(self.waiting)
        if not waiting or not (members or self.failed_pairs):
            return []
        budget = self.max_num_scheduled_tokens - sum(
            max(0, r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens)
            for r in self.running
        )
        seats = self.max_num_running_reqs - len(self.running)
        blocks = self._cd_free_blocks() - sum(self._cd_new_blocks_running(r) for r in self.running)
        hidden: list[Request] = []
        seen: set[str] = set()
        for position, request in enumerate(waiting):
            if request.request_id in self.failed_pairs:
                hidden.append(request)
                continue
            if request.request_id in seen:
                continue
            tokens = max(0, request.num_tokens - request.num_computed_tokens)
            if request.request_id not in members:
                budget -= tokens
                seats -= 1
                blocks -= self._cd_blocks_for(request.num_tokens + 1)
                continue
            partner = self._cd_partner(request.request_id)
            pair = [request] if partner is None else [request, partner]
            seen.update(r.request_id for r in pair)
            pair_tokens = sum(max(0, r.num_tokens - r.num_computed_tokens) for r in pair)
            pair_blocks = sum(self._cd_blocks_for(r.num_tokens + 1) for r in pair)
            partner_waiting = partner is not None and partner in waiting
            main_id = self._cd_main_of(request.request_id) or request.request_id
            problem = (
                "one of the pair was preempted alone" if partner is not None and not partner_waiting else None
            )
            problem = problem or (self._cd_never_fits(pair) if partner_waiting else None)
            if problem:
                self.failed_pairs[main_id] = problem
                hidden.extend(pair)
                continue
            if partner_waiting and pair_tokens <= budget and seats >= 2 and pair_blocks <= blocks:
                budget -= pair_tokens
                seats -= 2
                blocks -= pair_blocks
                continue
            hidden.extend(r for r in waiting[position:] if r not in hidden)
            break
        if hidden:
            self.waiting.remove_requests(hidden)
        return hidden

    def _cd_check_pairs(self, output: SchedulerOutput) -> None:
        scheduled = output.num_scheduled_tokens
        for main_id, twin in self.twins.items():
            main = self.requests.get(main_id)
            if main is None or main_id in self.failed_pairs:
                continue
            in_main, in_twin = main_id in scheduled, twin.request_id in scheduled
            if not in_main and not in_twin:
                continue
            problem = None
            if in_main != in_twin:
                problem = "only one of the pair was scheduled"
            elif (main.num_computed_tokens >= main.num_tokens) != (
                twin.num_computed_tokens >= twin.num_tokens
            ):
                problem = "one of the pair is in chunked prefill while the other samples"
            elif len(main.output_token_ids) != len(twin.output_token_ids):
                problem = "the pair's outputs are out of step"
            if problem:
                self.failed_pairs[main_id] = problem

    # ------------------------------------------------------------------ outputs

    def update_from_output(self, scheduler_output, model_runner_output) -> dict[int, EngineCoreOutputs]:
        failed = dict(self.failed_pairs)
        self.failed_pairs.clear()
        failed_requests = []
        for main_id, problem in failed.items():
            main = self.requests.get(main_id)
            if main is None or main.is_finished():
                continue
            logger.error(
                "contrastive-decoding: request %s (%s) failed: %s; it is not decoded without its contrast",
                main_id,
                main.sampling_params.extra_args.get(METHOD_KEY),
                problem,
            )
            failed_requests.append(main)
            self.finish_requests([main_id], RequestStatus.FINISHED_ERROR)  # drops this step's tokens
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        for main in failed_requests:
            eco = outputs.setdefault(main.client_index, EngineCoreOutputs())
            eco.outputs.append(
                EngineCoreOutput(
                    request_id=main.request_id,
                    new_token_ids=[],
                    finish_reason=main.get_finished_reason(),
                    stop_reason=f"contrastive pair failed: {failed[main.request_id]}",
                )
            )
        self._cd_finish_twins_of_finished_mains()
        if self.twins or failed:  # twins' outputs never leave the engine
            for eco in outputs.values():
                eco.outputs = [o for o in eco.outputs if not o.request_id.endswith(TWIN_SUFFIX)]
                if eco.finished_requests:
                    eco.finished_requests = {i for i in eco.finished_requests if not i.endswith(TWIN_SUFFIX)}
        self._cd_forget_finished_pairs()
        return outputs

    def _cd_finish_twins_of_finished_mains(self) -> None:
        stale = [
            twin.request_id
            for main_id, twin in self.twins.items()
            if not twin.is_finished()
            and (main_id not in self.requests or self.requests[main_id].is_finished())
        ]
        if stale:
            super().finish_requests(stale, RequestStatus.FINISHED_ABORTED)


class PairScheduler(PairSchedulingMixin, Scheduler):
    """vLLM's scheduler, keeping paired requests together."""


class AsyncPairScheduler(PairSchedulingMixin, AsyncScheduler):
    """vLLM's async scheduler (the GPU default), keeping paired requests together."""
