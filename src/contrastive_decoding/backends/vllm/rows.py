"""The row table: which row of the current batch asks for which method, per engine.

:class:`~.processors.ContrastiveLogitsProcessor` fills it from vLLM's batch updates; the model wrappers
(:mod:`.models`) read it in ``compute_logits`` to write the method's scores into those rows only. The two live in
the same worker process and both receive the engine's ``vllm_config``, so each asks :func:`engine_row_table`
for the table of that engine (``vllm_config.instance_id``, unique per engine) and keeps a reference to it. The
registry holds weak references only: the table lives as long as the processor or the wrapper that holds it,
and goes with the engine. Two engines in one process get two tables.

The per-step protocol, in the order vLLM 0.32's V1 model runner (``GPUModelRunner``, which the CPU runner
extends) calls things:

1. ``execute_model`` -> ``_update_states`` -> ``InputBatch.refresh_metadata`` -> the processor's
   ``update_state(batch_update)``, every step: the processor updates :attr:`RowTable.rows` and calls
   :meth:`RowTable.open_step` with the batch size.
2. The model's ``forward`` on the step's tokens.
3. ``compute_logits(hidden_states[logits_indices])``: one row per request, in batch order; the wrapper calls
   :meth:`RowTable.claim_rows`, which hands out the method rows once per step.
4. ``sample_tokens`` -> the sampler -> the processor's ``apply(logits)``: :meth:`RowTable.close_step`. A step
   opened with method rows that nobody claimed means the model is not one of our wrappers.
5. ``_bookkeeping_sync`` -> ``_get_prompt_logprobs_dict``: ``compute_logits`` again, on the prompt positions
   of requests that asked for prompt logprobs. The step is closed by then, so :meth:`RowTable.claim_rows`
   returns nothing and those logits stay plain (methods refuse ``prompt_logprobs``; greedy rows may have them).

``compute_logits`` calls outside a step (``_dummy_run`` / ``_dummy_sampler_run`` while profiling and warming
up) find no open step and get plain logits. A step with no scheduled tokens opens (1) and returns before (2):
the next step's :meth:`RowTable.open_step` replaces it. Pure Python: no vLLM import.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .requests import MethodRequest


class StepState(Enum):
    CLOSED = "closed"  # between steps: compute_logits gets plain logits
    OPEN = "open"  # update_state ran; the step's sampling compute_logits has not
    CLAIMED = "claimed"  # the model wrapper took this step's method rows


@dataclass(eq=False)
class RowTable:
    """Which row of the current batch asks for which method (rows that ask for none are absent)."""

    rows: dict[int, MethodRequest] = field(default_factory=dict)
    batch_size: int = 0
    state: StepState = StepState.CLOSED

    def open_step(self, batch_size: int) -> None:
        """Called by the processor's ``update_state``, after it updated :attr:`rows`: a new step begins."""
        self.batch_size = batch_size
        self.state = StepState.OPEN

    def asks_for(self, methods: frozenset[str]) -> bool:
        """Whether a row of the open step asks for one of ``methods`` (read by the wrapper's ``forward``, which
        runs after ``update_state``: a step with none skips the early-exit capture)."""
        return self.state is StepState.OPEN and any(
            request.method in methods for request in self.rows.values()
        )

    def claim_rows(self, num_rows: int) -> dict[int, MethodRequest]:
        """The method rows for this ``compute_logits`` call: the step's rows on its first call after
        :meth:`open_step` (the sampling call), ``{}`` on any other call."""
        if self.state is not StepState.OPEN:
            return {}
        self.state = StepState.CLAIMED
        if self.rows and num_rows != self.batch_size:
            raise RuntimeError(
                f"contrastive-decoding: compute_logits got {num_rows} rows for a batch of {self.batch_size}; "
                "method rows cannot be placed (speculative decoding and other multi-row modes are unsupported)"
            )
        return self.rows

    def close_step(self) -> bool:
        """Called by the processor's ``apply``: the step ends. False when it had method rows that no model
        wrapper claimed (the engine's model is not a contrastive-decoding wrapper)."""
        unclaimed = self.state is StepState.OPEN and bool(self.rows)
        self.state = StepState.CLOSED
        return not unclaimed


_REGISTRY: weakref.WeakValueDictionary[str, RowTable] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def engine_row_table(vllm_config: Any) -> RowTable:
    """The row table of the engine ``vllm_config`` belongs to, made on first use; hold on to it (the registry
    keeps only a weak reference)."""
    key = str(vllm_config.instance_id)
    with _LOCK:
        table = _REGISTRY.get(key)
        if table is None:
            table = RowTable()
            _REGISTRY[key] = table
        return table


def live_row_tables() -> dict[str, RowTable]:
    """The tables of the engines alive in this process, by ``instance_id`` (for tests and debugging)."""
    with _LOCK:
        return dict(_REGISTRY.items())
