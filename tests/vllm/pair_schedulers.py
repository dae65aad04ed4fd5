"""A pair scheduler with its guards switched off, to show that splits are caught (loaded by the engine by name)."""

from __future__ import annotations

from contrastive_decoding.backends.vllm.scheduler import PairScheduler


class UnguardedPairScheduler(PairScheduler):
    """Pairs are still made and checked, but admitted, budgeted and preempted like any request."""

    def _cd_preempt_pairs_under_kv_pressure(self) -> None:
        pass

    def _cd_pairs_first_in_running(self) -> None:
        pass

    def _cd_hide_waiting_pairs_that_do_not_fit(self) -> list:
        return []
