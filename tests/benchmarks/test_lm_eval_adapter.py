"""The lm-eval adapter (``--model contrastive``): offline, on a tiny checkpoint, with our local TruthfulQA MC2
task YAML; its MC2 must equal ``bench run truthfulqa-mc`` on the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from contrastive_decoding.benchmarks.lm_eval_adapter import (  # noqa: E402
    TASKS_DIR,
    ContrastiveLM,
    cut_at_stop_sequences,
)
from contrastive_decoding.cli import main  # noqa: E402
from contrastive_decoding.scoring import score  # noqa: E402
from tests.tiny_models import tiny_model, tiny_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
LIMIT = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", num_layers=6).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_the_model_is_registered_with_lm_eval():
    assert get_model("contrastive") is ContrastiveLM


def test_loglikelihood_is_our_score(checkpoint):
    lm = ContrastiveLM(pretrained=checkpoint, method="dola", dola_layers="high")
    requests = [
        Instance("loglikelihood", {}, ("w5 w6 w7", " w8 w9"), 0),
        Instance("loglikelihood", {}, ("w10", " w11"), 0),
    ]
    ours = score(
        lm.model,
        lm.tokenizer,
        ["w5 w6 w7", "w10"],
        [" w8 w9", " w11"],
        "dola",
        dola_layers="high",
        relative_top=0.0,
        normalize=False,
    )
    assert lm.loglikelihood(requests) == [(s.logprob, s.is_greedy) for s in ours]


def test_generate_until_cuts_at_the_stop_sequence(checkpoint):
    lm = ContrastiveLM(pretrained=checkpoint, method="contrastive_search", penalty_alpha=0.6, top_k=4)
    request = Instance("generate_until", {}, ("w5 w6", {"until": ["w7"], "max_gen_toks": 6}), 0)
    text = lm.generate_until([request])[0]
    assert "w7" not in text
    assert cut_at_stop_sequences("a b Q: c", ["Q:", "zz"]) == "a b "


def test_context_free_methods_are_refused(checkpoint):
    with pytest.raises(ValueError, match="lm-eval requests do not carry"):
        ContrastiveLM(pretrained=checkpoint, method="cad")


def test_local_truthfulqa_mc2_equals_bench_run(checkpoint, tmp_path):
    results = simple_evaluate(
        model="contrastive",
        model_args=f"pretrained={checkpoint},method=dola,dola_layers=high",
        tasks=["contrastive_truthfulqa_mc2"],
        task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"data_dir": str(SHARED)}),
        limit=LIMIT,
        log_samples=False,
    )
    lm_eval_mc2 = results["results"]["contrastive_truthfulqa_mc2"]["mc2,none"]
    out = tmp_path / "bench"
    run = CliRunner().invoke(
        main,
        [
            "bench",
            "run",
            "truthfulqa-mc",
            "--model",
            checkpoint,
            "--method",
            "dola",
            "--set",
            "dola_layers=high",
        ]
        + ["--limit", str(LIMIT), "--data-dir", str(SHARED), "--output-dir", str(out), "--no-progress"],
    )
    assert run.exit_code == 0, run.output
    ours = json.loads((out / "summary.json").read_text())["metrics"]["mc2"]
    assert lm_eval_mc2 == pytest.approx(ours, abs=1e-6)


def test_cli_passes_through_to_lm_eval(checkpoint, tmp_path):
    result = CliRunner().invoke(
        main,
        ["lm-eval", "run", "--model", "contrastive", "--model_args", f"pretrained={checkpoint}"]
        + [
            "--tasks",
            "contrastive_truthfulqa_mc2",
            "--limit",
            "2",
            "--metadata",
            json.dumps({"data_dir": str(SHARED)}),
        ]
        + ["--output_path", str(tmp_path / "lm-eval-out")],
    )
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "lm-eval-out").rglob("results_*.json"))
