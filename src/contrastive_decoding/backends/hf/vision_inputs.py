"""The inputs of an image contrast's branches, laid out as each VLM family's processor lays them out.

The image branch is the rows given to ``generate`` (:func:`split_model_kwargs`, :func:`expand_image_inputs`);
the perturbed branches are built from it: the same prompt with noised ``pixel_values`` (:func:`noised_branch`),
with re-processed transformed images (:func:`transformed_branch`), with the user's perturbation or inputs
(:func:`perturbed_branch`, :func:`given_branch`), or the prompt without its image (:func:`no_image_branch`).
The perturbations themselves are :mod:`contrastive_decoding.decoding.perturbations`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from ...decoding.perturbations import diffusion_noise, random_transform, row_generators, strip_image_tokens
from .vision_branches import GENERATE_STATE_KEYS, Branch
from .vision_families import VisionFamily, config_image_token_ids

# Keys of the image inputs a processor returns next to input_ids / attention_mask.
IMAGE_INPUT_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes")


def split_model_kwargs(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model inputs the user gave to generate (attention mask, image inputs, ...), without generate's
    loop state (cache, positions), which every branch rebuilds for itself."""
    inputs = {k: v for k, v in model_kwargs.items() if k not in GENERATE_STATE_KEYS and v is not None}
    if not inputs.get("mm_encoder_outputs", True):  # generate leaves an empty dict when it encoded nothing
        del inputs["mm_encoder_outputs"]
    return inputs


def _rows_of_images(input_ids: torch.Tensor, inputs: dict[str, Any], model: PreTrainedModel) -> list[int]:
    """The batch row of every image in ``pixel_values`` order (Qwen2-VL packs all images' patches)."""
    grid = inputs["image_grid_thw"]  # [N, 3]
    merge = model.config.vision_config.spatial_merge_size
    tokens_per_image = (grid.prod(-1) // (merge * merge)).tolist()
    image_token_id = model.config.image_token_id
    tokens_per_row = (input_ids == image_token_id).sum(-1).tolist()
    rows, row = [], 0
    for count in tokens_per_image:
        while row < len(tokens_per_row) and tokens_per_row[row] < count:
            row += 1
        if row == len(tokens_per_row):
            raise ValueError("image_grid_thw does not match the image tokens of input_ids")
        rows.append(row)
        tokens_per_row[row] -= count
    return rows


def noised_pixels(
    input_ids: torch.Tensor,
    inputs: dict[str, Any],
    model: PreTrainedModel,
    generators: list[torch.Generator],  # one per row
    noise_step: int,
    noise_schedule: str,
) -> torch.Tensor:
    """``pixel_values`` with forward diffusion noise on every image (padding images of Idefics3 stay zero).

    Row ``b``'s images draw, in order, from ``generators[b]``."""
    pixels = inputs["pixel_values"]

    def noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shaped = image if image.dim() in (3, 4) else image[None]  # Qwen2-VL patches [n, D] -> [1, n, D]
        noisy = diffusion_noise(shaped, noise_step, schedule=noise_schedule, generator=generator)
        return noisy.reshape(image.shape)

    if "image_grid_thw" in inputs:  # Qwen2-VL: [sum of patches, D], images one after another
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        rows = _rows_of_images(input_ids, inputs, model)
        chunks = pixels.split(sizes)
        return torch.cat([noise(chunk, generators[row]) for chunk, row in zip(chunks, rows, strict=True)])
    if pixels.dim() == 5:  # Idefics3 / SmolVLM: [B, N, C, H, W], all-zero entries are padding
        noisy = pixels.clone()
        for row in range(pixels.shape[0]):
            for index in range(pixels.shape[1]):
                if bool((pixels[row, index] != 0).any()):
                    noisy[row, index] = noise(pixels[row, index], generators[row])
        return noisy
    if pixels.dim() == 4 and pixels.shape[0] == input_ids.shape[0]:  # LLaVA: [B, C, H, W], one per row
        return torch.stack([noise(pixels[row], generators[row]) for row in range(pixels.shape[0])])
    raise ValueError(
        f"pixel_values of shape {tuple(pixels.shape)} do not hold one image per row; pass the noised inputs "
        "yourself with perturbed_inputs={'pixel_values': ...}"
    )


def _nested_images(images: Any, batch_size: int) -> list[list[Any]]:
    """``images`` as one list of PIL images per row."""
    if images is None:
        return []
    rows = list(images)
    if not rows or batch_size % len(rows):
        raise ValueError(
            f"images must hold one image (or list of images) per row ({batch_size}), got {len(rows)}"
        )
    repeat = batch_size // len(rows)  # num_return_sequences repeats every prompt
    return [list(row) if isinstance(row, (list, tuple)) else [row] for row in rows for _ in range(repeat)]


def processed_images(
    image_processor: Any,
    images: list[list[Any]],  # per row
    family: VisionFamily,
    like: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Run the image processor on (perturbed) images; keep the image inputs ``like`` has, same shapes."""
    processor = getattr(image_processor, "image_processor", image_processor)
    argument = images if family.nested_images else [image for row in images for image in row]
    outputs = processor(images=argument, return_tensors="pt")
    result = {}
    for key in IMAGE_INPUT_KEYS:
        if key not in like:
            continue
        if key not in outputs:
            raise ValueError(f"image_processor returned no {key}; pass the processor that built the inputs")
        value = torch.as_tensor(outputs[key]).to(device=like[key].device)
        if value.shape != like[key].shape:
            raise ValueError(
                f"the perturbed images give {key} of shape {tuple(value.shape)}, the inputs have "
                f"{tuple(like[key].shape)}: pass the processor (and settings) that built the inputs, and keep "
                "image sizes unchanged in a custom perturbation"
            )
        result[key] = value.to(like[key].dtype) if value.is_floating_point() else value
    return result


def transformed_images(
    images: list[list[Any]], generators: list[torch.Generator], transforms: Sequence[str]
) -> list[list[Any]]:
    """RITUAL's ``T(v)``: one random transformation per image, drawn from its row's generator."""
    return [
        [random_transform(image, generators[row], transforms)[0] for image in row_images]
        for row, row_images in enumerate(images)
    ]


def expand_image_inputs(
    inputs: dict[str, Any], input_ids: torch.Tensor, model: PreTrainedModel
) -> dict[str, Any]:
    """Repeat each row's image inputs when generate repeated the rows (``num_return_sequences``): generate
    expands ``input_ids`` and the mask, but the image inputs reach the callable as given."""
    batch = input_ids.shape[0]
    if "image_grid_thw" in inputs:
        grid = inputs["image_grid_thw"]
        merge = model.config.vision_config.spatial_merge_size
        given_tokens = int((grid.prod(-1) // (merge * merge)).sum())
        total_tokens = int((input_ids == model.config.image_token_id).sum())
        if given_tokens == total_tokens:
            return inputs
        # the rows were repeated: image i of the original row r is needed by rows r * k .. r * k + k - 1
        if given_tokens == 0 or total_tokens % given_tokens:
            raise ValueError("image_grid_thw does not match the image tokens of input_ids")
        repeat = total_tokens // given_tokens
        unique_ids = input_ids[::repeat]
        original_rows = _rows_of_images(unique_ids, inputs, model)
        chunks = inputs["pixel_values"].split(grid.prod(-1).tolist())
        pixels, grids = [], []
        for row in range(unique_ids.shape[0]):
            mine = [index for index, owner in enumerate(original_rows) if owner == row]
            for _ in range(repeat):
                pixels += [chunks[index] for index in mine]
                grids += [grid[index] for index in mine]
        return {**inputs, "pixel_values": torch.cat(pixels), "image_grid_thw": torch.stack(grids)}
    given = inputs["pixel_values"].shape[0]
    if given == batch:
        return inputs
    if given == 0 or batch % given:
        raise ValueError(f"pixel_values hold {given} rows of images but the prompt batch has {batch} rows")
    repeat = batch // given
    expanded = dict(inputs)
    for key in ("pixel_values", "pixel_attention_mask", "image_sizes"):
        if key in inputs:
            expanded[key] = inputs[key].repeat_interleave(repeat, dim=0)
    return expanded


# ------------------------------------------------------------------------------------------------------------
# Perturbed branches
# ------------------------------------------------------------------------------------------------------------


def given_branch(image: Branch, perturbed_inputs: dict[str, Any]) -> Branch:
    """The branch the user gave as ``perturbed_inputs``: its inputs replace the image branch's (e.g. only
    ``pixel_values``), or a whole prompt (``input_ids`` / ``inputs_embeds`` with their ``attention_mask``)."""
    if not isinstance(perturbed_inputs, dict) or not perturbed_inputs:
        raise ValueError("perturbed_inputs must be a dict of model inputs, e.g. {'pixel_values': tensor}")
    given = dict(perturbed_inputs)
    batch = image.input_ids.shape[0]
    for key, value in given.items():
        if isinstance(value, torch.Tensor) and key in ("input_ids", "inputs_embeds", "attention_mask"):
            if value.shape[0] != batch:
                raise ValueError(
                    f"perturbed_inputs[{key!r}] has {value.shape[0]} rows, the batch has {batch}"
                )
    if "input_ids" in given or "inputs_embeds" in given:  # a whole prompt of its own
        input_ids = given.pop("input_ids", None)
        if input_ids is None:
            input_ids = image.input_ids.new_zeros((batch, 0))
        return Branch(input_ids.to(image.input_ids.device), given)
    return image.with_inputs(given)


def _reprocessed_branch(
    image: Branch, family: VisionFamily, image_processor: Any, images: list[list[Any]]
) -> Branch:
    """The image branch with ``images`` (per row, PIL) run through the processor in place of its own."""
    return image.with_inputs(processed_images(image_processor, images, family, image.inputs))


def perturbed_branch(
    image: Branch,
    family: VisionFamily,
    images: Any,
    image_processor: Any,
    perturbation: Callable[[Any], Any],
) -> Branch:
    """A branch whose image is ``perturbation(image)``: on each PIL image when ``images`` and
    ``image_processor`` are given, else on the ``pixel_values`` tensor."""
    if images is not None and image_processor is not None:
        rows = _nested_images(images, image.input_ids.shape[0])
        perturbed = [[perturbation(picture) for picture in row] for row in rows]
        return _reprocessed_branch(image, family, image_processor, perturbed)
    pixels = image.inputs["pixel_values"]
    perturbed_pixels = perturbation(pixels)
    if not isinstance(perturbed_pixels, torch.Tensor) or perturbed_pixels.shape != pixels.shape:
        raise ValueError(
            f"perturbation must return a tensor of the shape of pixel_values {tuple(pixels.shape)} (or pass "
            "images= and image_processor= to perturb PIL images)"
        )
    return image.with_inputs({"pixel_values": perturbed_pixels})


def noised_branch(
    model: PreTrainedModel,
    image: Branch,
    perturbation_seed: int | Sequence[int],
    noise_step: int,
    noise_schedule: str,
) -> Branch:
    """VCD's ``v'``: the image branch with forward diffusion noise on its pixels, seeded per row."""
    generators = row_generators(perturbation_seed, image.input_ids.shape[0])
    pixels = noised_pixels(image.input_ids, image.inputs, model, generators, noise_step, noise_schedule)
    return image.with_inputs({"pixel_values": pixels})


def transformed_branch(
    image: Branch,
    family: VisionFamily,
    images: Any,
    image_processor: Any,
    perturbation_seed: int | Sequence[int],
    transforms: Sequence[str],
    method: str,
) -> Branch:
    """RITUAL's ``T(v)``: each PIL image randomly transformed (seeded per row) and re-processed."""
    if images is None or image_processor is None:
        raise ValueError(
            f"{method} transforms the image before the processor: pass images=[PIL image per row] and "
            "image_processor=processor (the one that built the inputs), or perturbed_inputs=..."
        )
    rows = _nested_images(images, image.input_ids.shape[0])
    generators = row_generators(perturbation_seed, len(rows))
    return _reprocessed_branch(
        image, family, image_processor, transformed_images(rows, generators, transforms)
    )


def no_image_branch(
    model: PreTrainedModel, image: Branch, image_token_ids: Sequence[int] | None, pad_token_id: int
) -> Branch:
    """VDD's ``x``: the prompt without its image tokens (``image_token_ids``, default: the model config's)."""
    ids = list(image_token_ids) if image_token_ids is not None else config_image_token_ids(model)
    stripped_ids, stripped_mask = strip_image_tokens(
        image.input_ids, image.inputs.get("attention_mask"), ids, pad_token_id
    )
    return Branch(stripped_ids, {"attention_mask": stripped_mask})
