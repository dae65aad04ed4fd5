"""Calibrated answer-choice scores: ``score_choices(model, tokenizer, context, choices, method=...)``.

The model calls of :mod:`contrastive_decoding.decoding.calibration` (contextual calibration, post-hoc debiasing):
the log-likelihood of every answer choice given the real input and given the content-free input(s), then
:func:`~.decoding.calibration.calibrate_choices` over ``[items, choices]``.

- ``contextual_calibration`` (text): two (or K + 1) calls of :func:`contrastive_decoding.score` under the plain
  model, one with the real contexts and one per content-free input with ``content_free_contexts[k]`` (the task's
  prompt with the content-free input, e.g. ``"N/A"``, in place of the question; see
  ``Task.content_free_context``); every choice is the same continuation in all calls.
- ``posthoc_debias`` (vision-language models): the choices given the image and the prompt, and given the same
  prompt without its image (the image placeholder tokens removed, as VDD's contrast input), one forward per
  choice and branch.

Returns, per item, the calibrated choice log-probabilities ``log q`` (they sum to one over the item's choices),
which choice tasks read exactly where they read ``score``'s summed log-likelihoods (MC1 / MC2 / accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .decoding import registry
from .decoding.calibration import PosthocDebiasConfig, calibrate_choices
from .method_call import MethodCall, method_call


def _check_choices(contexts: Sequence[str], choices: Sequence[Sequence[str]]) -> None:
    if len(contexts) != len(choices):
        raise ValueError(f"one list of choices per context: {len(contexts)} contexts, {len(choices)} lists")
    for index, item_choices in enumerate(choices):
        if isinstance(item_choices, str) or not item_choices:
            raise ValueError(
                f"choices[{index}] must be a non-empty list of answer texts, got {item_choices!r}"
            )


def _padded(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:  # [I, C] values, [I, C] valid
    width = max(len(row) for row in rows)
    values = torch.full((len(rows), width), float("-inf"), dtype=torch.float64)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for index, row in enumerate(rows):
        values[index, : len(row)] = torch.tensor(row, dtype=torch.float64)
        valid[index, : len(row)] = True
    return values, valid


def _plain_logprobs(
    model, tokenizer, contexts: Sequence[str], choices: Sequence[Sequence[str]], batch_size: int
) -> list[list[float]]:
    """Each choice's summed log-likelihood given its item's context: one ``score`` call over every pair."""
    from .scoring import score

    flat_contexts = [context for context, row in zip(contexts, choices, strict=True) for _ in row]
    flat_choices = [choice for row in choices for choice in row]
    results = score(model, tokenizer, flat_contexts, flat_choices, "plain", batch_size=batch_size)
    values = [result.logprob for result in results]
    rows, start = [], 0
    for row in choices:
        rows.append(values[start : start + len(row)])
        start += len(row)
    return rows


def combine(
    logprobs: list[list[float]], content_free_logprobs: list[list[list[float]]], cfg: Any
) -> list[list[float]]:
    """Calibrated ``log q`` per item from ragged lists: ``logprobs[i][c]`` given the real input,
    ``content_free_logprobs[k][i][c]`` given content-free input k."""
    values, valid = _padded(logprobs)  # [I, C]
    free = torch.stack([_padded(rows)[0] for rows in content_free_logprobs])  # [K, I, C]
    calibrated = calibrate_choices(values, free, cfg, valid)  # [I, C]
    return [calibrated[index, : len(row)].tolist() for index, row in enumerate(logprobs)]


def score_choices(
    model,
    tokenizer,
    contexts: Sequence[str] | str,
    choices: Sequence[Sequence[str]],
    method: str | MethodCall = "contextual_calibration",
    *,
    content_free_contexts: Sequence[Sequence[str]] | None = None,
    images: Sequence[Any] | None = None,
    batch_size: int = 8,
    **params: Any,
) -> list[list[float]]:
    """Calibrated log-probabilities of each item's answer choices (``[items][choices]``, each row sums to 1).

    ``contexts[i]`` is item i's prompt and ``choices[i]`` its answers, each a continuation as for
    :func:`contrastive_decoding.score` (put the separating space in the answer: ``" Paris"``).

    - ``contextual_calibration``: ``content_free_contexts[i]`` lists item i's prompt once per content-free input
      of the config (``content_free_inputs``, default ``("N/A",)``), that input in place of the question.
    - ``posthoc_debias``: ``images[i]`` is item i's image (a PIL image or a path), ``tokenizer`` the model's
      processor; the reference is the same prompt without the image.

    >>> score_choices(model, tokenizer, [build_prompt("Is the sky green?")], [[" Yes.", " No."]],
    ...               content_free_contexts=[[build_prompt("N/A")]])
    """
    call = method_call(method, **params)
    spec = call.spec
    if spec.scoring.choice_scorer is None:
        scorers = ", ".join(sorted(s.name for s in registry.specs() if s.scoring.choice_scorer))
        raise ValueError(
            f"score_choices calibrates answer choices ({scorers}); {spec.name} scores each continuation alone: "
            "use contrastive_decoding.score"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    contexts = [contexts] if isinstance(contexts, str) else list(contexts)
    _check_choices(contexts, choices)
    cfg = call.config
    if isinstance(cfg, PosthocDebiasConfig):
        if content_free_contexts is not None:
            raise ValueError(
                "posthoc_debias calibrates against the prompt without its image; content_free_contexts are "
                "contextual_calibration's"
            )
        if images is None or len(images) != len(contexts) or any(image is None for image in images):
            got = (
                "none"
                if images is None
                else f"{sum(image is not None for image in images)} of {len(contexts)}"
            )
            raise ValueError(
                f"posthoc_debias needs one image per item (it calibrates against the prompt without it); got {got}. "
                "For text tasks use contextual_calibration."
            )
        with_image, without_image = [], []
        for context, item_choices, image in zip(contexts, choices, images, strict=True):
            given, free = image_choice_logprobs(model, tokenizer, context, list(item_choices), image)
            with_image.append(given)
            without_image.append(free)
        return combine(with_image, [without_image], cfg)
    if images is not None:
        raise ValueError(
            "contextual_calibration scores text; for images use posthoc_debias (it calibrates against the prompt "
            "without the image)"
        )
    count = len(cfg.content_free_inputs)
    if content_free_contexts is None or len(content_free_contexts) != len(contexts):
        raise ValueError(
            f"{spec.name} needs content_free_contexts: per item, its prompt with each content-free input "
            f"({', '.join(repr(text) for text in cfg.content_free_inputs)}) in place of the question"
        )
    for index, free in enumerate(content_free_contexts):
        if isinstance(free, str) or len(free) != count:
            raise ValueError(
                f"content_free_contexts[{index}] must list {count} prompt(s), one per content-free input of "
                f"the config, got {free!r}"
            )
    logprobs = _plain_logprobs(model, tokenizer, contexts, choices, batch_size)
    free_logprobs = [
        _plain_logprobs(model, tokenizer, [free[k] for free in content_free_contexts], choices, batch_size)
        for k in range(count)
    ]
    return combine(logprobs, free_logprobs, cfg)


# --------------------------------------------------------------------------- vision-language models


def _continuation_logprob(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Summed log-probability of ``targets`` [m] under the last m + 1 positions' logits [1, S, V]."""
    m = targets.shape[0]
    predicting = logits[0, -m - 1 : -1].float().log_softmax(dim=-1)  # [m, V]
    return float(predicting.gather(-1, targets[:, None]).sum())


@torch.no_grad()
def image_choice_logprobs(
    model, processor, prompt: str, choices: list[str], image: Any
) -> tuple[list[float], list[float]]:
    """(with the image, without it): each choice's summed log-likelihood after ``prompt``.

    The prompt gets the processor's image token in front unless it has one (as ``generate`` does); the
    no-image prompt is the processed prompt with every image token removed
    (:func:`~.decoding.perturbations.no_image.strip_image_tokens`, VDD's contrast input). Each choice is
    tokenized alone (no special tokens) and appended to the prompt's ids.
    """
    from .api import _load_image
    from .backends.hf.vision_families import processor_image_token_ids, vision_family
    from .decoding.perturbations.no_image import strip_image_tokens

    family = vision_family(model, "posthoc_debias")
    if getattr(processor, "image_processor", None) is None:
        raise ValueError(
            "posthoc_debias needs the model's processor (images and text), not a tokenizer: load both with "
            "contrastive_decoding.models.load_model_and_tokenizer(path)"
        )
    tokenizer = processor.tokenizer
    picture = _load_image(image)
    image_token = getattr(processor, "image_token", None)
    text = prompt if not image_token or image_token in prompt else f"{image_token}\n{prompt}"
    encoded = processor(
        images=[[picture]] if family.nested_images else [picture], text=[text], return_tensors="pt"
    )
    encoded = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
    prompt_ids = encoded.pop("input_ids")  # [1, S]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    free_ids, _ = strip_image_tokens(
        prompt_ids, None, processor_image_token_ids(processor), int(pad)
    )  # [1, S']
    if free_ids.shape[1] == 0:
        raise ValueError("the prompt without its image has no tokens: posthoc_debias needs some text")
    with_image, without_image = [], []
    for index, choice in enumerate(choices):
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"choice {index} ({choice!r}) has no tokens to score")
        targets = torch.tensor(ids, dtype=torch.long)  # [m]
        inputs = {}
        for key, value in encoded.items():  # per-token inputs grow with the choice; image inputs stay
            if value.dim() == 2 and value.shape == prompt_ids.shape:
                fill = 1 if key == "attention_mask" else 0
                value = torch.cat([value, torch.full((1, len(ids)), fill, dtype=value.dtype)], dim=1)
            inputs[key] = value
        inputs = {
            key: value.to(model.device, model.dtype) if value.is_floating_point() else value.to(model.device)
            for key, value in inputs.items()
        }
        full = torch.cat([prompt_ids, targets[None]], dim=1).to(model.device)  # [1, S + m]
        logits = model(input_ids=full, **inputs, use_cache=False).logits
        with_image.append(_continuation_logprob(logits, targets.to(model.device)))
        bare = torch.cat([free_ids, targets[None]], dim=1).to(model.device)  # [1, S' + m]
        logits = model(input_ids=bare, attention_mask=torch.ones_like(bare), use_cache=False).logits
        without_image.append(_continuation_logprob(logits, targets.to(model.device)))
    return with_image, without_image


__all__ = ["combine", "image_choice_logprobs", "score_choices"]
