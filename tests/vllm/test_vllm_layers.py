"""The vLLM backend's layering and its per-engine row table, without starting an engine.

- Layers point down: the vLLM backend's modules import neither the Hugging Face backend nor the text API nor
  the public ``contrastive_decoding.vllm`` re-export (checked in a fresh interpreter).
- The row table (which batch row asks for which method) belongs to one engine: two engines in one process keep
  separate rows, and a table goes once its logits processor and model wrapper are gone. The processor is the
  real one; the engine configs and the wrapper's side (a reference to the table) are stand-ins.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402

from contrastive_decoding.backends.vllm.processors import ContrastiveLogitsProcessor  # noqa: E402
from contrastive_decoding.backends.vllm.rows import StepState, engine_row_table, live_row_tables  # noqa: E402

BACKEND_MODULES = [
    "contrastive_decoding.backends.vllm.engine",
    "contrastive_decoding.backends.vllm.middleware",
    "contrastive_decoding.backends.vllm.launch",
    "contrastive_decoding.backends.vllm.server",
    "contrastive_decoding.backends.vllm.processors",
    "contrastive_decoding.backends.vllm.models",
    "contrastive_decoding.backends.vllm.scheduler",
    "contrastive_decoding.backends.vllm.requests",
    "contrastive_decoding.backends.vllm.rows",
    "contrastive_decoding.backends.vllm.plugin",
]
ABOVE = ["contrastive_decoding.backends.hf", "contrastive_decoding.api", "contrastive_decoding.hf"]


def modules_imported_by(modules: list[str]) -> list[str]:
    """Every ``contrastive_decoding`` module loaded in a fresh interpreter after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('contrastive_decoding'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def below(imported: list[str], forbidden: list[str]) -> list[str]:
    return [m for m in imported if any(m == f or m.startswith(f + ".") for f in forbidden)]


def test_the_vllm_backend_imports_nothing_above_it():
    imported = modules_imported_by(BACKEND_MODULES)
    assert set(BACKEND_MODULES) <= set(imported)
    assert below(imported, [*ABOVE, "contrastive_decoding.vllm"]) == []


def test_the_public_vllm_module_is_the_engine_helper_alone():
    import contrastive_decoding.vllm as public
    from contrastive_decoding.backends.vllm import engine

    assert public.LLM is engine.LLM and public.engine_settings is engine.engine_settings
    assert below(modules_imported_by(["contrastive_decoding.vllm"]), ABOVE) == []


# ------------------------------------------------------------------------------------------------------------
# The row table
# ------------------------------------------------------------------------------------------------------------


def engine_config(instance_id: str) -> SimpleNamespace:
    return SimpleNamespace(instance_id=instance_id)  # what the processor and the wrapper read of vllm_config


def added(batch_size: int, *rows: tuple[int, dict]) -> BatchUpdate:
    return BatchUpdate(
        batch_size=batch_size,
        removed=[],
        added=[(row, SamplingParams(extra_args=extra), [1, 2], []) for row, extra in rows],
        moved=[],
    )


def test_two_engines_in_one_process_keep_their_own_rows():
    first = ContrastiveLogitsProcessor(engine_config("first"), torch.device("cpu"), False)
    second = ContrastiveLogitsProcessor(engine_config("second"), torch.device("cpu"), False)
    first.update_state(added(2, (0, {"method": "dola"}), (1, {"method": "greedy"})))
    second.update_state(added(1, (0, {"method": "greedy"})))
    assert engine_row_table(engine_config("first")) is first.table  # what the first engine's wrapper reads
    assert engine_row_table(engine_config("second")) is second.table
    assert first.table is not second.table
    assert list(first.table.claim_rows(2)) == [0] and first.table.rows[0].method == "dola"
    assert second.table.claim_rows(1) == {}


def test_each_step_hands_the_method_rows_out_once():
    processor = ContrastiveLogitsProcessor(engine_config("steps"), torch.device("cpu"), False)
    table = engine_row_table(engine_config("steps"))  # the model wrapper's reference
    assert table.claim_rows(3) == {}  # warm-up compute_logits before any step: plain logits
    processor.update_state(added(2, (1, {"method": "dola"})))  # 1. update_state opens the step
    assert table.state is StepState.OPEN
    assert list(table.claim_rows(2)) == [1]  # 3. the sampling compute_logits gets the rows
    assert table.claim_rows(2) == {}  # a second call in the step gets none
    logits = torch.zeros(2, 5)
    assert processor.apply(logits) is logits  # 4. apply closes the step
    assert table.state is StepState.CLOSED
    assert table.claim_rows(7) == {}  # 5. prompt-logprob compute_logits after sampling: plain logits
    processor.update_state(None)  # the next step, same batch
    with pytest.raises(RuntimeError, match="compute_logits got 3 rows for a batch of 2"):
        table.claim_rows(3)


def test_method_rows_that_no_wrapper_claims_fail_loudly():
    processor = ContrastiveLogitsProcessor(engine_config("plain-model"), torch.device("cpu"), False)
    processor.update_state(added(1, (0, {"method": "dola"})))
    with pytest.raises(RuntimeError, match="not a contrastive-decoding wrapper"):
        processor.apply(torch.zeros(1, 5))
    processor.update_state(added(1, (0, {"method": "greedy"})))  # a plain model with plain rows is fine
    processor.apply(torch.zeros(1, 5))


def test_an_engines_table_goes_with_its_processor_and_wrapper():
    processor = ContrastiveLogitsProcessor(engine_config("short-lived"), torch.device("cpu"), False)
    wrapper_reference = engine_row_table(engine_config("short-lived"))
    processor.update_state(added(1, (0, {"method": "dola"})))
    assert "short-lived" in live_row_tables()
    del processor
    gc.collect()
    assert live_row_tables()["short-lived"] is wrapper_reference  # the wrapper still holds it
    del wrapper_reference
    gc.collect()
    assert "short-lived" not in live_row_tables()
    fresh = engine_row_table(engine_config("short-lived"))  # an id seen again starts empty
    assert fresh.rows == {} and fresh.state is StepState.CLOSED
