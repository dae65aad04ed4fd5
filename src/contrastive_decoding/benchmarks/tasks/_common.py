"""Shared helpers of the task modules: data-file checks, row readers with clear errors, output checks."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .base import Item, ItemOutput, Task


def data_file(task_name: str, data_dir: Path | str, relative: str, expected: str, hint: str = "") -> Path:
    """``data_dir / relative``, or FileNotFoundError naming the task, the full path and what belongs there."""
    path = Path(data_dir) / relative
    if not path.is_file():
        message = f"Task {task_name!r}: data file not found: {path} (expected {expected})."
        if hint:
            message += f" {hint}"
        raise FileNotFoundError(message)
    return path


def task_data_file(task: Task, data_dir: Path | str, expected: str, hint: str = "", file: int = 0) -> Path:
    """The task's ``data_files[file]`` under ``data_dir``, checked as :func:`data_file` does."""
    return data_file(task.name, data_dir, task.data_files[file], expected, hint)


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file; ValueError on a bad line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg}).") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}.")
            rows.append((line_number, row))
    return rows


def read_json_list(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(index, where, object)`` for every object of a file holding a JSON list of objects (``where`` names
    the entry in error messages); ValueError on bad JSON, a non-list, or an entry that is not an object (the
    latter when the iteration reaches it)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}).") from error
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(records).__name__}.")
    for index, record in enumerate(records):
        where = f"{path} item {index}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}.")
        yield index, where, record


def read_csv(path: Path, required_columns: Iterable[str], encoding: str = "utf-8") -> list[dict[str, str]]:
    """The rows of a CSV file as dicts; ValueError naming the missing columns if the header lacks some."""
    with path.open(encoding=encoding, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [column for column in required_columns if column not in columns]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
                f"{', '.join(repr(c) for c in columns) or 'no columns'}."
            )
        return list(reader)


def require_text(value: Any, where: str, field: str) -> str:
    """``value`` if it is a non-blank string, else ValueError saying which field of which row is wrong."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string, got {value!r}.")
    return value


def require_text_list(value: Any, where: str, field: str) -> tuple[str, ...]:
    """``value`` as a tuple if it is a non-empty list of non-blank strings, else ValueError."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: field {field!r} must be a non-empty list of strings, got {value!r}.")
    return tuple(require_text(entry, where, field) for entry in value)


def choice_logprobs(item: Item, output: ItemOutput) -> tuple[float, ...]:
    """The output's per-choice log-likelihoods, checked to be one per choice of ``item``."""
    if len(output.choice_logprobs) != len(item.choices):
        raise ValueError(
            f"Item {item.id!r} has {len(item.choices)} choices but the output has "
            f"{len(output.choice_logprobs)} choice log-likelihoods."
        )
    return tuple(float(value) for value in output.choice_logprobs)


def generated_text(item: Item, output: ItemOutput) -> str:
    """The output's generated text; ValueError if the output has none (a "choice" output)."""
    if output.text is None:
        raise ValueError(f"Item {item.id!r} is a generation item but its output has no text.")
    return output.text


def cut_at(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any of ``stops`` (the whole text if none occurs)."""
    end = len(text)
    for stop in stops:
        position = text.find(stop)
        if position != -1:
            end = min(end, position)
    return text[:end]
