"""RITUAL's random image transformations ``T(v)`` on PIL images (Woo et al., 2024).

:func:`random_transform` picks one of :data:`RITUAL_TRANSFORMS` uniformly and applies it; every draw (the
choice, then its parameters) comes from the generator it is given (:func:`~.seeds.seeded_generator`), so the
same generator state gives the same image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageEnhance, ImageFilter

from .._validation import did_you_mean

# The six transformations of RITUAL's public code (eval_bench/pope_eval_llava.py, torchvision v2), one chosen
# uniformly per image. Parameter ranges follow that code:
#   horizontal_flip / vertical_flip: always applied (p = 1).
#   rotation: angle uniform in [-180, 180] degrees (RandomRotation(degrees=180)), counter-clockwise, nearest
#       resampling, same canvas size, black corners.
#   color_jitter: brightness, contrast and saturation factors uniform in [0, 2], hue shift uniform in
#       [-0.5, 0.5] of the hue circle (ColorJitter(1, 1, 1, 0.5)), applied in a random order.
#   gaussian_blur: sigma uniform in [1.5, 2.0] (GaussianBlur(13, (1.5, 2.0)); Pillow's blur is not truncated
#       at 13 pixels, a negligible difference at these sigmas).
#   resized_crop: RandomResizedCrop's sampler, area scale uniform in [0.08, 1.0] of the image, aspect ratio
#       log-uniform in [3/4, 4/3], 10 tries then a centre crop, resized (bilinear) back to the INPUT size.
#       RITUAL's code resizes to 336 x 336 (LLaVA-1.5's input); keeping the input size keeps the image token
#       count of dynamic-resolution processors equal across the original and the transformed branch.
RITUAL_TRANSFORMS: tuple[str, ...] = (
    "horizontal_flip",
    "vertical_flip",
    "rotation",
    "color_jitter",
    "gaussian_blur",
    "resized_crop",
)
ROTATION_DEGREES = 180.0
JITTER_FACTOR_RANGE = (0.0, 2.0)  # brightness, contrast, saturation
JITTER_HUE_RANGE = (-0.5, 0.5)
BLUR_SIGMA_RANGE = (1.5, 2.0)
CROP_SCALE_RANGE = (0.08, 1.0)
CROP_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=generator, device=generator.device, dtype=torch.float64))
    return low + (high - low) * u


def _randint(generator: torch.Generator, low: int, high: int) -> int:  # in [low, high)
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device))


def _rotate(image: Image.Image, generator: torch.Generator) -> Image.Image:
    angle = _uniform(generator, -ROTATION_DEGREES, ROTATION_DEGREES)
    return image.rotate(angle, resample=Image.Resampling.NEAREST, expand=False, fillcolor=(0, 0, 0))


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    hue, saturation, value = image.convert("HSV").split()
    offset = int(round(shift * 255))
    hue = hue.point(lambda h: (h + offset) % 256)
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _color_jitter(image: Image.Image, generator: torch.Generator) -> Image.Image:
    order = torch.randperm(4, generator=generator, device=generator.device).tolist()
    brightness = _uniform(generator, *JITTER_FACTOR_RANGE)
    contrast = _uniform(generator, *JITTER_FACTOR_RANGE)
    saturation = _uniform(generator, *JITTER_FACTOR_RANGE)
    hue = _uniform(generator, *JITTER_HUE_RANGE)
    for step in order:
        if step == 0:
            image = ImageEnhance.Brightness(image).enhance(brightness)
        elif step == 1:
            image = ImageEnhance.Contrast(image).enhance(contrast)
        elif step == 2:
            image = ImageEnhance.Color(image).enhance(saturation)
        else:
            image = _shift_hue(image, hue)
    return image


def _crop_box(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height) as torchvision's RandomResizedCrop.get_params samples it."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO_RANGE[0]), math.log(CROP_RATIO_RANGE[1])
    for _ in range(10):
        target_area = area * _uniform(generator, *CROP_SCALE_RANGE)
        ratio = math.exp(_uniform(generator, log_low, log_high))
        w = int(round(math.sqrt(target_area * ratio)))
        h = int(round(math.sqrt(target_area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(generator, 0, height - h + 1)
            left = _randint(generator, 0, width - w + 1)
            return left, top, w, h
    in_ratio = width / height  # fallback: the largest centre crop with a ratio inside the range
    if in_ratio < CROP_RATIO_RANGE[0]:
        w, h = width, int(round(width / CROP_RATIO_RANGE[0]))
    elif in_ratio > CROP_RATIO_RANGE[1]:
        w, h = int(round(height * CROP_RATIO_RANGE[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _resized_crop(image: Image.Image, generator: torch.Generator) -> Image.Image:
    left, top, w, h = _crop_box(image.width, image.height, generator)
    crop = image.crop((left, top, left + w, top + h))
    return crop.resize(image.size, resample=Image.Resampling.BILINEAR)


def apply_transform(image: Image.Image, name: str, generator: torch.Generator) -> Image.Image:
    """Apply the RITUAL transformation ``name`` (one of :data:`RITUAL_TRANSFORMS`): RGB, same size."""
    if name not in RITUAL_TRANSFORMS:
        raise ValueError(
            f"transform must be one of {', '.join(RITUAL_TRANSFORMS)}, got {name!r}."
            f"{did_you_mean(str(name), RITUAL_TRANSFORMS)}"
        )
    image = image.convert("RGB")
    if name == "horizontal_flip":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if name == "vertical_flip":
        return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if name == "rotation":
        return _rotate(image, generator)
    if name == "color_jitter":
        return _color_jitter(image, generator)
    if name == "gaussian_blur":
        return image.filter(ImageFilter.GaussianBlur(radius=_uniform(generator, *BLUR_SIGMA_RANGE)))
    return _resized_crop(image, generator)


def random_transform(
    image: Image.Image,
    generator: torch.Generator,
    transforms: Sequence[str] = RITUAL_TRANSFORMS,
) -> tuple[Image.Image, str]:
    """One transformation chosen uniformly from ``transforms`` and applied: ``(RGB image, its name)``.

    RITUAL's ``T(v)`` (Woo et al., 2024). Every draw (the choice, then its parameters) comes from
    ``generator``, so the same generator state gives the same image and name. Pass a subset of
    :data:`RITUAL_TRANSFORMS` to restrict the choice, e.g. to the four the DESIGN notes name:
    ``("horizontal_flip", "resized_crop", "rotation", "color_jitter")``.
    """
    names = tuple(transforms)
    if not names:
        raise ValueError(f"transforms must name at least one of {', '.join(RITUAL_TRANSFORMS)}")
    for name in names:
        if name not in RITUAL_TRANSFORMS:
            raise ValueError(
                f"transforms must be taken from {', '.join(RITUAL_TRANSFORMS)}, got {name!r}."
                f"{did_you_mean(str(name), RITUAL_TRANSFORMS)}"
            )
    name = names[_randint(generator, 0, len(names))]
    return apply_transform(image, name, generator), name
