"""VCD (and RITUAL, no-image contrast) on a LLaVA checkpoint directory, next to plain generate.

python examples/vcd_llava.py --model /path/to/llava-1.5-7b-hf --image photo.jpg
python examples/vcd_llava.py            # no checkpoint: a tiny random-init LLaVA (a smoke run, random text)

Any local transformers checkpoint of LLaVA (llava-hf/*), Qwen2-VL / Qwen2.5-VL or Idefics3 / SmolVLM works:
the processor builds the inputs, ``custom_generate`` picks the method, its parameters are generate kwargs.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import contrastive_decoding as cd
from contrastive_decoding.backends.hf.vision_families import processor_image_token_ids

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2] / "shared/data/coco_images/images/COCO_val2014_000000000192.jpg"
)


def tiny_llava_checkpoint() -> str:
    """A random-init LLaVA with a tiny vocabulary, saved with a processor (no download)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_vlms import save_tiny_vlm

    return save_tiny_vlm("llava", tempfile.mkdtemp())


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", help="a local LLaVA (or Qwen2-VL / Idefics3) checkpoint directory")
parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
parser.add_argument("--question", default="Describe the image in one sentence.")
args = parser.parse_args()

path = args.model or tiny_llava_checkpoint()
processor = AutoProcessor.from_pretrained(path)
model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
image = Image.open(args.image).convert("RGB")
if getattr(processor, "chat_template", None):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
else:  # the tiny model's word-level vocabulary
    prompt = f"{processor.image_token} w5 w6 w7"
nested = [[image]] if model.config.model_type in ("idefics3", "smolvlm") else [image]
inputs = processor(images=nested, text=[prompt], return_tensors="pt")

for name, kwargs in {
    "plain generate": {},
    "VCD (alpha 1, beta 0.1, noise step 500)": dict(custom_generate=cd.hf.vcd, vcd_alpha=1.0, vcd_beta=0.1),
    "RITUAL (alpha_pos 3)": dict(custom_generate=cd.hf.ritual, images=[image], image_processor=processor),
    "no-image contrast (VDD)": dict(
        custom_generate=cd.hf.vdd, image_token_ids=processor_image_token_ids(processor)
    ),
}.items():
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=32, do_sample=False, **kwargs)
    text = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    print(f"=== {name}\n{text.strip()}\n")
