"""POPE and CHAIR tasks: metrics against hand-computed values and the evaluate modules, pope-mini's
construction, and end-to-end runs through the CLI with a tiny LLaVA checkpoint and the real COCO images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from contrastive_decoding.benchmarks.metrics import load_metric
from contrastive_decoding.benchmarks.tasks import get_task
from contrastive_decoding.benchmarks.tasks.base import ItemOutput
from contrastive_decoding.benchmarks.tasks.vision import pope_aggregate, pope_counts
from contrastive_decoding.cli import main
from tests.tiny_models import tiny_model, tiny_tokenizer
from tests.tiny_vlms import save_tiny_vlm

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_pope_cells_and_aggregate_by_hand():
    answers = ["Yes.", "No, there is not.", "yes", "There is no dog.", "Not sure", "no"]
    labels = ["yes", "no", "no", "yes", "yes", "no"]
    rows = [pope_counts(a, label) for a, label in zip(answers, labels, strict=True)]
    # parsed: yes, no, yes, no, yes ("Not" is case-sensitive in POPE's rule), no
    # tp: 1 (0), 1 (4) -> 2; fp: 1 (2); tn: 2 (1, 5); fn: 1 (3)
    result = pope_aggregate(rows)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["yes_ratio"] == pytest.approx(3 / 6)
    reference = load_metric("pope").compute(predictions=answers, references=labels)
    assert result == pytest.approx(reference)


def test_chair_per_item_rows_aggregate_to_the_chair_metric():
    task = get_task("chair")
    items = task.load(SHARED)[:3]
    captions = [
        "A man holding a baseball bat next to a dog.",
        "People sitting on a couch with cups and a cat.",
        "A kitchen with a microwave, a clock and a car.",
    ]
    rows = [task.score(item, ItemOutput(text=caption)) for item, caption in zip(items, captions, strict=True)]
    ours = task.aggregate(rows)
    reference = load_metric("chair").compute(
        predictions=captions,
        references=[list(item.references) for item in items],
        synonyms_path=str(SHARED / "chair" / "synonyms.txt"),
    )
    assert ours["CHAIR_s"] == pytest.approx(reference["CHAIR_s"])
    assert ours["CHAIR_i"] == pytest.approx(reference["CHAIR_i"])
    assert rows[0]["hallucinated_mentions"] == 1.0  # the dog; man -> person and the bat are in image 192


def test_pope_mini_asks_present_and_popular_absent_objects():
    items = get_task("pope-mini").load(SHARED)
    manifest = json.loads((SHARED / "coco_images" / "manifest.json").read_text())
    truth = {str(Path(row["file"]).resolve().name): set(row["chair_gt_objects"]) for row in manifest}
    assert len({item.id for item in items}) == len(items)
    per_image: dict[str, list] = {}
    for item in items:
        per_image.setdefault(Path(item.image).name, []).append(item)
        present = item.meta["object"] in truth[Path(item.image).name]
        assert present == (item.references[0] == "yes")
        assert Path(item.image).is_file()
    for image_items in per_image.values():
        labels = [item.references[0] for item in image_items]
        assert labels.count("yes") == labels.count("no") <= 3
    # "person" is the most frequent COCO object: asked as a negative wherever the image has no person
    assert all(item.meta["object"] == "person" for item in items if item.id.endswith("no-person"))


def test_pope_file_with_an_image_folder(tmp_path):
    """Any POPE-format question file with images in DATA_DIR/coco_val2014 works; a missing image is named."""
    (tmp_path / "pope").mkdir()
    (tmp_path / "coco_val2014").mkdir()
    shutil.copy(SHARED / "coco_images/images/COCO_val2014_000000000192.jpg", tmp_path / "coco_val2014")
    rows = [
        {
            "question_id": 1,
            "image": "COCO_val2014_000000000192.jpg",
            "text": "Is there a person?",
            "label": "yes",
        },
        {
            "question_id": 2,
            "image": "COCO_val2014_000000000192.jpg",
            "text": "Is there a cat?",
            "label": "no",
        },
    ]
    (tmp_path / "pope" / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = get_task("pope-random").load(tmp_path)
    assert [item.id for item in items] == ["random-1", "random-2"]
    assert items[1].references == ("no",) and items[1].context.startswith("Is there a cat?")
    rows.append({"question_id": 3, "image": "missing.jpg", "text": "Is there a dog?", "label": "no"})
    (tmp_path / "pope" / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FileNotFoundError, match="missing.jpg not found.*val2014"):
        get_task("pope-random").load(tmp_path)


@pytest.fixture(scope="module")
def llava_checkpoint(tmp_path_factory):
    return save_tiny_vlm("llava", tmp_path_factory.mktemp("llava"))


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args, "--data-dir", str(SHARED), "--no-progress"])


@pytest.mark.parametrize(
    ("task", "method"), [("pope-mini", "vcd"), ("pope-mini", "greedy"), ("chair", "vdd")]
)
def test_bench_run_image_task_end_to_end(llava_checkpoint, tmp_path, task, method):
    out = tmp_path / "run"
    result = bench(
        "run", task, "--model", llava_checkpoint, "--method", method, "--limit", "4", "--output-dir", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("scores" in row for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    expected = {"accuracy", "f1", "yes_ratio"} if task == "pope-mini" else {"CHAIR_s", "CHAIR_i"}
    assert expected <= set(summary["metrics"])
    # resuming a finished run changes nothing
    again = bench(
        "run", task, "--model", llava_checkpoint, "--method", method, "--limit", "4", "--output-dir", str(out)
    )
    assert again.exit_code == 0
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == rows


def test_image_method_on_a_text_task_is_refused(llava_checkpoint, tmp_path):
    result = bench(
        "run", "truthfulqa-mc", "--model", llava_checkpoint, "--method", "vcd", "--output-dir", str(tmp_path)
    )
    assert result.exit_code != 0 and "contrasts images" in result.output


def test_image_task_with_a_text_model_is_a_clear_error(tmp_path):
    model_dir = tmp_path / "text-model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    result = bench(
        "run",
        "pope-mini",
        "--model",
        str(model_dir),
        "--method",
        "vcd",
        "--limit",
        "2",
        "--output-dir",
        str(tmp_path / "o"),
    )
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert result.exit_code == 0 and all("needs a vision-language model" in row["error"] for row in rows)


def test_report_grades_hallucination_rates_lower_and_describes_counts():
    from contrastive_decoding.benchmarks.report import metric_direction

    assert metric_direction("CHAIR_i") == -1 and metric_direction("memorized") == -1
    assert metric_direction("accuracy") == 1 and metric_direction("supported_bigrams") == 1
    assert metric_direction("mentions_per_caption") == 0 and metric_direction("instruction_overshadowed") == 0
