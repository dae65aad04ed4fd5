"""Image-perturbation contrast for transformers vision-language models: VCD, RITUAL, RITUAL + VCD, VDD.

    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    model.generate(**inputs, custom_generate=contrastive_decoding.hf.vcd, vcd_alpha=1.0, max_new_tokens=64)

The rows given to ``generate`` are the *image branch* ``l(y | v, x)``. Each method adds one or two branches of
the same prompts with a perturbed image (VCD: diffusion noise; RITUAL: a random transformation) or without
the image (VDD). A branch is a batch of rows with its own KV cache, driven by the model's own generation hooks
(``prepare_inputs_for_generation`` and the model-kwargs update of ``generate``'s loop), so the multimodal
plumbing of each family (LLaVA's image features, Qwen2-VL's 3-D rotary positions, Idefics3's image tiles)
stays the model's. Branches whose prompt tokens are the image branch's (VCD, RITUAL) ride in the same
forward as extra rows; branches with other tokens (VDD, user embeddings) run their own forward.

The math is in :mod:`contrastive_decoding.decoding.image`; here we only build the branch inputs and move
tensors.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
)

from ...decoding import image as image_math
from .loop import LoopControls, generate_streamer, run_decode_loop
from .runner import select_cache_rows

# Keys of the image inputs a processor returns next to input_ids / attention_mask.
IMAGE_INPUT_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes")
# Keys that generate() adds for its own loop; every branch rebuilds them for itself.
GENERATE_STATE_KEYS = frozenset(
    {"past_key_values", "use_cache", "position_ids", "logits_to_keep", "cache_position"}
)
# Per-token inputs that are aligned with input_ids (dropped with the image for VDD's prompt).
TOKEN_ALIGNED_KEYS = ("mm_token_type_ids", "token_type_ids")


@dataclass(frozen=True)
class VisionFamily:
    """What differs between the supported VLM families, as far as image contrast is concerned."""

    name: str
    nested_images: bool  # the image processor takes one list of images per prompt (Idefics3 / SmolVLM)
    image_token_attributes: tuple[str, ...]  # config attributes holding ids that stand for the image


VISION_FAMILIES: dict[str, VisionFamily] = {
    "llava": VisionFamily("LLaVA", False, ("image_token_index", "image_token_id")),
    "qwen2_vl": VisionFamily(
        "Qwen2-VL", False, ("image_token_id", "vision_start_token_id", "vision_end_token_id")
    ),
    "qwen2_5_vl": VisionFamily(
        "Qwen2.5-VL", False, ("image_token_id", "vision_start_token_id", "vision_end_token_id")
    ),
    "idefics3": VisionFamily("Idefics3", True, ("image_token_id",)),
    "smolvlm": VisionFamily("SmolVLM", True, ("image_token_id",)),
}

# Token strings that belong to an image in the prompt, besides the image placeholder itself:
# Qwen2-VL's vision start / end, Idefics3 / SmolVLM's tile markers and global-image tag.
_IMAGE_MARKER = re.compile(
    r"^(<image>|<\|image_pad\|>|<\|vision_start\|>|<\|vision_end\|>|<fake_token_around_image>|<global-img>"
    r"|<row_\d+_col_\d+>)$"
)


def vision_family(model: PreTrainedModel, method: str) -> VisionFamily:
    """The model's family, or one clear error for text-only models and unsupported VLMs."""
    model_type = model.config.model_type
    if model_type in VISION_FAMILIES:
        return VISION_FAMILIES[model_type]
    if getattr(model.config, "vision_config", None) is None:
        raise ValueError(
            f"{method} contrasts images: it needs a vision-language model, and {type(model).__name__} "
            f"({model_type}) is text-only. Supported: LLaVA, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM."
        )
    raise ValueError(
        f"{method} supports LLaVA, Qwen2-VL / Qwen2.5-VL and Idefics3 / SmolVLM; {type(model).__name__} "
        f"({model_type}) is not supported."
    )


def config_image_token_ids(model: PreTrainedModel) -> list[int]:
    """Ids that stand for the image in prompts, from the model config (see :func:`processor_image_token_ids`)."""
    family = vision_family(model, "no-image contrast")
    ids = []
    for name in family.image_token_attributes:
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    return ids


def processor_image_token_ids(processor: Any) -> list[int]:
    """Every token id of a processor's tokenizer that belongs to an image in the prompt: the placeholder and
    the markers around it (Qwen2-VL's vision start / end, Idefics3's tile and global-image tags)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    vocab = tokenizer.get_vocab()
    return sorted(index for token, index in vocab.items() if _IMAGE_MARKER.match(token))


# ------------------------------------------------------------------------------------------------------------
# Branch inputs
# ------------------------------------------------------------------------------------------------------------


def split_model_kwargs(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model inputs the user gave to generate (attention mask, image inputs, ...), without generate's
    loop state (cache, positions), which every branch rebuilds for itself."""
    inputs = {k: v for k, v in model_kwargs.items() if k not in GENERATE_STATE_KEYS and v is not None}
    if not inputs.get("mm_encoder_outputs", True):  # generate leaves an empty dict when it encoded nothing
        del inputs["mm_encoder_outputs"]
    return inputs


def row_generators(perturbation_seed: int | Sequence[int], batch_size: int) -> list[torch.Generator]:
    """One generator per row: an int seed gives row ``b`` ``seeded_generator(seed, b)``; a list gives row
    ``b`` ``seeded_generator(seeds[b], 0)``, so a row's perturbation can be reproduced outside its batch."""
    if isinstance(perturbation_seed, int) and not isinstance(perturbation_seed, bool):
        return [image_math.seeded_generator(perturbation_seed, row) for row in range(batch_size)]
    seeds = list(perturbation_seed)
    if len(seeds) != batch_size:
        raise ValueError(
            f"perturbation_seed must be an int or one int per row ({batch_size}), got {len(seeds)} seeds"
        )
    return [image_math.seeded_generator(int(seed), 0) for seed in seeds]


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
        noisy = image_math.diffusion_noise(shaped, noise_step, schedule=noise_schedule, generator=generator)
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
        [image_math.random_transform(image, generators[row], transforms)[0] for image in row_images]
        for row, row_images in enumerate(images)
    ]


# ------------------------------------------------------------------------------------------------------------
# Runner and stepper
# ------------------------------------------------------------------------------------------------------------


class BranchRunner:
    """A batch of VLM prompts with its own KV cache, advanced one token per row per step.

    It calls the model the way ``generate``'s own loop does: positions prepared by the model
    (``_prepare_position_ids_for_generation``: 3-D rotary positions for Qwen2-VL), inputs by
    ``prepare_inputs_for_generation`` (image inputs on the prefill only), and the model kwargs advanced with
    ``_update_model_kwargs_for_generation``. Zero contrast therefore gives plain ``generate``'s tokens.
    """

    def __init__(self, model: PreTrainedModel, input_ids: torch.Tensor, inputs: dict[str, Any]):
        self.model = model
        kwargs = {k: v for k, v in inputs.items() if v is not None and k not in GENERATE_STATE_KEYS}
        embeds = kwargs.get("inputs_embeds")
        batch, length = embeds.shape[:2] if embeds is not None else input_ids.shape
        self.input_ids = input_ids if embeds is None else input_ids.new_zeros((batch, 0))
        if kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones((batch, length), dtype=torch.long, device=input_ids.device)
        if "position_ids" in inspect.signature(model.forward).parameters:
            first = embeds if embeds is not None else input_ids
            kwargs["position_ids"] = model._prepare_position_ids_for_generation(first, kwargs)
        if bool((kwargs["attention_mask"] == 1).all()):
            kwargs["attention_mask"] = None  # as generate: no padding, no mask (same attention kernels)
        kwargs["past_key_values"] = DynamicCache(config=model.config)
        kwargs["use_cache"] = True
        if model._supports_logits_to_keep():
            kwargs["logits_to_keep"] = 1
        self.kwargs = kwargs
        self.outputs = None  # the latest forward's (hidden states / attentions when generate asked for them)

    def _run(self, **prepare: Any) -> torch.Tensor:  # [B, V] float32
        inputs = self.model.prepare_inputs_for_generation(self.input_ids, **prepare, **self.kwargs)
        outputs = self.model(**inputs, return_dict=True)
        self.kwargs = self.model._update_model_kwargs_for_generation(outputs, self.kwargs)
        self.outputs = outputs
        return outputs.logits[:, -1].float()

    def prefill(self) -> torch.Tensor:  # [B, V]
        return self._run(is_first_iteration=True)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens [B] -> [B, V]
        self.input_ids = torch.cat([self.input_ids, tokens[:, None].to(self.input_ids.device)], dim=-1)
        return self._run(next_sequence_length=1)


@dataclass
class Branch:
    """The inputs of one branch: ``input_ids`` [B, S] and model inputs (mask, image inputs or embeds)."""

    input_ids: torch.Tensor
    inputs: dict[str, Any]


def _can_share_forward(first: Branch, other: Branch) -> bool:
    """Same prompt tokens, same kinds of inputs: the other branch can ride as extra rows."""
    if "inputs_embeds" in first.inputs or "inputs_embeds" in other.inputs:
        return False
    if first.input_ids.shape != other.input_ids.shape or not torch.equal(first.input_ids, other.input_ids):
        return False
    return set(first.inputs) == set(other.inputs)


def _concat_inputs(branches: list[Branch]) -> Branch:
    input_ids = torch.cat([b.input_ids for b in branches])
    inputs = {}
    for key, value in branches[0].inputs.items():
        if isinstance(value, torch.Tensor):
            inputs[key] = torch.cat([b.inputs[key] for b in branches])
        else:
            inputs[key] = value
    return Branch(input_ids, inputs)


class ImageContrastStepper:
    """The image branch and its perturbed branches advanced in lockstep; ``combine`` forms the scores
    from their last-position logits (image branch first)."""

    def __init__(
        self,
        model: PreTrainedModel,
        branches: list[Branch],
        combine: Callable[[list[torch.Tensor]], torch.Tensor],
    ):
        self.combine = combine
        self.batch_size = branches[0].input_ids.shape[0]
        # Group branches that can share the image branch's forward; the rest run their own.
        shared = [index for index, b in enumerate(branches) if _can_share_forward(branches[0], b)]
        groups = [shared] + [[index] for index in range(len(branches)) if index not in shared]
        self.groups = groups
        self.runners = [
            BranchRunner(model, merged.input_ids, merged.inputs)
            for merged in (_concat_inputs([branches[i] for i in group]) for group in groups)
        ]

    def _scores(self, per_runner: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits: dict[int, torch.Tensor] = {}
        for group, runner_logits in zip(self.groups, per_runner, strict=True):
            for position, index in enumerate(group):
                rows = slice(position * self.batch_size, (position + 1) * self.batch_size)
                logits[index] = runner_logits[rows]
        ordered = [logits[index].to(logits[0].device) for index in range(len(logits))]
        return self.combine(ordered), ordered[0]

    def start(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores([runner.prefill() for runner in self.runners])

    def choose(self, input_ids: torch.Tensor, processed_scores: torch.Tensor) -> None:
        return None

    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._scores(
            [
                runner.step(tokens.repeat(len(group)))
                for group, runner in zip(self.groups, self.runners, strict=True)
            ]
        )

    def model_outputs(self) -> tuple[tuple | None, tuple | None]:
        """The image branch's (its rows lead the first runner, in the caller's layout)."""
        outputs, rows = self.runners[0].outputs, slice(0, self.batch_size)
        hidden = getattr(outputs, "hidden_states", None)
        attentions = getattr(outputs, "attentions", None)
        return (
            None if hidden is None else tuple(h[rows] for h in hidden),
            None if attentions is None else tuple(a[rows] for a in attentions),
        )

    def past_key_values(self):
        return select_cache_rows(self.runners[0].kwargs["past_key_values"], slice(0, self.batch_size))


# ------------------------------------------------------------------------------------------------------------
# custom_generate callables
# ------------------------------------------------------------------------------------------------------------


def _image_inputs(pixel_values, image_grid_thw, pixel_attention_mask, image_sizes) -> dict[str, Any]:
    # The image inputs are named parameters of the callables so that generate hands them over as given:
    # otherwise transformers >= 5 encodes them first and passes only the image features, and the perturbed
    # branches need the pixels.
    given = dict(
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        pixel_attention_mask=pixel_attention_mask,
        image_sizes=image_sizes,
    )
    return {key: value for key, value in given.items() if value is not None}


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


def _prepare_image_method(
    model: PreTrainedModel,
    method: str,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriteriaList | None,
    generation_config: GenerationConfig | None,
    model_kwargs: dict[str, Any],
) -> tuple[VisionFamily, LoopControls, Branch]:
    family = vision_family(model, method)
    generation_config = generation_config if generation_config is not None else model.generation_config
    if (generation_config.num_beams or 1) > 1:
        raise ValueError(f"{method} does not support beam search (num_beams={generation_config.num_beams})")
    inputs = split_model_kwargs(model_kwargs)
    if inputs.get("pixel_values") is None:
        raise ValueError(
            f"{method} needs an image: pass the processor's outputs (pixel_values{', image_grid_thw' if 'qwen' in model.config.model_type else ''}) "
            "to generate, e.g. model.generate(**processor(images=..., text=..., return_tensors='pt'), ...)"
        )
    if "inputs_embeds" in inputs:
        raise ValueError(f"{method} takes input_ids with image inputs; inputs_embeds is not supported here")
    inputs = expand_image_inputs(inputs, input_ids, model)
    controls = LoopControls.from_generate(
        logits_processor, stopping_criteria, generation_config, generate_streamer()
    )
    return family, controls, Branch(input_ids, inputs)


def _branch_from_inputs(image: Branch, perturbed_inputs: dict[str, Any], name: str) -> Branch:
    """A user-supplied branch: its inputs replace the image branch's (e.g. only ``pixel_values``), or a
    whole prompt (``input_ids`` / ``inputs_embeds`` with their ``attention_mask``)."""
    if not isinstance(perturbed_inputs, dict) or not perturbed_inputs:
        raise ValueError(f"{name} must be a dict of model inputs, e.g. {{'pixel_values': tensor}}")
    given = dict(perturbed_inputs)
    batch = image.input_ids.shape[0]
    for key, value in given.items():
        if isinstance(value, torch.Tensor) and key in ("input_ids", "inputs_embeds", "attention_mask"):
            if value.shape[0] != batch:
                raise ValueError(f"{name}[{key!r}] has {value.shape[0]} rows, the batch has {batch}")
    if "input_ids" in given or "inputs_embeds" in given:  # a whole prompt of its own
        input_ids = given.pop("input_ids", None)
        if input_ids is None:
            input_ids = image.input_ids.new_zeros((batch, 0))
        return Branch(input_ids.to(image.input_ids.device), given)
    return Branch(image.input_ids, {**image.inputs, **given})


def _user_perturbed_branch(
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
        return Branch(
            image.input_ids,
            {**image.inputs, **processed_images(image_processor, perturbed, family, image.inputs)},
        )
    pixels = image.inputs["pixel_values"]
    perturbed_pixels = perturbation(pixels)
    if not isinstance(perturbed_pixels, torch.Tensor) or perturbed_pixels.shape != pixels.shape:
        raise ValueError(
            f"perturbation must return a tensor of the shape of pixel_values {tuple(pixels.shape)} (or pass "
            "images= and image_processor= to perturb PIL images)"
        )
    return Branch(image.input_ids, {**image.inputs, "pixel_values": perturbed_pixels})


def _noised_branch(model, image: Branch, perturbation_seed, noise_step: int, noise_schedule: str) -> Branch:
    generators = row_generators(perturbation_seed, image.input_ids.shape[0])
    pixels = noised_pixels(image.input_ids, image.inputs, model, generators, noise_step, noise_schedule)
    return Branch(image.input_ids, {**image.inputs, "pixel_values": pixels})


def _transformed_branch(
    image: Branch, family: VisionFamily, images, image_processor, perturbation_seed, transforms, method: str
) -> Branch:
    if images is None or image_processor is None:
        raise ValueError(
            f"{method} transforms the image before the processor: pass images=[PIL image per row] and "
            "image_processor=processor (the one that built the inputs), or perturbed_inputs=..."
        )
    rows = _nested_images(images, image.input_ids.shape[0])
    generators = row_generators(perturbation_seed, len(rows))
    perturbed = transformed_images(rows, generators, transforms)
    return Branch(
        image.input_ids,
        {**image.inputs, **processed_images(image_processor, perturbed, family, image.inputs)},
    )


def _no_image_branch(model, image: Branch, image_token_ids, pad_token_id: int) -> Branch:
    ids = list(image_token_ids) if image_token_ids is not None else config_image_token_ids(model)
    stripped_ids, stripped_mask = image_math.strip_image_tokens(
        image.input_ids, image.inputs.get("attention_mask"), ids, pad_token_id
    )
    return Branch(stripped_ids, {"attention_mask": stripped_mask})


def _run(model, method, controls, input_ids, branches, combine):
    stepper = ImageContrastStepper(model, branches, combine)
    return run_decode_loop(input_ids, stepper, controls, branches[0].inputs.get("attention_mask"))


def vcd(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    vcd_alpha: float = 1.0,
    vcd_beta: float = 0.1,
    noise_step: int = 500,
    noise_schedule: str = "linear",
    perturbation_seed: int | Sequence[int] = 0,
    images: Any = None,
    image_processor: Any = None,
    perturbation: Callable[[Any], Any] | None = None,
    perturbed_inputs: dict[str, Any] | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """VCD: ``(1 + vcd_alpha) l(y|v,x) - vcd_alpha l(y|v',x)`` on the head ``p >= vcd_beta * max p``.

    ``v'`` is, by default, the processed image after forward diffusion noise at ``noise_step`` (seeded per
    row by ``perturbation_seed``). Replace it with ``perturbation`` (a callable on each PIL image when
    ``images`` and ``image_processor`` are given, else on the ``pixel_values`` tensor) or with precomputed
    ``perturbed_inputs`` (e.g. ``{"pixel_values": ...}``, or ``{"inputs_embeds": ..., "attention_mask": ...}``
    for learned negatives such as DCD's)."""
    cfg = image_math.VcdConfig(
        vcd_alpha=vcd_alpha, vcd_beta=vcd_beta, noise_step=noise_step, noise_schedule=noise_schedule
    )
    family, controls, image = _prepare_image_method(
        model,
        "vcd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        {**model_kwargs, **_image_inputs(pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)},
    )
    if perturbed_inputs is not None:
        perturbed = _branch_from_inputs(image, perturbed_inputs, "perturbed_inputs")
    elif perturbation is not None:
        perturbed = _user_perturbed_branch(image, family, images, image_processor, perturbation)
    else:
        perturbed = _noised_branch(model, image, perturbation_seed, cfg.noise_step, cfg.noise_schedule)
    combine = lambda logits: image_math.vcd_contrast(logits[0], logits[1], cfg)  # noqa: E731
    return _run(model, "vcd", controls, input_ids, [image, perturbed], combine)


def ritual(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    ritual_alpha_pos: float = 3.0,
    ritual_beta: float = 0.1,
    ritual_transforms: Sequence[str] = image_math.RITUAL_TRANSFORMS,
    perturbation_seed: int | Sequence[int] = 0,
    images: Any = None,
    image_processor: Any = None,
    perturbation: Callable[[Any], Any] | None = None,
    perturbed_inputs: dict[str, Any] | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """RITUAL: ``l(y|v,x) + ritual_alpha_pos l(y|T(v),x)`` on the head ``p >= ritual_beta * max p``.

    ``T`` is one random transformation per image (flip, rotation, colour jitter, blur, resized crop; seeded
    per row), applied to the PIL ``images`` and re-processed with ``image_processor``. ``perturbation`` /
    ``perturbed_inputs`` replace it as for :func:`vcd`."""
    cfg = image_math.RitualConfig(ritual_alpha_pos=ritual_alpha_pos, ritual_beta=ritual_beta)
    family, controls, image = _prepare_image_method(
        model,
        "ritual",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        {**model_kwargs, **_image_inputs(pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)},
    )
    if perturbed_inputs is not None:
        transformed = _branch_from_inputs(image, perturbed_inputs, "perturbed_inputs")
    elif perturbation is not None:
        transformed = _user_perturbed_branch(image, family, images, image_processor, perturbation)
    else:
        transformed = _transformed_branch(
            image, family, images, image_processor, perturbation_seed, ritual_transforms, "ritual"
        )
    combine = lambda logits: image_math.ritual_contrast(logits[0], logits[1], cfg)  # noqa: E731
    return _run(model, "ritual", controls, input_ids, [image, transformed], combine)


def ritual_vcd(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    ritual_alpha_pos: float = 3.0,
    vcd_alpha: float = 1.0,
    vcd_beta: float = 0.1,
    noise_step: int = 500,
    noise_schedule: str = "linear",
    ritual_transforms: Sequence[str] = image_math.RITUAL_TRANSFORMS,
    perturbation_seed: int | Sequence[int] = 0,
    images: Any = None,
    image_processor: Any = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """RITUAL + VCD: ``(1 + a) l(y|v,x) + alpha_pos l(y|T(v),x) - a l(y|v',x)``; the image, transformed and
    noised rows run in one forward."""
    cfg = image_math.RitualVcdConfig(
        ritual_alpha_pos=ritual_alpha_pos,
        vcd_alpha=vcd_alpha,
        vcd_beta=vcd_beta,
        noise_step=noise_step,
        noise_schedule=noise_schedule,
    )
    family, controls, image = _prepare_image_method(
        model,
        "ritual_vcd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        {**model_kwargs, **_image_inputs(pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)},
    )
    transformed = _transformed_branch(
        image, family, images, image_processor, perturbation_seed, ritual_transforms, "ritual_vcd"
    )
    noised = _noised_branch(model, image, perturbation_seed, cfg.noise_step, cfg.noise_schedule)
    combine = lambda logits: image_math.ritual_vcd_contrast(logits[0], logits[1], logits[2], cfg)  # noqa: E731
    return _run(model, "ritual_vcd", controls, input_ids, [image, transformed, noised], combine)


def vdd(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    vdd_alpha: float = 1.0,
    vdd_beta: float = 0.1,
    image_token_ids: Sequence[int] | None = None,
    perturbed_inputs: dict[str, Any] | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """No-image contrast (VDD): ``(1 + vdd_alpha) l(y|v,x) - vdd_alpha l(y|x)`` on the head.

    ``x`` alone is the prompt with every image token removed: ``image_token_ids`` (default: the ids in the
    model config; :func:`processor_image_token_ids` also finds Idefics3's tile markers), or the prompt you
    give as ``perturbed_inputs={"input_ids": ..., "attention_mask": ...}``."""
    cfg = image_math.VddConfig(vdd_alpha=vdd_alpha, vdd_beta=vdd_beta)
    family, controls, image = _prepare_image_method(
        model,
        "vdd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        {**model_kwargs, **_image_inputs(pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)},
    )
    if perturbed_inputs is not None:
        without = _branch_from_inputs(image, perturbed_inputs, "perturbed_inputs")
    else:
        pad = controls.generation_config.pad_token_id
        without = _no_image_branch(model, image, image_token_ids, 0 if pad is None else int(pad))
    combine = lambda logits: image_math.vdd_contrast(logits[0], logits[1], cfg)  # noqa: E731
    return _run(model, "vdd", controls, input_ids, [image, without], combine)
