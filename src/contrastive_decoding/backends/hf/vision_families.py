"""The vision-language model families the image-contrast methods support, and the token ids of their images.

What differs between LLaVA, Qwen2-VL / Qwen2.5-VL and Idefics3 / SmolVLM as far as image contrast is concerned:
whether the image processor takes one list of images per prompt, and which tokens stand for the image in a
prompt (the placeholder, and the markers around it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel


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
