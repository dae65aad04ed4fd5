"""Tiny random-init vision-language models (LLaVA, Qwen2-VL, Idefics3) built from real configs, seeded, no
downloads, and their inputs built the way each family's processor lays them out (image placeholder tokens,
Qwen2-VL's vision start / end and modality ids, Idefics3's tile markers) with the real image processors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from tests.tiny_models import EOS_TOKEN_ID, PAD_TOKEN_ID, VOCAB_SIZE, word_level_tokenizer

COCO_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_images" / "images"
VLM_FAMILIES = ("llava", "qwen2_vl", "idefics3")
IMAGE_TOKEN_ID = 500
VISION_START_ID = 501  # Qwen2-VL
VISION_END_ID = 502  # Qwen2-VL
FAKE_IMAGE_ID = 503  # Idefics3 <fake_token_around_image>
TEXT_TOKENS = range(3, 500)

_VISION = dict(  # the vision tower of LLaVA (CLIP) and Idefics3
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
_TEXT = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=512,
    pad_token_id=PAD_TOKEN_ID,
    eos_token_id=EOS_TOKEN_ID,
    bos_token_id=1,
    initializer_range=0.2,
)


def coco_images(count: int) -> list[Image.Image]:
    files = sorted(COCO_IMAGES.glob("*.jpg"))[:count]
    return [Image.open(path).convert("RGB") for path in files]


def tiny_vlm(family: str, seed: int = 0):
    torch.manual_seed(seed)
    if family == "llava":
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**_VISION, projection_dim=32),
            text_config=LlamaConfig(**_TEXT),
            image_token_index=IMAGE_TOKEN_ID,
        )
        model = LlavaForConditionalGeneration(config)
    elif family == "qwen2_vl":
        text = dict(_TEXT, rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12]})
        config = Qwen2VLConfig(
            text_config=text,
            vision_config=dict(
                depth=2,
                embed_dim=32,
                hidden_size=128,
                num_heads=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                in_channels=3,
                mlp_ratio=2,
            ),
            image_token_id=IMAGE_TOKEN_ID,
            vision_start_token_id=VISION_START_ID,
            vision_end_token_id=VISION_END_ID,
            video_token_id=504,
        )
        model = Qwen2VLForConditionalGeneration(config)
    elif family == "idefics3":
        config = Idefics3Config(
            vision_config=dict(_VISION),
            text_config=LlamaConfig(**_TEXT),
            image_token_id=IMAGE_TOKEN_ID,
            scale_factor=2,
            pad_token_id=PAD_TOKEN_ID,
        )
        model = Idefics3ForConditionalGeneration(config)
    else:
        raise ValueError(family)
    model.generation_config.pad_token_id = PAD_TOKEN_ID
    model.generation_config.eos_token_id = EOS_TOKEN_ID
    return model.eval()


def image_processor(family: str):
    if family == "llava":
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    if family == "qwen2_vl":
        from transformers import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56 * 2)
    if family == "idefics3":
        from transformers import Idefics3ImageProcessorPil

        return Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
        )
    raise ValueError(family)


def vlm_inputs(
    family: str, images: list[Image.Image], prompt_lengths: list[int], seed: int = 0
) -> dict[str, torch.Tensor]:
    """One image per row between random text tokens (``prompt_lengths`` text tokens per row), left-padded."""
    processor = image_processor(family)
    nested = [[image] for image in images] if family == "idefics3" else images
    pixels = dict(processor(images=nested, return_tensors="pt"))
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for index, length in enumerate(prompt_lengths):
        text = [
            TEXT_TOKENS[int(i)] for i in torch.randint(0, len(TEXT_TOKENS), (length,), generator=generator)
        ]
        before, after = text[: length // 2], text[length // 2 :]
        if family == "llava":
            image_tokens = [IMAGE_TOKEN_ID] * 16
        elif family == "qwen2_vl":
            count = int(pixels["image_grid_thw"][index].prod()) // 4
            image_tokens = [VISION_START_ID] + [IMAGE_TOKEN_ID] * count + [VISION_END_ID]
        else:
            image_tokens = [FAKE_IMAGE_ID] + [IMAGE_TOKEN_ID] * 4 + [FAKE_IMAGE_ID]
        rows.append(before + image_tokens + after)
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), PAD_TOKEN_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row) :] = torch.tensor(row)
        attention_mask[index, width - len(row) :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **pixels}
    if family == "qwen2_vl":
        inputs["mm_token_type_ids"] = (input_ids == IMAGE_TOKEN_ID).long()
    return inputs


def select_rows(family: str, inputs: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The inputs of some rows alone (left padding trimmed), as the processor would build them."""
    mask = inputs["attention_mask"][rows]
    keep = int(mask.sum(-1).max())
    picked = {
        "input_ids": inputs["input_ids"][rows][:, -keep:],
        "attention_mask": mask[:, -keep:],
    }
    if "mm_token_type_ids" in inputs:
        picked["mm_token_type_ids"] = inputs["mm_token_type_ids"][rows][:, -keep:]
    if family == "qwen2_vl":
        sizes = inputs["image_grid_thw"].prod(-1).tolist()
        chunks = inputs["pixel_values"].split(sizes)
        picked["pixel_values"] = torch.cat([chunks[row] for row in rows])
        picked["image_grid_thw"] = inputs["image_grid_thw"][rows]
    else:
        for key in ("pixel_values", "pixel_attention_mask"):
            if key in inputs:
                picked[key] = inputs[key][rows]
    return picked


# Token strings of the image-related ids, per family (the tiny vocabulary's ids 500..505).
_SPECIAL_TOKENS = {
    "llava": {IMAGE_TOKEN_ID: "<image>"},
    "qwen2_vl": {
        IMAGE_TOKEN_ID: "<|image_pad|>",
        VISION_START_ID: "<|vision_start|>",
        VISION_END_ID: "<|vision_end|>",
    },
    "idefics3": {
        IMAGE_TOKEN_ID: "<image>",
        FAKE_IMAGE_ID: "<fake_token_around_image>",
        504: "<global-img>",
        505: "<end_of_utterance>",
    },
}


def tiny_vlm_tokenizer(family: str):
    """The tiny word-level tokenizer (``w3`` .. ``w499``) with the family's image tokens at their ids."""
    return word_level_tokenizer(TEXT_TOKENS, _SPECIAL_TOKENS[family])


def tiny_vlm_processor(family: str):
    tokenizer = tiny_vlm_tokenizer(family)
    if family == "llava":
        from transformers import LlavaProcessor

        return LlavaProcessor(
            image_processor=image_processor(family),
            tokenizer=tokenizer,
            patch_size=8,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
        )
    if family == "qwen2_vl":
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor(image_processor=image_processor(family), tokenizer=tokenizer)
    from transformers import Idefics3Processor

    return Idefics3Processor(image_processor=image_processor(family), tokenizer=tokenizer, image_seq_len=4)


def save_tiny_vlm(family: str, path) -> str:
    """A tiny VLM checkpoint directory with its processor, loadable with the Auto classes."""
    tiny_vlm(family).save_pretrained(path)
    tiny_vlm_processor(family).save_pretrained(path)
    return str(path)
