"""The files of a run directory: ``results.jsonl`` (appended and fsync'ed row by row, cleaned on resume),
``metadata.json`` (written at start, checked and extended on resume), ``summary.json`` (atomic writes) and the
``.lock`` that keeps two runs out of one directory."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .fingerprint import RunConfigMismatch, check_same_run_config

RESULTS_FILE = "results.jsonl"
METADATA_FILE = "metadata.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"


def json_normalized(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with stored metadata."""
    return json.loads(json.dumps(value))


def fsync_write(handle: Any, text: str) -> None:
    """Write ``text`` to ``handle`` and make it durable (flush, then fsync)."""
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as handle:
        fsync_write(handle, text)
    os.replace(temporary, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    _write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    """The successful rows of ``results.jsonl``; rewrites the file when it had rows to drop.

    Dropped: lines that are not valid JSON objects with an ``"id"`` (a line cut short by a kill), error rows
    (retried on resume) and repeated ids (the first result is kept).
    """
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    kept_lines: list[str] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or "id" not in row or "error" in row or row["id"] in seen:
            continue
        seen.add(row["id"])
        rows.append(row)
        kept_lines.append(line)
    if len(kept_lines) != len(lines):
        _write_text_atomic(path, "".join(line + "\n" for line in kept_lines))
    return rows


@contextmanager
def exclusive_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``output_dir/.lock`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    with (output_dir / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RuntimeError(
                f"another run is writing to {output_dir}; wait for it or pick another one"
            ) from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_metadata(output_dir: Path, metadata: dict[str, Any], has_results: bool) -> None:
    """Write ``metadata.json``, or check the existing one matches and record the resume."""
    path = output_dir / METADATA_FILE
    if not path.is_file():
        if has_results:
            raise RunConfigMismatch(
                f"{output_dir} has {RESULTS_FILE} but no {METADATA_FILE}, so its run configuration is unknown; "
                "use another --output-dir (or delete the directory)"
            )
        write_json_atomic(path, metadata)
        return
    try:
        existing = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunConfigMismatch(f"{path} is not valid JSON; use another --output-dir") from error
    existing.setdefault("backend", "hf")  # runs written before the vLLM backend existed
    check_same_run_config(output_dir, existing, metadata)
    existing.setdefault("resumed", []).append(
        {"at": metadata["started_at"], "command_line": metadata["command_line"], "limit": metadata["limit"]}
    )
    write_json_atomic(path, existing)
