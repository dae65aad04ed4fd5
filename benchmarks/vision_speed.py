"""Speed of the image-contrast methods (VCD, RITUAL, RITUAL + VCD, no-image VDD) against plain generate.

    python benchmarks/vision_speed.py                       # LLaVA, Qwen2-VL, Idefics3; batch 1 and 4
    python benchmarks/vision_speed.py --families llava --batch-sizes 1 --max-new-tokens 16

No VLM weights ship as packages, so each family is built random-init at the size of a small real model:
the language model has SmolLM2-135M's shape (30 layers, hidden 576), the vision tower 6 layers of width 384
on 224 x 224 images (LLaVA: 256 image tokens; Qwen2-VL and Idefics3: 64 after merging). Speed does not depend
on the weights; ``min_new_tokens = max_new_tokens`` makes every method produce the same number of tokens.
Real COCO images from ../shared/data are used. Methods are timed in interleaved rounds and the ratio is
method time / plain ``model.generate`` time from the same rounds (median of ``--repeats``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from speed import Timing, fmt_ratio, time_rounds

import contrastive_decoding as cd

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO.parent / "shared" / "data" / "coco_images" / "images"
VOCAB = 49152
IMAGE_ID, START_ID, END_ID, FAKE_ID = VOCAB - 4, VOCAB - 3, VOCAB - 2, VOCAB - 1
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=2048,
    pad_token_id=0,
    eos_token_id=None,
    bos_token_id=1,
    tie_word_embeddings=True,
)
VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6)
METHODS = ["greedy", "vcd", "ritual", "ritual_vcd", "vdd"]
TARGETS = {"vcd": 2.1, "ritual": 2.1, "vdd": 2.1}  # the targets; RITUAL + VCD runs three branches


def build(family: str):
    """(model, image processor, number of image tokens for a 224 x 224 image) at SmolVLM-like size."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    torch.manual_seed(0)
    if family == "llava":
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(image_size=224, patch_size=14, **VISION),
            text_config=LlamaConfig(**TEXT),
            image_token_index=IMAGE_ID,
        )
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        )
        return LlavaForConditionalGeneration(config).eval(), processor
    if family == "qwen2_vl":
        text = dict(TEXT, rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12]})
        vision = dict(
            depth=6, embed_dim=384, hidden_size=576, num_heads=6, patch_size=14, spatial_merge_size=2
        )
        config = Qwen2VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=IMAGE_ID,
            vision_start_token_id=START_ID,
            vision_end_token_id=END_ID,
            video_token_id=FAKE_ID,
        )
        processor = Qwen2VLImageProcessorPil(min_pixels=224 * 224, max_pixels=224 * 224)
        return Qwen2VLForConditionalGeneration(config).eval(), processor
    config = Idefics3Config(
        vision_config=dict(image_size=224, patch_size=14, **VISION),
        text_config=LlamaConfig(**TEXT),
        image_token_id=IMAGE_ID,
        scale_factor=2,
        pad_token_id=0,
    )
    processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 224}, max_image_size={"longest_edge": 224}
    )
    return Idefics3ForConditionalGeneration(config).eval(), processor


def make_inputs(family: str, model, processor, images: list[Image.Image], text_length: int) -> dict:
    """One image per row inside a prompt of ``text_length`` text tokens, laid out as the family's processor does."""
    nested = [[image] for image in images] if family == "idefics3" else images
    pixels = dict(processor(images=nested, return_tensors="pt"))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index in range(len(images)):
        text = torch.randint(10, VOCAB - 10, (text_length,), generator=generator).tolist()
        if family == "llava":
            image_tokens = [IMAGE_ID] * (224 // 14) ** 2
        elif family == "qwen2_vl":
            count = int(pixels["image_grid_thw"][index].prod()) // 4
            image_tokens = [START_ID] + [IMAGE_ID] * count + [END_ID]
        else:
            count = ((224 // 14) ** 2) // 4
            image_tokens = [FAKE_ID] + [IMAGE_ID] * count + [FAKE_ID]
        rows.append(text[:4] + image_tokens + text[4:])
    input_ids = torch.tensor(rows)  # every row has the same length here: no padding
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), **pixels}
    if family == "qwen2_vl":
        inputs["mm_token_type_ids"] = (input_ids == IMAGE_ID).long()
    return inputs


def make_pass(model, processor, family, method, batches, images, new_tokens):
    function = None if method == "greedy" else getattr(cd.hf, method)

    def run() -> list[list[int]]:
        outputs = []
        with torch.no_grad():
            for start, inputs in batches:
                kwargs = {} if function is None else {"custom_generate": function}
                if method in ("ritual", "ritual_vcd"):
                    kwargs.update(
                        images=images[start : start + inputs["input_ids"].shape[0]], image_processor=processor
                    )
                sequences = model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    pad_token_id=0,
                    **kwargs,
                )
                outputs.extend(sequences[:, inputs["input_ids"].shape[1] :].tolist())
        return outputs

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["llava", "qwen2_vl", "idefics3"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--text-length", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    files = sorted(IMAGES.glob("*.jpg"))[: args.num_prompts]
    images = [Image.open(path).convert("RGB").resize((224, 224)) for path in files]
    print(
        f"# image-contrast speed: {args.num_prompts} prompts (COCO image + {args.text_length} text tokens) x "
        f"{args.max_new_tokens} new tokens, float32, median of {args.repeats} interleaved rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    lines = [
        "| family | method | batch | tokens/s | time vs generate | target |",
        "|---|---|---|---|---|---|",
    ]
    for family in args.families:
        model, processor = build(family)
        for batch_size in args.batch_sizes:
            batches = [
                (
                    start,
                    make_inputs(
                        family, model, processor, images[start : start + batch_size], args.text_length
                    ),
                )
                for start in range(0, len(images), batch_size)
            ]
            passes = {
                method: make_pass(model, processor, family, method, batches, images, args.max_new_tokens)
                for method in METHODS
            }
            timings: dict[str, Timing] = time_rounds(passes, args.repeats)
            base = timings["greedy"].median
            for method in METHODS:
                ratio = timings[method].median / base
                target = fmt_ratio(ratio, TARGETS[method]) if method in TARGETS else "-"
                lines.append(
                    f"| {family} | {method} | {batch_size} | {timings[method].tokens_per_s:.1f} | "
                    f"{fmt_ratio(ratio)} | {target} |"
                )
        del model
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
