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

Each method here is its branches and its contrast: :func:`_prepare` checks the call and builds the image branch
once for all four, :mod:`.vision_inputs` builds the perturbed branches, :mod:`.vision_branches` runs them, and
the math is the method's file in :mod:`contrastive_decoding.decoding` (``vcd``, ``ritual``, ``ritual_vcd``,
``vdd``). The supported families: :mod:`.vision_families`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from ...decoding.perturbations import RITUAL_TRANSFORMS
from ...decoding.ritual import RitualConfig, ritual_contrast
from ...decoding.ritual_vcd import RitualVcdConfig, ritual_vcd_contrast
from ...decoding.vcd import VcdConfig, vcd_contrast
from ...decoding.vdd import VddConfig, vdd_contrast
from ...samplers.seeding import SeedArg
from .loop import LoopControls, generate_streamer, run_decode_loop
from .vision_branches import Branch, ImageContrastStepper
from .vision_families import VisionFamily, vision_family
from .vision_inputs import (
    expand_image_inputs,
    given_branch,
    no_image_branch,
    noised_branch,
    perturbed_branch,
    split_model_kwargs,
    transformed_branch,
)


def _model_inputs(
    model_kwargs: dict[str, Any],
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    pixel_attention_mask: torch.Tensor | None,
    image_sizes: torch.Tensor | None,
) -> dict[str, Any]:
    # The image inputs are named parameters of the callables so that generate hands them over as given:
    # otherwise transformers >= 5 encodes them first and passes only the image features, and the perturbed
    # branches need the pixels.
    given = dict(
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        pixel_attention_mask=pixel_attention_mask,
        image_sizes=image_sizes,
    )
    return {**model_kwargs, **{key: value for key, value in given.items() if value is not None}}


@dataclass(frozen=True)
class _Prepared:
    """What every image method starts from: the model, its family, the loop controls and the image branch."""

    model: PreTrainedModel
    family: VisionFamily
    controls: LoopControls
    image: Branch  # the rows given to generate, their image inputs repeated as generate repeated the rows


def _prepare(
    model: PreTrainedModel,
    method: str,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriteriaList | None,
    generation_config: GenerationConfig | None,
    inputs: dict[str, Any],
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
) -> _Prepared:
    """The checks and the image branch every image method shares (one error each for a text-only model, beam
    search, a missing image, ``inputs_embeds``)."""
    family = vision_family(model, method)
    generation_config = generation_config if generation_config is not None else model.generation_config
    if (generation_config.num_beams or 1) > 1:
        raise ValueError(f"{method} does not support beam search (num_beams={generation_config.num_beams})")
    inputs = split_model_kwargs(inputs)
    if inputs.get("pixel_values") is None:
        raise ValueError(
            f"{method} needs an image: pass the processor's outputs (pixel_values{', image_grid_thw' if 'qwen' in model.config.model_type else ''}) "
            "to generate, e.g. model.generate(**processor(images=..., text=..., return_tensors='pt'), ...)"
        )
    if "inputs_embeds" in inputs:
        raise ValueError(f"{method} takes input_ids with image inputs; inputs_embeds is not supported here")
    inputs = expand_image_inputs(inputs, input_ids, model)
    controls = LoopControls.from_generate(
        logits_processor, stopping_criteria, generation_config, generate_streamer(), seed, top_n_sigma
    )
    return _Prepared(model, family, controls, Branch(input_ids, inputs))


def _user_branch(
    run: _Prepared,
    perturbed_inputs: dict[str, Any] | None,
    perturbation: Callable[[Any], Any] | None = None,
    images: Any = None,
    image_processor: Any = None,
) -> Branch | None:
    """The perturbed branch the user gave: ``perturbed_inputs``, else ``perturbation``; None for neither."""
    if perturbed_inputs is not None:
        return given_branch(run.image, perturbed_inputs)
    if perturbation is not None:
        return perturbed_branch(run.image, run.family, images, image_processor, perturbation)
    return None


def _decode(run: _Prepared, perturbed: list[Branch], contrast: Callable[..., torch.Tensor], cfg: Any) -> Any:
    """Decode the image branch and its ``perturbed`` branches in lockstep, scored by
    ``contrast(image_logits, *perturbed_logits, cfg)``."""
    stepper = ImageContrastStepper(run.model, [run.image, *perturbed], lambda logits: contrast(*logits, cfg))
    return run_decode_loop(run.image.input_ids, stepper, run.controls, run.image.inputs.get("attention_mask"))


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
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
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
    cfg = VcdConfig(
        vcd_alpha=vcd_alpha, vcd_beta=vcd_beta, noise_step=noise_step, noise_schedule=noise_schedule
    )
    inputs = _model_inputs(model_kwargs, pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)
    run = _prepare(
        model,
        "vcd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        inputs,
        seed,
        top_n_sigma,
    )
    noised = _user_branch(run, perturbed_inputs, perturbation, images, image_processor)
    if noised is None:
        noised = noised_branch(model, run.image, perturbation_seed, cfg.noise_step, cfg.noise_schedule)
    return _decode(run, [noised], vcd_contrast, cfg)


def ritual(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    ritual_alpha_pos: float = 3.0,
    ritual_beta: float = 0.1,
    ritual_transforms: Sequence[str] = RITUAL_TRANSFORMS,
    perturbation_seed: int | Sequence[int] = 0,
    images: Any = None,
    image_processor: Any = None,
    perturbation: Callable[[Any], Any] | None = None,
    perturbed_inputs: dict[str, Any] | None = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
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
    cfg = RitualConfig(ritual_alpha_pos=ritual_alpha_pos, ritual_beta=ritual_beta)
    inputs = _model_inputs(model_kwargs, pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)
    run = _prepare(
        model,
        "ritual",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        inputs,
        seed,
        top_n_sigma,
    )
    transformed = _user_branch(run, perturbed_inputs, perturbation, images, image_processor)
    if transformed is None:
        transformed = transformed_branch(
            run.image, run.family, images, image_processor, perturbation_seed, ritual_transforms, "ritual"
        )
    return _decode(run, [transformed], ritual_contrast, cfg)


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
    ritual_transforms: Sequence[str] = RITUAL_TRANSFORMS,
    perturbation_seed: int | Sequence[int] = 0,
    images: Any = None,
    image_processor: Any = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """RITUAL + VCD: ``(1 + a) l(y|v,x) + alpha_pos l(y|T(v),x) - a l(y|v',x)``; the image, transformed and
    noised rows run in one forward."""
    cfg = RitualVcdConfig(
        ritual_alpha_pos=ritual_alpha_pos,
        vcd_alpha=vcd_alpha,
        vcd_beta=vcd_beta,
        noise_step=noise_step,
        noise_schedule=noise_schedule,
    )
    inputs = _model_inputs(model_kwargs, pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)
    run = _prepare(
        model,
        "ritual_vcd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        inputs,
        seed,
        top_n_sigma,
    )
    transformed = transformed_branch(
        run.image, run.family, images, image_processor, perturbation_seed, ritual_transforms, "ritual_vcd"
    )
    noised = noised_branch(model, run.image, perturbation_seed, cfg.noise_step, cfg.noise_schedule)
    return _decode(run, [transformed, noised], ritual_vcd_contrast, cfg)


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
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """No-image contrast (VDD): ``(1 + vdd_alpha) l(y|v,x) - vdd_alpha l(y|x)`` on the head.

    ``x`` alone is the prompt with every image token removed: ``image_token_ids`` (default: the ids in the
    model config; :func:`~.vision_families.processor_image_token_ids` also finds Idefics3's tile markers), or the prompt you
    give as ``perturbed_inputs={"input_ids": ..., "attention_mask": ...}``."""
    cfg = VddConfig(vdd_alpha=vdd_alpha, vdd_beta=vdd_beta)
    inputs = _model_inputs(model_kwargs, pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)
    run = _prepare(
        model,
        "vdd",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        inputs,
        seed,
        top_n_sigma,
    )
    without = _user_branch(run, perturbed_inputs)
    if without is None:
        pad = run.controls.generation_config.pad_token_id
        without = no_image_branch(model, run.image, image_token_ids, 0 if pad is None else int(pad))
    return _decode(run, [without], vdd_contrast, cfg)


def image_greedy(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    **model_kwargs: Any,
) -> Any:
    """Plain decoding of a VLM through our loop: the image branch alone (greedy: ``generate``'s tokens), for
    sampling with a per-row ``seed`` like the image methods."""
    inputs = _model_inputs(model_kwargs, pixel_values, image_grid_thw, pixel_attention_mask, image_sizes)
    run = _prepare(
        model,
        "plain",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        inputs,
        seed,
        top_n_sigma,
    )
    return _decode(run, [], lambda logits, cfg: logits, None)
