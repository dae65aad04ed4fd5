"""Calibrated answer choices on tiny models: ``calibration.score_choices`` against the manual combination of
``score`` calls (text) and of plain forwards (a tiny LLaVA, with and without its image), the benchmark runner on
pope-mini, truthfulqa-mc and factor-expert, and the errors of scoring-only methods (generate, vLLM, bench)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from contrastive_decoding.benchmarks.tasks import get_task
from contrastive_decoding.calibration import image_choice_logprobs, score_choices
from contrastive_decoding.cli import main
from contrastive_decoding.models import load_model_and_tokenizer
from contrastive_decoding.scoring import score

from .tiny_models import tiny_config, tiny_model, tiny_tokenizer, word_level_tokenizer
from .tiny_vlms import _SPECIAL_TOKENS, TEXT_TOKENS, coco_images, tiny_vlm

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTEXTS = ["w5 w17 w300 w42", "w9 w8"]
CHOICES = [[" w7 w8", " w400", " w11 w12 w13"], [" w20", " w21 w22"]]
FREE = [["w5 w17 N/A"], ["w9 N/A"]]  # the item's prompt with the content-free input in place of its question
YES, NO = 506, 507  # POPE's answers in the tiny LLaVA vocabulary (test_vision_tasks' has none)


def logprobs_of(model, tokenizer, contexts, choices) -> list[list[float]]:
    return [
        [result.logprob for result in score(model, tokenizer, [context] * len(row), row)]
        for context, row in zip(contexts, choices, strict=True)
    ]


def diagonal(given: list[float], free: list[float], strength: float = 1.0) -> list[float]:
    """Zhao et al.'s diagonal form written out: q = (p / p_cf^s) / sum, on renormalised probabilities."""
    p = torch.tensor(given, dtype=torch.float64).softmax(-1)
    p_cf = torch.tensor(free, dtype=torch.float64).softmax(-1)
    q = p / p_cf**strength
    return (q / q.sum()).log().tolist()


@pytest.fixture(scope="module")
def text_model():
    return tiny_model("llama"), tiny_tokenizer()


# --------------------------------------------------------------------------- score_choices, text


def test_calibrated_choices_are_the_manual_combination_of_two_score_calls(text_model):
    model, tokenizer = text_model
    calibrated = score_choices(model, tokenizer, CONTEXTS, CHOICES, content_free_contexts=FREE, batch_size=2)
    given = logprobs_of(model, tokenizer, CONTEXTS, CHOICES)
    free = logprobs_of(model, tokenizer, [row[0] for row in FREE], CHOICES)
    for row, expected_given, expected_free in zip(calibrated, given, free, strict=True):
        torch.testing.assert_close(row, diagonal(expected_given, expected_free), rtol=1e-6, atol=1e-5)
        assert sum(torch.tensor(row).exp()) == pytest.approx(1.0)
    half = score_choices(model, tokenizer, CONTEXTS, CHOICES, content_free_contexts=FREE, strength=0.5)
    torch.testing.assert_close(half[1], diagonal(given[1], free[1], 0.5), rtol=1e-6, atol=1e-5)
    plain = score_choices(model, tokenizer, CONTEXTS, CHOICES, content_free_contexts=FREE, strength=0.0)
    for row, expected in zip(plain, given, strict=True):  # strength 0: the model's own choice distribution
        torch.testing.assert_close(
            row, torch.tensor(expected, dtype=torch.float64).log_softmax(-1).tolist(), rtol=1e-6, atol=1e-5
        )


def test_several_content_free_inputs(text_model):
    model, tokenizer = text_model
    free = [["w5 w17 N/A", "w5 w17 w3"], ["w9 N/A", "w9 w3"]]
    calibrated = score_choices(
        model, tokenizer, CONTEXTS, CHOICES, content_free_contexts=free, content_free_inputs=["N/A", "w3"]
    )
    given = logprobs_of(model, tokenizer, CONTEXTS, CHOICES)
    first = logprobs_of(model, tokenizer, [row[0] for row in free], CHOICES)
    second = logprobs_of(model, tokenizer, [row[1] for row in free], CHOICES)
    for row, g, a, b in zip(calibrated, given, first, second, strict=True):
        p_cf = (
            torch.tensor(a, dtype=torch.float64).exp() + torch.tensor(b, dtype=torch.float64).exp()
        ) / 2  # Zhao: mean, then / sum
        q = torch.tensor(g, dtype=torch.float64).softmax(-1) / (p_cf / p_cf.sum())
        torch.testing.assert_close(row, (q / q.sum()).log().tolist(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs content_free_contexts"),
        ({"content_free_contexts": [["a", "b"], ["c", "d"]]}, r"must list 1 prompt\(s\)"),
        ({"content_free_contexts": FREE, "images": ["x.jpg", "y.jpg"]}, "for images use posthoc_debias"),
        ({"method": "posthoc_debias"}, "posthoc_debias needs one image per item"),
        ({"method": "posthoc_debias", "images": ["x.jpg", None]}, "got 1 of 2"),
        ({"method": "dola"}, "dola scores each continuation alone"),
        ({"content_free_contexts": FREE, "form": "affine"}, "form must be one of"),
        ({"content_free_contexts": FREE, "strenght": 2}, "Did you mean 'strength'"),
    ],
)
def test_score_choices_errors(text_model, kwargs, message):
    model, tokenizer = text_model
    with pytest.raises(ValueError, match=message):
        score_choices(model, tokenizer, CONTEXTS, CHOICES, **kwargs)


def test_score_refuses_calibration_and_generate_refuses_it(text_model):
    from contrastive_decoding.api import generate

    model, tokenizer = text_model
    with pytest.raises(ValueError, match="cannot score continuations one at a time: it calibrates"):
        score(model, tokenizer, CONTEXTS, [" w7", " w8"], method="contextual_calibration")
    with pytest.raises(ValueError, match="contextual_calibration does not generate .a scoring-only method"):
        generate(model, tokenizer, CONTEXTS, method="contextual_calibration")


# --------------------------------------------------------------------------- score_choices, images


def tiny_llava_processor():
    from transformers import LlavaProcessor

    from .tiny_vlms import image_processor

    tokenizer = word_level_tokenizer(TEXT_TOKENS, {**_SPECIAL_TOKENS["llava"], YES: "Yes", NO: "No"})
    return LlavaProcessor(
        image_processor=image_processor("llava"),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


@pytest.fixture(scope="module")
def llava():
    return tiny_vlm("llava"), tiny_llava_processor()


def test_image_choices_with_and_without_the_image_are_plain_forwards(llava):
    model, processor = llava
    (image,) = coco_images(1)
    prompt = "w10 w11 w12"
    with_image, without_image = image_choice_logprobs(model, processor, prompt, [" Yes", " No w13"], image)
    for choice, ids, given, free in (
        (" Yes", [YES], with_image[0], without_image[0]),
        (" No w13", [NO, 13], with_image[1], without_image[1]),
    ):
        full = processor(images=[image], text=[f"<image>\n{prompt}{choice}"], return_tensors="pt")
        assert full["input_ids"][0, -len(ids) :].tolist() == ids
        with torch.no_grad():
            logprobs = model(**full).logits[0].log_softmax(-1)  # [S, V]
        targets = torch.tensor(ids)
        expected = logprobs[-len(ids) - 1 : -1].gather(-1, targets[:, None]).sum()
        assert given == pytest.approx(float(expected), abs=1e-4)
        bare = torch.tensor([[10, 11, 12, *ids]])  # the prompt without its image tokens
        with torch.no_grad():
            logprobs = model(input_ids=bare).logits[0].log_softmax(-1)
        expected = logprobs[-len(ids) - 1 : -1].gather(-1, targets[:, None]).sum()
        assert free == pytest.approx(float(expected), abs=1e-4)
    assert with_image != without_image  # the image matters to the random model


def test_posthoc_debias_combines_the_two_branches(llava):
    model, processor = llava
    images = coco_images(2)
    calibrated = score_choices(
        model, processor, ["w10 w11", "w12"], [[" Yes", " No"]] * 2, "posthoc_debias", images=images
    )
    for row, prompt, image in zip(calibrated, ["w10 w11", "w12"], images, strict=True):
        given, free = image_choice_logprobs(model, processor, prompt, [" Yes", " No"], image)
        p = torch.tensor(given, dtype=torch.float64).softmax(-1)
        p_cf = torch.tensor(free, dtype=torch.float64).softmax(-1) + 1e-4  # Zhang's epsilon
        q = p / p_cf
        torch.testing.assert_close(row, (q / q.sum()).log().tolist(), rtol=1e-6, atol=1e-5)


def test_posthoc_debias_needs_a_vision_language_model(text_model):
    model, tokenizer = text_model
    with pytest.raises(ValueError, match="needs a vision-language model"):
        score_choices(model, tokenizer, ["w5"], [[" w6", " w7"]], "posthoc_debias", images=coco_images(1))


# --------------------------------------------------------------------------- the benchmark runner


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args, "--data-dir", str(SHARED), "--no-progress"])


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def llava_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("llava-yes-no")
    tiny_vlm("llava").save_pretrained(path)
    tiny_llava_processor().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def long_context_checkpoint(tmp_path_factory) -> str:
    config = tiny_config("llama")
    config.max_position_embeddings = 4096  # few-shot prompts of whitespace words, one token each
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-long")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_bench_pope_mini_posthoc_debias_answers_with_the_calibrated_choice(llava_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = bench("run", "pope-mini", "--model", llava_checkpoint, "--method", "posthoc_debias", "--limit", "4",
                   "--output-dir", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert len(rows) == 4 and all("error" not in row for row in rows), rows
    model, processor = load_model_and_tokenizer(llava_checkpoint)
    items = get_task("pope-mini").load(SHARED)[:4]
    expected = score_choices(
        model, processor, [item.context for item in items], [[" Yes", " No"]] * 4, "posthoc_debias",
        images=[item.image for item in items],
    )  # fmt: skip
    for row, values in zip(rows, expected, strict=True):
        assert row["output"]["choice_logprobs"] == pytest.approx(values)
        assert row["output"]["text"] == ("Yes" if values[0] >= values[1] else "No")
        assert row["output"]["token_ids"] == []
    summary = json.loads((out / "summary.json").read_text())
    assert {"accuracy", "f1", "yes_ratio"} <= set(summary["metrics"])
    yes_ratio = sum(row["output"]["text"] == "Yes" for row in rows) / 4
    assert summary["metrics"]["yes_ratio"] == pytest.approx(yes_ratio)


def test_bench_truthfulqa_mc_calibrates_exactly_the_scores_mc_reads(long_context_checkpoint, tmp_path):
    runs = {}
    for method, extra in (("greedy", ()), ("contextual_calibration", ()), ("zero", ("--set", "strength=0"))):
        out = tmp_path / method
        name = "contextual_calibration" if method == "zero" else method
        result = bench("run", "truthfulqa-mc", "--model", long_context_checkpoint, "--method", name, *extra,
                       "--limit", "2", "--output-dir", str(out))  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[method] = (read_rows(out), json.loads((out / "summary.json").read_text())["metrics"])
    from contrastive_decoding.benchmarks.tasks.truthfulqa import build_prompt

    model, tokenizer = load_model_and_tokenizer(long_context_checkpoint)
    items = get_task("truthfulqa-mc").load(SHARED)[:2]
    free = logprobs_of(model, tokenizer, [build_prompt("N/A")] * 2, [list(item.choices) for item in items])
    for greedy_row, row, free_row in zip(
        runs["greedy"][0], runs["contextual_calibration"][0], free, strict=True
    ):
        expected = diagonal(greedy_row["output"]["choice_logprobs"], free_row)
        assert row["output"]["choice_logprobs"] == pytest.approx(expected, abs=1e-6)
    assert runs["zero"][1] == pytest.approx(
        runs["greedy"][1]
    )  # strength 0: the same MC1 / MC2 / MC3 as greedy


def test_bench_factor_content_free_prompt(long_context_checkpoint, tmp_path):
    out = tmp_path / "run"
    result = bench("run", "factor-expert", "--model", long_context_checkpoint, "--method",
                   "contextual_calibration", "--limit", "2", "--output-dir", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    model, tokenizer = load_model_and_tokenizer(long_context_checkpoint)
    task = get_task("factor-expert")
    items = task.load(SHARED)[:2]
    for row, item in zip(read_rows(out), items, strict=True):
        free = task.content_free_context(item, "N/A")
        assert free == "N/A" + ("\n" if item.context.endswith("\n") else "")
        (given,) = logprobs_of(model, tokenizer, [item.context], [list(item.choices)])
        (without,) = logprobs_of(model, tokenizer, [free], [list(item.choices)])
        assert row["output"]["choice_logprobs"] == pytest.approx(diagonal(given, without), abs=1e-6)


@pytest.mark.parametrize(
    ("task", "method", "extra", "message"),
    [
        (
            "truthfulqa-gen",
            "contextual_calibration",
            (),
            "does not generate; task 'truthfulqa-gen' generates free",
        ),
        ("truthfulqa-mc", "posthoc_debias", (), "calibrates against the prompt without its image"),
        ("truthfulqa-mc", "contextual_calibration", ("--set", "normalize=false"), "normalize does not apply"),
        ("truthfulqa-mc", "contextual_calibration", ("--set", "form=affine"), "form must be one of"),
        ("truthfulqa-mc", "contextual_calibration", ("--set", "strenght=2"), "Did you mean 'strength'"),
        ("pope-mini", "posthoc_debias", ("--backend", "vllm"), "scores answer choices on the hf backend"),
        ("pope-mini", "contextual_calibration", (), "task 'pope-mini' does not define one"),
    ],
)
def test_bench_errors_before_loading_the_model(tmp_path, task, method, extra, message):
    result = bench("run", task, "--model", str(tmp_path / "no-such-model"), "--method", method, *extra,
                   "--output-dir", str(tmp_path / "o"))  # fmt: skip
    assert result.exit_code == 1 and message in result.output, result.output
    assert "no-such-model" not in result.output


def test_posthoc_debias_on_items_without_an_image_is_refused(long_context_checkpoint, tmp_path):
    from contrastive_decoding.benchmarks.runner import run_task
    from contrastive_decoding.benchmarks.tasks.vision import PopeMini

    class TextPope(PopeMini):  # pope-mini's questions with their images dropped
        def load(self, data_dir):
            import dataclasses

            return [dataclasses.replace(item, image=None) for item in super().load(data_dir)]

    model, tokenizer = load_model_and_tokenizer(long_context_checkpoint)
    with pytest.raises(ValueError, match="posthoc_debias contrasts images, and task 'pope-mini' has none"):
        run_task(TextPope(), model=model, tokenizer=tokenizer, method="posthoc_debias", params={},
                 output_dir=tmp_path / "o", data_dir=SHARED, limit=2, progress=False)  # fmt: skip


def test_cli_generate_refuses_scoring_only_methods_and_methods_lists_them():
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "--model", "no-such-model", "--method", "posthoc_debias",
                                  "--prompt", "Is there a dog?"])  # fmt: skip
    assert (
        result.exit_code == 2 and "posthoc_debias does not generate (a scoring-only method" in result.output
    )
    listing = runner.invoke(main, ["methods"]).output
    assert "[scoring only: choice tasks]" in listing.split("posthoc_debias", 1)[1].splitlines()[0]
