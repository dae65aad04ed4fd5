"""VCD, RITUAL, RITUAL + VCD and no-image contrast through ``model.generate(custom_generate=...)`` on tiny
random-init LLaVA, Qwen2-VL and Idefics3 models with real COCO images.

Layers: zero contrast equals plain generate token for token; batched equals unbatched; KV-cached equals a slow
loop that re-runs every branch on the whole sequence; user-supplied perturbations plug into the same contrast;
clear errors for missing images, text-only models and bad parameters.
"""

from __future__ import annotations

import pytest
import torch

import contrastive_decoding as cd
from contrastive_decoding.backends.hf import vision_families, vision_inputs
from contrastive_decoding.decoding import perturbations
from contrastive_decoding.decoding.vcd import vcd_contrast
from contrastive_decoding.decoding.vdd import vdd_contrast
from tests.tiny_models import tiny_model
from tests.tiny_vlms import (
    IMAGE_TOKEN_ID,
    VLM_FAMILIES,
    coco_images,
    image_processor,
    select_rows,
    tiny_vlm,
    vlm_inputs,
)

METHODS = ("vcd", "ritual", "ritual_vcd", "vdd")
NEW_TOKENS = 6
PROMPT_LENGTHS = [4, 9, 6]
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module", params=VLM_FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    return tiny_vlm(family)


@pytest.fixture(scope="module")
def images():
    return coco_images(len(PROMPT_LENGTHS))


@pytest.fixture(scope="module")
def inputs(family, images):
    return vlm_inputs(family, images, PROMPT_LENGTHS)


def method_kwargs(method: str, family: str, images, zero: bool = False) -> dict:
    kwargs: dict = {}
    if method in ("ritual", "ritual_vcd"):
        kwargs.update(images=images, image_processor=image_processor(family))
    if zero:
        kwargs.update(
            {
                "vcd": dict(vcd_alpha=0.0),
                "ritual": dict(ritual_alpha_pos=0.0),
                "ritual_vcd": dict(ritual_alpha_pos=0.0, vcd_alpha=0.0),
                "vdd": dict(vdd_alpha=0.0),
            }[method]
        )
    return kwargs


def run(model, inputs, method, **kwargs):
    return model.generate(
        **inputs,
        custom_generate=getattr(cd.hf, method),
        max_new_tokens=NEW_TOKENS,
        do_sample=kwargs.pop("do_sample", False),
        **kwargs,
    )


@pytest.mark.parametrize("method", METHODS)
def test_zero_contrast_equals_plain_generate(model, family, inputs, images, method):
    plain = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    ours = run(model, inputs, method, **method_kwargs(method, family, images, zero=True))
    assert torch.equal(ours, plain)


@pytest.mark.parametrize("method", ["vcd", "vdd"])
def test_hidden_states_and_cache_are_the_image_branchs(model, family, inputs, images, method):
    """With ``return_dict_in_generate``, hidden states per step and the cache are the image branch's: at zero
    contrast, those of plain generate."""
    outputs = dict(return_dict_in_generate=True, output_hidden_states=True, min_new_tokens=NEW_TOKENS)
    plain = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **outputs)
    ours = run(model, inputs, method, **method_kwargs(method, family, images, zero=True), **outputs)
    assert torch.equal(ours.sequences, plain.sequences)
    assert len(ours.hidden_states) == len(plain.hidden_states) == NEW_TOKENS
    for step_ours, step_plain in zip(ours.hidden_states, plain.hidden_states, strict=True):
        for a, b in zip(step_ours, step_plain, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(ours.past_key_values.layers, plain.past_key_values.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_contrast_changes_the_output(model, family, inputs, images, method):
    plain = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    ours = run(model, inputs, method, **method_kwargs(method, family, images))
    assert not torch.equal(ours, plain)


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_unbatched(model, family, inputs, images, method):
    kwargs = method_kwargs(method, family, images)
    batched = run(model, inputs, method, perturbation_seed=SEEDS, **kwargs) if method != "vdd" else None
    if batched is None:
        batched = run(model, inputs, method, **kwargs)
    width = inputs["input_ids"].shape[1]
    for row in range(len(PROMPT_LENGTHS)):
        alone_kwargs = dict(kwargs)
        if "images" in alone_kwargs:
            alone_kwargs["images"] = [images[row]]
        if method != "vdd":
            alone_kwargs["perturbation_seed"] = [SEEDS[row]]
        row_inputs = select_rows(family, inputs, [row])
        alone = run(model, row_inputs, method, **alone_kwargs)[0, row_inputs["input_ids"].shape[1] :].tolist()
        together = batched[row, width:].tolist()
        assert together[: len(alone)] == alone, f"row {row}"
        assert all(token == 0 for token in together[len(alone) :])  # padded after its EOS


@pytest.mark.parametrize(
    "filters", [{}, {"min_p": 0.05, "top_n_sigma": 2.0}], ids=["t3", "min_p+top_n_sigma"]
)
@pytest.mark.parametrize("method", ["vcd", "ritual"])
def test_seeded_sampling_batched_equals_unbatched(model, family, inputs, images, method, filters):
    """``seed``: each row's draws are keyed on (its seed, output position), like its perturbation; with the
    sampling filters too."""
    kwargs = method_kwargs(method, family, images)
    sampled = dict(do_sample=True, temperature=3.0, **filters)
    batched = run(model, inputs, method, perturbation_seed=SEEDS, seed=[21, 22, 23], **sampled, **kwargs)
    width = inputs["input_ids"].shape[1]
    for row in range(len(PROMPT_LENGTHS)):
        alone_kwargs = {**kwargs, **({"images": [images[row]]} if "images" in kwargs else {})}
        row_inputs = select_rows(family, inputs, [row])
        alone = run(
            model,
            row_inputs,
            method,
            perturbation_seed=[SEEDS[row]],
            seed=21 + row,
            **sampled,
            **alone_kwargs,
        )[0, row_inputs["input_ids"].shape[1] :].tolist()
        together = batched[row, width:].tolist()
        assert together[: len(alone)] == alone, f"row {row}"
    other = run(model, inputs, method, perturbation_seed=SEEDS, seed=[31, 32, 33], **sampled, **kwargs)
    assert not torch.equal(other, batched)


def _slow_logits(model, family, inputs: dict, sequence: torch.Tensor) -> torch.Tensor:  # [1, V]
    """The last-position logits of one unpadded row re-run from scratch (no cache) on ``sequence``."""
    forward = {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in forward:
        extra = sequence.shape[1] - forward["mm_token_type_ids"].shape[1]
        forward["mm_token_type_ids"] = torch.cat(
            [forward["mm_token_type_ids"], forward["mm_token_type_ids"].new_zeros((1, extra))], dim=-1
        )
    if family == "qwen2_vl" and "image_grid_thw" in forward:  # the model's own 3-D positions for the row
        position_ids, _ = model.model.get_rope_index(
            sequence, forward["mm_token_type_ids"], image_grid_thw=forward["image_grid_thw"]
        )
        text = torch.arange(sequence.shape[1])[None, None]
        forward["position_ids"] = torch.cat([text, position_ids], dim=0)
    return model(input_ids=sequence, use_cache=False, **forward).logits[:, -1].float()


@pytest.mark.parametrize("method", ["vcd", "vdd"])
def test_kv_cached_equals_slow_reference_loop(model, family, inputs, method):
    row = select_rows(family, inputs, [1])  # one row, no padding: the reference needs no mask
    generators = perturbations.row_generators([SEEDS[1]], 1)
    if method == "vcd":
        noised = vision_inputs.noised_pixels(row["input_ids"], row, model, generators, 500, "linear")
        other = {**row, "pixel_values": noised}
        other_ids = row["input_ids"]
    else:
        ids = vision_families.config_image_token_ids(model)
        other_ids, _ = perturbations.strip_image_tokens(row["input_ids"], None, ids, 0)
        other = {"input_ids": other_ids}
    sequence, other_sequence = row["input_ids"], other_ids
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            with_image = _slow_logits(model, family, row, sequence)
            perturbed = _slow_logits(model, family, other, other_sequence)
            if method == "vcd":
                scores = vcd_contrast(with_image, perturbed)
            else:
                scores = vdd_contrast(with_image, perturbed)
            token = scores.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=-1)
            other_sequence = torch.cat([other_sequence, token], dim=-1)
    fast = run(model, row, method, **({"perturbation_seed": [SEEDS[1]]} if method == "vcd" else {}))
    assert fast[0].tolist() == sequence[0].tolist()


def test_user_pixel_inputs_equal_the_built_in_noise(model, family, inputs):
    generators = perturbations.row_generators(SEEDS, len(PROMPT_LENGTHS))
    noised = vision_inputs.noised_pixels(inputs["input_ids"], inputs, model, generators, 500, "linear")
    built_in = run(model, inputs, "vcd", perturbation_seed=SEEDS)
    given = run(model, inputs, "vcd", perturbed_inputs={"pixel_values": noised})
    as_callable = run(model, inputs, "vcd", perturbation=lambda pixels: noised)
    assert torch.equal(given, built_in)
    assert torch.equal(as_callable, built_in)


def test_user_embeddings_branch_equals_the_no_image_prompt(model, family, inputs):
    """A negative given as inputs_embeds (how learned negatives such as DCD's plug in) runs as its own
    branch; here the embeddings of the image-free prompt must give the no-image contrast exactly."""
    ids = vision_families.config_image_token_ids(model)
    free_ids, free_mask = perturbations.strip_image_tokens(
        inputs["input_ids"], inputs["attention_mask"], ids, 0
    )
    embeds = model.get_input_embeddings()(free_ids)
    built_in = run(model, inputs, "vdd")
    given = run(model, inputs, "vdd", perturbed_inputs={"inputs_embeds": embeds, "attention_mask": free_mask})
    assert torch.equal(given, built_in)


def test_ritual_with_a_custom_image_perturbation(model, family, inputs, images):
    processor = image_processor(family)
    flipped = run(
        model,
        inputs,
        "ritual",
        images=images,
        image_processor=processor,
        perturbation=lambda image: perturbations.apply_transform(image, "horizontal_flip", torch.Generator()),
    )
    flips = [[perturbations.apply_transform(image, "horizontal_flip", torch.Generator())] for image in images]
    pixels = vision_inputs.processed_images(
        processor, flips, vision_families.vision_family(model, "ritual"), inputs
    )
    given = run(model, inputs, "ritual", perturbed_inputs=pixels)
    assert torch.equal(flipped, given)


def test_ritual_vcd_reduces_to_each_method(model, family, inputs, images):
    processor = image_processor(family)
    common = dict(images=images, image_processor=processor, perturbation_seed=SEEDS)
    assert torch.equal(
        run(model, inputs, "ritual_vcd", ritual_alpha_pos=0.0, **common),
        run(model, inputs, "vcd", perturbation_seed=SEEDS),
    )
    assert torch.equal(
        run(model, inputs, "ritual_vcd", vcd_alpha=0.0, **common),
        run(model, inputs, "ritual", **common),
    )


@pytest.mark.parametrize("method", METHODS)
def test_seeded_sampling_reproduces(model, family, inputs, images, method):
    kwargs = method_kwargs(method, family, images)
    torch.manual_seed(3)
    first = run(model, inputs, method, do_sample=True, top_k=20, temperature=1.5, **kwargs)
    torch.manual_seed(3)
    second = run(model, inputs, method, do_sample=True, top_k=20, temperature=1.5, **kwargs)
    assert torch.equal(first, second)


def test_noise_is_seeded_per_row_and_spares_padding_images(model, family, inputs):
    generators = perturbations.row_generators(SEEDS, 3)
    first = vision_inputs.noised_pixels(inputs["input_ids"], inputs, model, generators, 500, "linear")
    again = vision_inputs.noised_pixels(
        inputs["input_ids"], inputs, model, perturbations.row_generators(SEEDS, 3), 500, "linear"
    )
    other = vision_inputs.noised_pixels(
        inputs["input_ids"], inputs, model, perturbations.row_generators([1, 2, 3], 3), 500, "linear"
    )
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == inputs["pixel_values"].shape
    if family == "idefics3":  # a padding image (all zeros) must stay padding
        padded = torch.cat([inputs["pixel_values"], torch.zeros_like(inputs["pixel_values"])], dim=1)
        noisy = vision_inputs.noised_pixels(
            inputs["input_ids"], {"pixel_values": padded}, model, generators, 500, "linear"
        )
        assert bool((noisy[:, 1] == 0).all()) and bool((noisy[:, 0] != padded[:, 0]).any())


def test_missing_image_is_a_clear_error(model, family, inputs):
    text_only = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with pytest.raises(ValueError, match="vcd needs an image"):
        run(model, text_only, "vcd")


def test_ritual_without_pil_images_is_a_clear_error(model, inputs):
    with pytest.raises(ValueError, match="images=.*image_processor="):
        run(model, inputs, "ritual")


def test_text_only_model_is_a_clear_error():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="needs a vision-language model"):
        model.generate(
            input_ids=torch.tensor([[5, 6, 7]]), custom_generate=cd.hf.vcd, max_new_tokens=2, do_sample=False
        )


@pytest.mark.parametrize(
    ("method", "bad", "message"),
    [
        ("vcd", dict(vcd_alpha=-1.0), "vcd_alpha"),
        ("vcd", dict(noise_step=1000), "noise_step"),
        ("vcd", dict(noise_schedule="cosine"), "noise_schedule"),
        ("ritual", dict(ritual_beta=2.0), "ritual_beta"),
        ("vdd", dict(vdd_alpha=500.0), "vdd_alpha"),
    ],
)
def test_parameter_out_of_range_names_it(model, inputs, method, bad, message):
    with pytest.raises(ValueError, match=message):
        run(model, inputs, method, **bad)


def test_processor_image_token_ids_find_the_markers():
    from tests.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(
        ["<image>", "<fake_token_around_image>", "<global-img>", "<row_1_col_2>"], special_tokens=True
    )
    ids = vision_families.processor_image_token_ids(tokenizer)
    assert len(ids) == 4 and IMAGE_TOKEN_ID not in ids  # the tiny vocabulary's w500 is a plain word


@pytest.mark.parametrize("method", METHODS)
def test_num_return_sequences_repeats_each_rows_image(model, family, inputs, images, method):
    """generate repeats the prompt rows but hands the image inputs over as given: they are repeated to match
    (top_k=1 sampling is deterministic, so zero contrast must equal plain generate's repeated rows)."""
    sampled = dict(do_sample=True, top_k=1, num_return_sequences=2)
    plain = model.generate(**inputs, max_new_tokens=NEW_TOKENS, **sampled)
    ours = run(model, inputs, method, **sampled, **method_kwargs(method, family, images, zero=True))
    assert ours.shape[0] == 2 * len(PROMPT_LENGTHS)
    assert torch.equal(ours, plain)
