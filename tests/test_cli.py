"""The click CLI, driven with CliRunner on tiny checkpoints saved to a temporary directory."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import contrastive_decoding
from contrastive_decoding.api import generate_outputs
from contrastive_decoding.cli import main, parse_set_option
from contrastive_decoding.models import load_model_and_tokenizer

from .tiny_models import save_tiny_pair


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("checkpoints")
    return save_tiny_pair(root)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [
    {"prompt": "w5 w17 w300 w42", "context_free_prompt": "w300 w42", "id": "a"},
    {"prompt": "w9 w8", "context_free_prompt": "w8", "id": "b"},
]


def test_help_reads_like_documentation():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("generate", "methods", "models"):
        assert command in result.output
    generate_help = invoke("generate", "--help").output
    for option in (
        "--model",
        "--method",
        "--set",
        "--amateur-model",
        "--backend",
        "--dtype",
        "--input",
        "--output",
    ):
        assert option in generate_help


def test_methods_lists_every_method_with_defaults():
    output = invoke("methods").output
    for expected in (
        "contrastive_search",
        "penalty_alpha=0.6",
        "dola",
        "dola_layers='high'",
        "cad_alpha=1.0",
        "adacad",
    ):
        assert expected in output


def test_models_list():
    output = invoke("models", "list").output
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(output.split())


@pytest.mark.parametrize(
    "method, settings",
    [
        ("greedy", []),
        ("dola", ["--set", "dola_layers=[0,2,4]", "--set", "repetition_penalty=1.2"]),
        ("contrastive_search", ["--set", "penalty_alpha=0.5", "--set", "top_k=3"]),
        ("cad", ["--set", "cad_alpha=0.5"]),
        ("adacad", []),
        ("expert_amateur", ["--set", "contrast_beta=0.5"]),
        ("sled", ["--set", "evolution_rate=1.5", "--set", "sled_layers=[0,2,4]"]),
        (
            "greedy",
            ["--set", "do_sample=true", "--set", "min_p=0.1", "--set", "seed=0", "--set", "temperature=2"],
        ),
        ("greedy", ["--set", "do_sample=true", "--set", "top_n_sigma=1.0", "--set", "seed=0"]),
        (
            "cad",
            [
                "--set",
                "do_sample=true",
                "--set",
                "top_n_sigma=1.0",
                "--set",
                "eta_cutoff=0.002",
                "--set",
                "seed=1",
            ],
        ),
    ],
)
def test_generate_jsonl_equals_the_library(checkpoints, tmp_path, method, settings):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    target = tmp_path / "out.jsonl"
    amateur = ["--amateur-model", checkpoints["amateur"]] if method == "expert_amateur" else []
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", method, *settings, *amateur,
        "--max-new-tokens", "6", "--input", str(source), "--output", str(target),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["a", "b"]  # input fields are kept, in order

    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    params = {key: value for key, value in parse_set_option(tuple(settings[1::2])).items()}
    extra = {}
    if method == "expert_amateur":
        extra["amateur_model"], _ = load_model_and_tokenizer(checkpoints["amateur"])
    if method in ("cad", "adacad"):
        extra["context_free_prompts"] = [row["context_free_prompt"] for row in ROWS]
    expected = generate_outputs(
        model, tokenizer, [r["prompt"] for r in ROWS], method, max_new_tokens=6, **extra, **params
    )
    assert [row["token_ids"] for row in rows] == [o.token_ids for o in expected]
    assert [row["text"] for row in rows] == [o.text for o in expected]
    assert all(row["method"] == method for row in rows)


def test_generate_prompt_prints_a_table_of_methods(checkpoints):
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", "all", "--amateur-model", checkpoints["amateur"],
        "--prompt", "w5 w17 w300 w42", "--context-free-prompt", "w300 w42", "--max-new-tokens", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table_methods = [line.split("|")[0].strip() for line in result.stdout.splitlines() if "|" in line]
    assert table_methods[0] == "method"
    assert {"plain", "contrastive_search", "expert_amateur", "dola", "cad", "adacad"} <= set(table_methods)
    assert "skipped" not in result.output


def test_table_says_what_a_skipped_method_needs(checkpoints):
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", "greedy", "--method", "cad",
        "--method", "expert_amateur", "--prompt", "w5 w17", "--max-new-tokens", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "needs --context-free-prompt" in result.output and "needs --amateur-model" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "dolla"], "Unknown method 'dolla'. Did you mean 'dola'?"),
        (["--method", "cad", "--set", "cad_alpha=500"], "cad_alpha must be in [0, 100], got 500"),
        (["--method", "dola", "--set", "dola_layer=high"], "Did you mean 'dola_layers'?"),
        (["--method", "dola", "--set", "novalue"], "expected key=value"),
        (["--method", "expert_amateur"], "expert_amateur needs an amateur model"),
        (
            ["--set", "do_sample=true", "--set", "top_n_sigma=-1"],
            "top_n_sigma must be in [0, inf) (0 disables it)",
        ),
        (["--set", "min_p=1.5"], "min_p must be in [0, 1] (0 disables it), got 1.5"),
    ],
)
def test_bad_input_gives_one_clear_error(checkpoints, tmp_path, args, message):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = invoke(
        "generate", "--model", checkpoints["expert"], *args, "--input", str(source), "--output",
        str(tmp_path / "out.jsonl"), "--max-new-tokens", "3",
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_sled_method_scoped_settings_equal_the_library(checkpoints):
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", "greedy", "--method", "sled",
        "--set", "sled.evolution_rate=1.5", "--set", "sled.evolution_scale=5", "--prompt", "w5 w17",
        "--max-new-tokens", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model, tokenizer = load_model_and_tokenizer(checkpoints["expert"])
    expected = generate_outputs(
        model, tokenizer, ["w5 w17"], "sled", max_new_tokens=4, evolution_rate=1.5, evolution_scale=5
    )[0]
    assert expected.text.strip() and expected.text.strip() in result.output


def test_method_scoped_settings(checkpoints):
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", "greedy", "--method", "dola",
        "--set", "dola.repetition_penalty=1.2", "--set", "top_k=3", "--prompt", "w5 w17", "--max-new-tokens", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "settings, message",
    [
        (["cad_alfa=1"], "Unknown parameter 'cad_alfa'"),
        (["dolla.relative_top=0.5"], "Unknown method 'dolla'"),
        (["dola.relative_top=5"], "relative_top must be in [0, 1], got 5"),
        (["temperature=-1"], "temperature must be in (0, inf), got -1"),
        (["sled.evolution_scale=0"], "evolution_scale must be in [1, inf), got 0"),
    ],
)
def test_table_mode_validates_settings_before_loading(checkpoints, settings, message):
    args = [item for setting in settings for item in ("--set", setting)]
    result = invoke("generate", "--model", "/does/not/exist", "--method", "all", *args, "--prompt", "w5")
    assert result.exit_code != 0 and message in result.output


def test_cad_rows_without_context_free_prompt(checkpoints, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "w5 w6"}])
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--method", "cad", "--input", str(source),
        "--output", str(tmp_path / "out.jsonl"),
    )  # fmt: skip
    assert result.exit_code != 0 and "context_free_prompt" in result.output


def test_unknown_model_name_suggests_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("generate", "--model", "smollm2-135", "--prompt", "hello")
    assert result.exit_code != 0 and "Did you mean 'smollm2-135m'?" in result.output


def test_bad_jsonl_names_the_line(checkpoints, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "w5"}\n{not json}\n')
    result = invoke(
        "generate", "--model", checkpoints["expert"], "--input", str(source), "--output", "o.jsonl"
    )
    assert result.exit_code != 0 and "in.jsonl:2: not valid JSON" in result.output


def test_parse_set_option_types():
    assert parse_set_option(("a=1", "b=0.5", "c=[1,2]", "d=high", "e=none", "f=True")) == {
        "a": 1, "b": 0.5, "c": [1, 2], "d": "high", "e": None, "f": True,
    }  # fmt: skip


@pytest.mark.parametrize("command", sorted(main.commands))
def test_python_dash_m_finds_every_command(command):
    """``python -m contrastive_decoding.cli COMMAND --help`` finds each command (serve and lm-eval included:
    they were registered after ``main()`` ran, and said "No such command")."""
    if command == "lm-eval" and importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-eval's help needs the bench extra")
    source_root = str(Path(contrastive_decoding.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "contrastive_decoding.cli", command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No such command" not in output
    usage = (
        "usage: lm-eval" if command == "lm-eval" else f"usage: python -m contrastive_decoding.cli {command}"
    )
    assert usage in output.lower()
