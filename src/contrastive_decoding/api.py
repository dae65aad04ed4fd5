"""``generate(model, tokenizer, prompts, method=..., **params)``: text in, text out, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .decoding import registry
from .decoding.spec import AMATEUR, CONDITIONS, CONTEXT_FREE_PROMPT, IMAGE
from .generation import SAMPLING_PARAMETERS, GenerationOutput, sampling_kwargs
from .method_call import MethodCall, method_call, split_parameters
from .models import use_left_padding

__all__ = [
    "SAMPLING_PARAMETERS",
    "GenerationOutput",
    "MethodCall",
    "generate",
    "generate_outputs",
    "method_call",
    "sampling_kwargs",
    "split_parameters",
]


def _hf_function(call: MethodCall):
    """The ``custom_generate`` callable of the method; None for plain decoding (transformers' own generate)."""
    if call.name == registry.PLAIN:
        return None
    return registry.load(call.spec.hf_function)


def context_limit(model) -> int | None:
    """The model's context length in tokens, from its text config, or None when it does not say."""
    config = model.config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def generate_outputs(
    model,
    tokenizer,
    prompts: Sequence[str],
    method: str | MethodCall = "plain",
    *,
    context_free_prompts: Sequence[str] | None = None,
    amateur_model=None,
    amateur_tokenizer=None,
    images: Sequence[Any] | None = None,
    conditions: Sequence[Any] | None = None,
    amateur_instruction: str | None = None,
    truthful_instruction: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    **params: Any,
) -> list[GenerationOutput]:
    """Generate with ``method`` for every prompt; returns texts, new token ids and per-row extras.

    Image methods (vcd, ritual, ritual_vcd, vdd) and ``images`` (one PIL image or file path per prompt) need
    a vision-language model and its processor in place of ``tokenizer``; a prompt without the processor's
    image token gets it prepended.

    ``condition_contrast`` takes ``conditions``, one entry per prompt marking its conditions: a list of substrings
    of the prompt (first occurrence), a list of ``(start, end)`` character spans, or a dict of slot values when
    the prompt is a template with ``{slot}`` fields. Each output's ``extras["condition_effects"]`` maps every
    condition to its mean effect (JSD, nats; the smallest is the overshadowed one).

    ``layer_fusion`` contrasts with ``amateur_model`` when given, else with the model itself given
    ``amateur_instruction`` (default: a hallucination-inducing instruction) before each prompt; with
    ``refocus_weight > 0`` its refocus branch is the prompt after ``truthful_instruction``.

    ``method`` is a method name (with its parameters in ``params``) or a :class:`MethodCall` built once by the
    caller with :func:`method_call`."""
    call = method_call(method, **params)  # validate before loading anything else
    registry.check_generates(call.name)  # scoring-only methods (calibration) define nothing to decode
    spec = call.spec
    method = call.name
    method_params = call.params
    generate_kwargs, seed = sampling_kwargs(call.sampling)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if spec.takes(IMAGE) or images is not None:
        return _generate_with_images(
            model,
            tokenizer,
            prompts,
            call,
            images,
            generate_kwargs,
            seed,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
    if spec.takes(CONDITIONS):
        return _generate_with_conditions(
            model,
            tokenizer,
            prompts,
            call,
            conditions,
            generate_kwargs,
            seed,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
    if conditions is not None:
        raise ValueError(f"conditions are marked for condition_contrast; {method} does not take them")
    if spec.takes(CONTEXT_FREE_PROMPT):
        if context_free_prompts is None or len(context_free_prompts) != len(prompts):
            raise ValueError(
                f"{method} needs one context_free_prompt (the prompt without its context) per prompt"
            )
    if AMATEUR in spec.needs and amateur_model is None:
        raise ValueError(f"{method} needs an amateur model (a smaller model with the same tokenizer)")
    use_left_padding(tokenizer)
    limit = context_limit(model)
    function = _hf_function(call)
    extra: dict[str, Any] = dict(method_params)
    if amateur_model is not None and spec.takes(AMATEUR):  # other methods ignore it (side-by-side tables)
        extra.update(
            amateur_model=amateur_model, expert_tokenizer=tokenizer, amateur_tokenizer=amateur_tokenizer
        )
    if method == "rerank":  # its text scorers decode the prompts and candidates
        extra["lm_tokenizer"] = tokenizer
    if method != "layer_fusion" and (amateur_instruction is not None or truthful_instruction is not None):
        raise ValueError(
            "amateur_instruction / truthful_instruction are layer_fusion's; drop them for " + method
        )
    seeded = _seeded_kwargs(generate_kwargs, seed)
    if method == registry.PLAIN and (seeded or "top_n_sigma" in generate_kwargs):
        # transformers' own sampling draws from the global RNG and has no top-nσ: our loop keys each row
        function = registry.load(spec.hf_function)

    outputs: list[GenerationOutput] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        encoded = tokenizer(batch, return_tensors="pt", padding=True).to(model.device)
        lengths = encoded["attention_mask"].sum(-1).tolist()
        check_prompt_lengths(lengths, start, max_new_tokens, limit)
        call_kwargs = dict(extra)
        if method == "layer_fusion":
            call_kwargs.update(
                _layer_fusion_inputs(
                    tokenizer,
                    prompts[start : start + batch_size],
                    model.device,
                    induce=amateur_model is None,
                    refocus=bool(method_params.get("refocus_weight")),
                    amateur_instruction=amateur_instruction,
                    truthful_instruction=truthful_instruction,
                )
            )
        if spec.takes(CONTEXT_FREE_PROMPT):
            free = tokenizer(
                list(context_free_prompts[start : start + batch_size]), return_tensors="pt", padding=True
            )
            call_kwargs.update(
                context_free_input_ids=free["input_ids"].to(model.device),
                context_free_attention_mask=free["attention_mask"].to(model.device),
            )
        if function is not None:
            call_kwargs.update(custom_generate=function, **seeded)
        sequences = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **generate_kwargs,
            **call_kwargs,
        )
        outputs.extend(decoded_outputs(model, tokenizer, sequences, encoded["input_ids"].shape[1], lengths))
    return outputs


def _seeded_kwargs(generate_kwargs: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """``{"seed": seed}`` for the custom_generate callables when sampling with a seed: every row gets the seed,
    and its draw at output position t is keyed on (seed, t), so it samples what it samples alone."""
    return {"seed": seed} if generate_kwargs["do_sample"] and seed is not None else {}


def _generate_with_images(
    model,
    processor,
    prompts: list[str],
    call: MethodCall,
    images: Sequence[Any] | None,
    generate_kwargs: dict[str, Any],
    seed: int | None,
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[GenerationOutput]:
    from .backends.hf.vision import image_greedy
    from .backends.hf.vision_families import processor_image_token_ids, vision_family

    method, method_params = call.name, call.params

    family = vision_family(model, method)
    if getattr(processor, "image_processor", None) is None:
        raise ValueError(
            f"{method} needs the model's processor (images and text), not a tokenizer: load both with "
            "contrastive_decoding.models.load_model_and_tokenizer(path)"
        )
    if images is None or len(images) != len(prompts):
        got = "none" if images is None else len(images)
        raise ValueError(f"{method} needs one image per prompt ({len(prompts)} prompts, {got} images)")
    if not (call.spec.takes(IMAGE) or method == registry.PLAIN):
        image_methods = ", ".join(sorted(registry.taking(IMAGE)))
        raise ValueError(f"{method} does not take images; image methods: {image_methods}")
    pictures = [_load_image(image) for image in images]
    tokenizer = processor.tokenizer
    use_left_padding(tokenizer)
    image_token = getattr(processor, "image_token", None)
    texts = [p if not image_token or image_token in p else f"{image_token}\n{p}" for p in prompts]
    limit = context_limit(model)
    base_seed = 0 if seed is None else seed
    seeded = _seeded_kwargs(generate_kwargs, seed)
    outputs: list[GenerationOutput] = []
    for start in range(0, len(texts), batch_size):
        batch_images = pictures[start : start + batch_size]
        encoded = processor(
            images=[[image] for image in batch_images] if family.nested_images else batch_images,
            text=texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
        )
        encoded = {
            key: value.to(model.device, model.dtype) if value.is_floating_point() else value.to(model.device)
            for key, value in encoded.items()
            if isinstance(value, torch.Tensor)
        }
        lengths = encoded["attention_mask"].sum(-1).tolist()
        check_prompt_lengths(lengths, start, max_new_tokens, limit, " with its image")
        call_kwargs: dict[str, Any] = dict(method_params)
        if method in ("vcd", "ritual", "ritual_vcd"):
            call_kwargs["perturbation_seed"] = [base_seed + start + i for i in range(len(batch_images))]
        if method in ("ritual", "ritual_vcd"):
            call_kwargs.update(images=batch_images, image_processor=processor)
        if method == "vdd":
            call_kwargs["image_token_ids"] = processor_image_token_ids(processor)
        function = _hf_function(call)
        if method == registry.PLAIN and (seeded or "top_n_sigma" in generate_kwargs):
            function = image_greedy
        if function is not None:
            call_kwargs.update(custom_generate=function, **seeded)
        sequences = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **generate_kwargs,
            **call_kwargs,
        )
        outputs.extend(decoded_outputs(model, tokenizer, sequences, encoded["input_ids"].shape[1], lengths))
    return outputs


def _layer_fusion_inputs(
    tokenizer,
    prompts: Sequence[str],
    device,
    *,
    induce: bool,
    refocus: bool,
    amateur_instruction: str | None,
    truthful_instruction: str | None,
) -> dict[str, Any]:
    """The induced-amateur and refocus prompts of layer fusion, tokenized like the prompts."""
    from .decoding.layer_fusion import DEFAULT_AMATEUR_INSTRUCTION, DEFAULT_TRUTHFUL_INSTRUCTION

    kwargs: dict[str, Any] = {}
    branches = []
    if induce:
        branches.append(("amateur", amateur_instruction or DEFAULT_AMATEUR_INSTRUCTION))
    if refocus:
        branches.append(("refocus", truthful_instruction or DEFAULT_TRUTHFUL_INSTRUCTION))
    for name, instruction in branches:
        encoded = tokenizer([instruction + prompt for prompt in prompts], return_tensors="pt", padding=True)
        kwargs[f"{name}_input_ids"] = encoded["input_ids"].to(device)
        kwargs[f"{name}_attention_mask"] = encoded["attention_mask"].to(device)
    return kwargs


def resolve_conditions(prompt: str, marked: Any) -> tuple[str, list[str], list[str]]:
    """(full prompt, one prompt per condition without it, condition labels) from one prompt's marking."""
    from .decoding.condition import fill_template, prompts_without_spans

    if isinstance(marked, dict):
        full, dropped = fill_template(prompt, {str(k): str(v) for k, v in marked.items()})
        return full, list(dropped.values()), list(dropped)
    if not isinstance(marked, (list, tuple)) or not marked:
        raise ValueError(
            "condition_contrast needs at least one marked condition per prompt: substrings of the prompt, "
            "(start, end) character spans, or a dict of template slot values"
        )
    spans, labels = [], []
    for condition in marked:
        if isinstance(condition, str):
            start = prompt.find(condition)
            if not condition or start < 0:
                raise ValueError(f"condition {condition!r} does not occur in the prompt {prompt!r}")
            spans.append((start, start + len(condition)))
            labels.append(condition)
        elif isinstance(condition, (list, tuple)) and len(condition) == 2:
            start, end = (int(value) for value in condition)
            spans.append((start, end))
            labels.append(prompt[start:end] if 0 <= start < end <= len(prompt) else f"{start}:{end}")
        else:
            raise ValueError(f"a condition is a substring or a (start, end) span, got {condition!r}")
    return prompt, prompts_without_spans(prompt, spans), labels


def _generate_with_conditions(
    model,
    tokenizer,
    prompts: list[str],
    call: MethodCall,
    conditions: Sequence[Any] | None,
    generate_kwargs: dict[str, Any],
    seed: int | None,
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[GenerationOutput]:
    if conditions is None or len(conditions) != len(prompts):
        got = "none" if conditions is None else len(conditions)
        raise ValueError(
            f"condition_contrast needs one conditions entry per prompt ({len(prompts)} prompts, {got})"
        )
    resolved = [
        resolve_conditions(prompt, marked) for prompt, marked in zip(prompts, conditions, strict=True)
    ]
    use_left_padding(tokenizer)
    limit = context_limit(model)
    seeded = _seeded_kwargs(generate_kwargs, seed)
    outputs: list[GenerationOutput | None] = [None] * len(prompts)
    # rows with the same number of conditions share a batch
    by_count: dict[int, list[int]] = {}
    for index, (_, dropped, _) in enumerate(resolved):
        by_count.setdefault(len(dropped), []).append(index)
    for count, indices in by_count.items():
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            encoded = tokenizer([resolved[i][0] for i in rows], return_tensors="pt", padding=True).to(
                model.device
            )
            lengths = encoded["attention_mask"].sum(-1).tolist()
            for row, length in zip(rows, lengths, strict=True):
                check_prompt_lengths([length], row, max_new_tokens, limit)
            free_ids, free_masks = [], []
            for k in range(count):
                free = tokenizer([resolved[i][1][k] for i in rows], return_tensors="pt", padding=True)
                free_ids.append(free["input_ids"].to(model.device))
                free_masks.append(free["attention_mask"].to(model.device))
            result = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                custom_generate=_hf_function(call),
                condition_free_input_ids=free_ids,
                condition_free_attention_mask=free_masks,
                return_dict_in_generate=True,
                **generate_kwargs,
                **call.params,
                **seeded,
            )
            decoded = decoded_outputs(
                model, tokenizer, result.sequences, encoded["input_ids"].shape[1], lengths
            )
            for position, (row, output) in enumerate(zip(rows, decoded, strict=True)):
                effects = result.condition_effects[position].tolist()
                labels = resolved[row][2]
                output.extras = {
                    "condition_effects": dict(zip(labels, effects, strict=True)),
                    "overshadowed_condition": labels[min(range(count), key=effects.__getitem__)],
                }
                outputs[row] = output
    return [output for output in outputs if output is not None]


def _load_image(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except (OSError, TypeError) as error:
        raise ValueError(f"cannot read image {image!r}: {error}") from error


def generate(
    model, tokenizer, prompts: Sequence[str] | str, method: str | MethodCall = "plain", **kwargs: Any
) -> list[str]:
    """Generate text for each prompt with a decoding method; see :func:`generate_outputs` for the arguments.

    >>> generate(model, tokenizer, ["The capital of France is"], method="dola", dola_layers="high",
    ...          repetition_penalty=1.2, max_new_tokens=32)
    """
    return [output.text for output in generate_outputs(model, tokenizer, prompts, method, **kwargs)]


def decoded_outputs(
    model, tokenizer, sequences: torch.Tensor, prompt_width: int, lengths: list[int]
) -> list[GenerationOutput]:
    """One :class:`GenerationOutput` per row of ``sequences`` [B, prompt_width + new]: new ids up to EOS, text."""
    outputs = []
    for row, length in zip(sequences[:, prompt_width:], lengths, strict=True):
        ids = _strip_after_eos(row.tolist(), model.generation_config.eos_token_id, tokenizer.pad_token_id)
        outputs.append(GenerationOutput(tokenizer.decode(ids, skip_special_tokens=True), ids, int(length)))
    return outputs


def check_prompt_lengths(
    lengths: list[int], first_index: int, max_new_tokens: int, limit: int | None, what: str = ""
) -> None:
    """Raise when a prompt plus ``max_new_tokens`` exceeds the model's context ``limit``."""
    for offset, length in enumerate(lengths):
        if limit is not None and length + max_new_tokens > limit:
            raise ValueError(
                f"prompt {first_index + offset} has {length} tokens{what}; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {limit} tokens. Shorten the prompt or lower max_new_tokens."
            )


def _strip_after_eos(
    ids: list[int], eos_token_id: int | list[int] | None, pad_token_id: int | None
) -> list[int]:
    eos = set(
        eos_token_id if isinstance(eos_token_id, list) else [eos_token_id] if eos_token_id is not None else []
    )
    for index, token in enumerate(ids):
        if token in eos:
            return ids[: index + 1]
    return ids
