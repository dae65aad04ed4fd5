"""What identifies a run: hashes of the model and the data files, library versions, the metadata written when a
run starts, and the check that a resumed run has the same configuration (:data:`RUN_CONFIG_KEYS`)."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..._files import sha256_file
from ..tasks.base import Task

# Weight files up to this total size are hashed by content; larger checkpoints by index / names and sizes.
FULL_HASH_LIMIT_BYTES = 1 << 30
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# The metadata keys that must match for a run to be resumed.
RUN_CONFIG_KEYS = (
    "task",
    "method",
    "params",
    "seed",
    "model_hash",
    "amateur_model_hash",
    "data_files",
    "backend",
)


class RunConfigMismatch(ValueError):
    """``output_dir`` holds a run with another configuration; resuming into it would mix two runs."""


def is_vllm_engine(model: Any) -> bool:
    """A :class:`contrastive_decoding.vllm.LLM` engine (``--backend vllm``) rather than a transformers model."""
    return hasattr(model, "generate_requests") and hasattr(model, "model_path")


def _fingerprint_target(model: Any) -> Any:
    if is_vllm_engine(model):  # the checkpoint directory the engine serves
        return _fingerprint_target_path(model.model_path)
    return model


def _fingerprint_target_path(path: str) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(name_or_path=path, config=None)


def model_fingerprint(model: Any) -> dict[str, Any]:
    """Where ``model`` was loaded from and hashes of its ``config.json`` and weights.

    The weights hash is, by ``weights_hash_method``: ``"sha256 of weight file contents"`` when the weight files
    (``*.safetensors``, ``*.bin``, ...) total at most 1 GiB; else ``"sha256 of <index> + weight file names and
    sizes"`` when a ``*.index.json`` shard index exists, else ``"sha256 of weight file names and sizes"``
    (hashing several GiB on every run would cost more than the runs it protects). ``hash`` combines both.
    """
    path_text = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    directory = Path(path_text) if path_text else None
    if directory is None or not directory.is_dir():
        config_sha = hashlib.sha256(model.config.to_json_string(use_diff=False).encode()).hexdigest()
        return {
            "path": path_text or None,
            "config_sha256": config_sha,
            "weights_sha256": None,
            "weights_hash_method": "not hashed: the model was not loaded from a local directory",
            "hash": config_sha,
        }
    directory = directory.resolve()
    config_file = directory / "config.json"
    config_sha = sha256_file(config_file) if config_file.is_file() else None
    weight_files = sorted(
        file for file in directory.iterdir() if file.is_file() and file.name.endswith(WEIGHT_SUFFIXES)
    )
    index_files = sorted(file for file in directory.iterdir() if file.name.endswith(".index.json"))
    total_size = sum(file.stat().st_size for file in weight_files)
    digest = hashlib.sha256()
    if total_size <= FULL_HASH_LIMIT_BYTES:
        method = "sha256 of weight file contents"
        for file in weight_files:
            digest.update(file.name.encode() + b"\0" + sha256_file(file).encode() + b"\n")
    else:
        method = "sha256 of weight file names and sizes"
        if index_files:
            method = f"sha256 of {' + '.join(f.name for f in index_files)} + weight file names and sizes"
            for file in index_files:
                digest.update(file.read_bytes())
        for file in weight_files:
            digest.update(f"{file.name}\0{file.stat().st_size}\n".encode())
    weights_sha = digest.hexdigest()
    combined = hashlib.sha256(f"{config_sha}:{weights_sha}".encode()).hexdigest()
    return {
        "path": str(directory),
        "config_sha256": config_sha,
        "weights_sha256": weights_sha,
        "weights_hash_method": method,
        "weight_files": [file.name for file in weight_files],
        "hash": combined,
    }


def data_fingerprint(task: Task, data_dir: Path) -> dict[str, str | None]:
    """sha256 of each of ``task.data_files`` under ``data_dir`` (None for a missing file)."""
    hashes: dict[str, str | None] = {}
    for relative in task.data_files:
        path = Path(data_dir) / relative
        hashes[relative] = sha256_file(path) if path.is_file() else None
    return hashes


def library_versions() -> dict[str, str]:
    """Versions of contrastive_decoding, torch, transformers and Python."""
    from importlib import metadata

    import torch
    import transformers

    try:
        ours = metadata.version("contrastive-decoding")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        ours = "unknown"
    return {
        "contrastive_decoding": ours,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def run_metadata(
    task: Task,
    *,
    method: str,
    params: dict[str, Any],
    seed: int,
    backend: str,
    model: Any,
    amateur_model: Any,
    engine_amateur: str | None,
    data_dir: Path,
    limit: int | None,
    batch_size: int,
    command_line: Sequence[str] | None,
) -> dict[str, Any]:
    """The content of ``metadata.json`` for a run starting now (``engine_amateur``: the amateur checkpoint a
    vLLM engine holds). Its :data:`RUN_CONFIG_KEYS` decide whether an existing run may be resumed."""
    metadata = {
        "task": task.name,
        "task_kind": task.kind,
        "method": method,
        "params": params,
        "seed": seed,
        "backend": backend,
        "model": model_fingerprint(_fingerprint_target(model)),
        "amateur_model": (
            model_fingerprint(amateur_model)
            if amateur_model is not None
            else model_fingerprint(_fingerprint_target_path(engine_amateur))
            if engine_amateur
            else None
        ),
        "data_dir": str(data_dir.resolve()),
        "data_files": data_fingerprint(task, data_dir),
        "limit": limit,
        "batch_size": batch_size,
        "max_new_tokens": task.max_new_tokens,
        "versions": library_versions(),
        "command_line": list(command_line if command_line is not None else sys.argv),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    metadata["model_hash"] = metadata["model"]["hash"]
    metadata["amateur_model_hash"] = metadata["amateur_model"]["hash"] if metadata["amateur_model"] else None
    return metadata


def check_same_run_config(output_dir: Path, existing: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Raise :class:`RunConfigMismatch` naming each of :data:`RUN_CONFIG_KEYS` on which the run stored in
    ``output_dir`` (its metadata ``existing``) and the one starting (``metadata``) differ."""
    differences = [key for key in RUN_CONFIG_KEYS if existing.get(key) != metadata.get(key)]
    if differences:
        details = "; ".join(
            f"{key}: {json.dumps(existing.get(key))} there, {json.dumps(metadata.get(key))} now"
            for key in differences
        )
        raise RunConfigMismatch(
            f"{output_dir} holds a run with a different configuration ({details}); refusing to resume into it. "
            "Use another --output-dir for this configuration."
        )
