"""How a data file is rebuilt from its source when it is not a plain copy (``DataFile.transform``): unzip, read
OPERA's ``chair.pkl`` with a restricted unpickler, keep some fields of each prompt record, build the COCO
manifest. ``TRANSFORMS`` maps each name to ``f(source, out, entry, root)``."""

from __future__ import annotations

import collections
import json
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data_sources import DataFile

_CHUNK = 1 << 20  # bytes per read / copy (downloads too)


def _unzip(source: Path | None, out: Path, entry: DataFile, root: Path) -> None:
    """The zip member ``entry.transform_arg`` of ``source``, byte for byte."""
    assert source is not None
    with (
        zipfile.ZipFile(source) as archive,
        archive.open(entry.transform_arg) as member,
        out.open("wb") as handle,
    ):
        shutil.copyfileobj(member, handle, _CHUNK)


class _ChairEvaluator:
    """Stands in for ``chair.py``'s ``CHAIR`` class: the pickle's attributes land in ``__dict__``."""


class _ChairUnpickler(pickle.Unpickler):
    """Loads ``chair.pkl`` without running code: only the classes its data is made of are allowed."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "list"): list,
        ("builtins", "set"): set,
        ("builtins", "dict"): dict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if name == "CHAIR":
            return _ChairEvaluator
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"chair.pkl refers to {module}.{name}, which is not allowed")


def _chair_pickle(source: Path | None, out: Path, entry: DataFile, root: Path) -> None:
    """``imid_to_objects`` (compact JSON, ids ascending, objects sorted) or the vocabulary tables of chair.pkl."""
    assert source is not None
    with source.open("rb") as handle:
        evaluator = _ChairUnpickler(handle).load()
    state = vars(evaluator)
    if entry.transform_arg == "imid_to_objects":
        mapping = state["imid_to_objects"]
        data: Any = {str(image_id): sorted(mapping[image_id]) for image_id in sorted(mapping, key=int)}
        text = json.dumps(data, separators=(",", ":"))
    elif entry.transform_arg == "vocab":
        keys = ("mscoco_objects", "inverse_synonym_dict", "double_word_dict")
        data = {key: state[key] if isinstance(state[key], list) else dict(state[key]) for key in keys}
        text = json.dumps(data, indent=1)
    else:
        raise ValueError(f"unknown chair.pkl part {entry.transform_arg!r}")
    out.write_text(text, encoding="utf-8")


def _prompt_records(source: Path | None, out: Path, entry: DataFile, root: Path) -> None:
    """``{"id", "prefix_text", "reference_text"}`` per record of a contrastive-search result list (JSON Lines)."""
    assert source is not None
    records = json.loads(source.read_text(encoding="utf-8"))
    with out.open("w", encoding="utf-8", newline="\n") as handle:
        for index, record in enumerate(records):
            row = {
                "id": index,
                "prefix_text": record["prefix_text"],
                "reference_text": record["reference_text"],
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _coco_manifest(source: Path | None, out: Path, entry: DataFile, root: Path) -> None:
    """The sample images (``entry.needs``) with their CHAIR ground truth from ``entry.inputs[0]``, by image id."""
    ground_truth = json.loads((root / entry.inputs[0]).read_text(encoding="utf-8"))
    folder = entry.path.rsplit("/", 1)[0] + "/"
    rows = []
    for needed in entry.needs:
        relative = needed[len(folder) :] if needed.startswith(folder) else needed
        image_id = int(Path(needed).stem.rsplit("_", 1)[1])
        rows.append(
            {
                "file": relative,
                "coco_image_id": image_id,
                "split": "val2014",
                "chair_gt_objects": ground_truth[str(image_id)],
            }
        )
    rows.sort(key=lambda row: row["coco_image_id"])
    out.write_text(json.dumps(rows, indent=1), encoding="utf-8")


TRANSFORMS: dict[str, Callable[[Path | None, Path, DataFile, Path], None]] = {
    "unzip": _unzip,
    "chair_pickle": _chair_pickle,
    "prompt_records": _prompt_records,
    "coco_manifest": _coco_manifest,
}
