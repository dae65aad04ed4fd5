"""Pair-aware scheduling for paired requests (CAD / AdaCAD context-free twins)."""

from __future__ import annotations

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler


class PairScheduler(Scheduler):
    """vLLM's scheduler, keeping paired requests together."""


class AsyncPairScheduler(AsyncScheduler):
    """vLLM's async scheduler (the GPU default), keeping paired requests together."""
