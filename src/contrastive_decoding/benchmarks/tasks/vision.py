"""Object hallucination of vision-language models: POPE (yes / no object questions) and CHAIR (captions).

- ``pope-random`` / ``pope-popular`` / ``pope-adversarial``: the POPE COCO files (github.com/RUCAIBox/POPE,
  JSON Lines ``{"question_id", "image", "text", "label"}``) over MSCOCO val2014 images, which are not shipped:
  put them (``images.cocodataset.org/zips/val2014.zip``) in ``DATA_DIR/coco_val2014/`` or link that folder.
  Any question file in this format with any image folder works the same way.
- ``pope-mini``: POPE's construction on the 20 COCO images that ship in ``coco_images/`` (their CHAIR ground-truth
  objects): per image up to 3 objects that are present ("yes") and as many absent objects ("no") chosen as POPE's
  *popular* setting does, the most frequent COCO objects (counted over the CHAIR ground truth of all 123k COCO
  2014 images) that the image does not hold. Deterministic, no sampling.
- ``chair``: captions of the ``coco_images`` manifest's images (or any folder with a manifest in that format)
  scored with CHAIR_s / CHAIR_i against their ground-truth objects and the CHAIR synonym list.

Answers are generated (``max_new_tokens`` 8 for POPE, 64 for CHAIR) from the raw prompt; the runner puts the
processor's image token in front of it. Scoring-only methods (``posthoc_debias``) score POPE's two answers
``" Yes"`` / ``" No"`` as continuations instead (given the image and without it) and answer with the calibrated
winner, which POPE's parser reads as any generated answer.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

from ..metrics.chair.chair import ChairVocabulary, caption_to_objects, load_synonyms
from ..metrics.pope.pope import parse_yes_no
from . import register
from ._common import data_file, read_jsonl, require_text, task_data_file
from .base import Item, ItemOutput, Task

POPE_SUFFIX = " Please answer this question with one word."  # the prompt of VCD's and RITUAL's POPE scripts
CAPTION_PROMPT = "Please describe this image in detail."  # the CHAIR prompt of OPERA, VCD and RITUAL
COCO_IMAGE_FOLDER = "coco_val2014"
MINI_QUESTIONS_PER_LABEL = 3
# What scoring-only methods (posthoc_debias) score after the prompt: the answer that wins is the item's text.
POPE_ANSWERS = (" Yes", " No")


def _generated_text(item: Item, output: ItemOutput) -> str:
    if output.text is None:
        raise ValueError(f"item {item.id!r}: no generated text")
    return output.text


def pope_counts(answer: str, label: str) -> dict[str, float]:
    """One item's confusion-matrix cell (positive class "yes") under POPE's answer parsing."""
    predicted = parse_yes_no(answer)
    truth = label.strip().lower()
    if truth not in ("yes", "no"):
        raise ValueError(f'POPE labels are "yes" or "no", got {label!r}')
    return {
        "tp": float(predicted == "yes" and truth == "yes"),
        "fp": float(predicted == "yes" and truth == "no"),
        "tn": float(predicted == "no" and truth == "no"),
        "fn": float(predicted == "no" and truth == "yes"),
    }


def pope_aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """accuracy, precision, recall, F1 and yes-ratio from the per-item cells (as the ``pope`` metric)."""
    tp, fp, tn, fn = (sum(row[key] for row in rows) for key in ("tp", "fp", "tn", "fn"))
    total = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / total if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / total if total else 0.0,
    }


class _PopeScored(Task):
    """Yes/no questions about an image, scored as POPE scores them."""

    kind = "generate"
    max_new_tokens = 8
    answer_choices = POPE_ANSWERS

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        return pope_counts(_generated_text(item, output), item.references[0])

    def aggregate(self, rows: list[dict[str, float]]) -> dict[str, float]:
        return pope_aggregate(rows)


class _Pope(_PopeScored):
    split = "random"

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(self, data_dir, "POPE questions, JSON Lines {question_id, image, text, label}")
        images = Path(data_dir) / COCO_IMAGE_FOLDER
        items = []
        for line, row in read_jsonl(path):
            where = f"{path}:{line}"
            image = (images / require_text(row.get("image"), where, "image")).resolve()
            if not image.is_file():
                raise FileNotFoundError(
                    f"Task {self.name!r}: image {image} not found. POPE asks about MSCOCO val2014 images, which "
                    f"are not shipped: put them in {images} (images.cocodataset.org/zips/val2014.zip)."
                )
            items.append(
                Item(
                    id=f"{self.split}-{row.get('question_id', line)}",
                    kind="generate",
                    context=require_text(row.get("text"), where, "text") + POPE_SUFFIX,
                    references=(require_text(row.get("label"), where, "label"),),
                    image=str(image),
                )
            )
        return items


@register
class PopeRandom(_Pope):
    name = "pope-random"
    description = "POPE (COCO, random negatives): yes/no object questions; needs DATA_DIR/coco_val2014 images"
    data_files = ("pope/coco_pope_random.json",)
    split = "random"


@register
class PopePopular(_Pope):
    name = "pope-popular"
    description = "POPE (COCO, popular negatives); needs DATA_DIR/coco_val2014 images"
    data_files = ("pope/coco_pope_popular.json",)
    split = "popular"


@register
class PopeAdversarial(_Pope):
    name = "pope-adversarial"
    description = "POPE (COCO, adversarial negatives); needs DATA_DIR/coco_val2014 images"
    data_files = ("pope/coco_pope_adversarial.json",)
    split = "adversarial"


def _read_manifest(task: str, data_dir: Path) -> tuple[Path, list[dict]]:
    path = data_file(
        task,
        data_dir,
        "coco_images/manifest.json",
        "a JSON list of {file, coco_image_id, chair_gt_objects}",
    )
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise ValueError(f"{path}: entry {index} needs a string 'file'")
        if not isinstance(row.get("chair_gt_objects"), list):
            raise ValueError(f"{path}: entry {index} needs a list 'chair_gt_objects'")
        if not (path.parent / row["file"]).is_file():
            raise FileNotFoundError(f"{path}: entry {index}: image {path.parent / row['file']} not found")
    return path.parent, rows


@lru_cache(maxsize=2)
def _object_popularity(path: str) -> tuple[str, ...]:
    """COCO objects from most to least frequent over the CHAIR ground truth of every COCO 2014 image."""
    counts: Counter[str] = Counter()
    for objects in json.loads(Path(path).read_text()).values():
        counts.update(objects)
    return tuple(name for name, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])))


@register
class PopeMini(_PopeScored):
    name = "pope-mini"
    description = "POPE built on the 20 shipped COCO images (popular negatives), 6 questions per image"
    data_files = ("coco_images/manifest.json", "chair/coco2014_imid_to_objects.json")

    def load(self, data_dir: Path) -> list[Item]:
        folder, rows = _read_manifest(self.name, data_dir)
        popularity_file = task_data_file(
            self, data_dir, "the CHAIR ground truth {image id: [objects]}", file=1
        )
        popular = _object_popularity(str(popularity_file))
        items = []
        for row in rows:
            present = sorted(set(row["chair_gt_objects"]))
            positives = sorted(present, key=popular.index)[:MINI_QUESTIONS_PER_LABEL]
            negatives = [name for name in popular if name not in present][: len(positives)]
            image = str((folder / row["file"]).resolve())
            for label, names in (("yes", positives), ("no", negatives)):
                for name in names:
                    items.append(
                        Item(
                            id=f"{row.get('coco_image_id', row['file'])}-{label}-{name.replace(' ', '_')}",
                            kind="generate",
                            context=f"Is there a {name} in the image?{POPE_SUFFIX}",
                            references=(label,),
                            image=image,
                            meta={"object": name},
                        )
                    )
        return items


@lru_cache(maxsize=2)
def _vocabulary(path: str) -> ChairVocabulary:
    return load_synonyms(path)


@register
class Chair(Task):
    name = "chair"
    description = "CHAIR_s / CHAIR_i of detailed captions of the shipped COCO images (or any manifest)"
    data_files = ("coco_images/manifest.json", "chair/synonyms.txt")
    kind = "generate"
    max_new_tokens = 64

    def __init__(self) -> None:
        self.synonyms_path: str | None = None

    def load(self, data_dir: Path) -> list[Item]:
        folder, rows = _read_manifest(self.name, data_dir)
        self.synonyms_path = str(task_data_file(self, data_dir, "the CHAIR synonym list (80 lines)", file=1))
        return [
            Item(
                id=str(row.get("coco_image_id", row["file"])),
                kind="generate",
                context=CAPTION_PROMPT,
                references=tuple(row["chair_gt_objects"]),
                image=str((folder / row["file"]).resolve()),
            )
            for row in rows
        ]

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        if self.synonyms_path is None:
            raise ValueError("chair: load() the items first (it reads the synonym list)")
        vocabulary = _vocabulary(self.synonyms_path)
        truth = {vocabulary.canonical_by_synonym.get(o.lower(), o.lower()) for o in item.references}
        mentions = caption_to_objects(_generated_text(item, output), vocabulary)
        hallucinated = [canonical for _, canonical in mentions if canonical not in truth]
        return {
            "mentions": float(len(mentions)),
            "hallucinated_mentions": float(len(hallucinated)),
            "CHAIR_s": float(bool(hallucinated)),
        }

    def aggregate(self, rows: list[dict[str, float]]) -> dict[str, float]:
        mentions = sum(row["mentions"] for row in rows)
        hallucinated = sum(row["hallucinated_mentions"] for row in rows)
        return {
            "CHAIR_s": sum(row["CHAIR_s"] for row in rows) / len(rows) if rows else 0.0,
            "CHAIR_i": hallucinated / mentions if mentions else 0.0,
            "mentions_per_caption": mentions / len(rows) if rows else 0.0,
        }
