"""Image-perturbation contrast for vision-language models: VCD, RITUAL, RITUAL + VCD, no-image (VDD).

Every score is computed on log-probabilities ``logp = log_softmax(logits)`` in float32, shapes ``[B, V]``:

- VCD (Leng et al., CVPR 2024, "Mitigating Object Hallucinations in Large Vision-Language Models through
  Visual Contrastive Decoding"): ``(1 + a) logp(y | v, x) - a logp(y | v', x)`` with ``v'`` the image after
  forward diffusion noise (:func:`diffusion_noise`), restricted to the plausibility head
  ``{y : p(y | v, x) >= beta * max p(. | v, x)}``; -inf elsewhere.
- RITUAL (Woo et al., 2024, "RITUAL: Random Image Transformations as a Universal Anti-hallucination Lever
  in LVLMs"): ``logp(y | v, x) + alpha_pos logp(y | T(v), x)`` with ``T`` one random transformation of the
  image (:func:`random_transform`). The paper writes no plausibility head, but the authors' code
  (``ritual_utils/ritual_sample.py``) applies VCD's head, ``ritual_beta = 0.1``, in every mode;
  :class:`RitualConfig` matches that code by default and ``ritual_beta = 0`` removes the head.
- RITUAL + VCD: ``(1 + a) logp(y | v, x) + alpha_pos logp(y | T(v), x) - a logp(y | v', x)`` on VCD's
  head, i.e. RITUAL's score plus VCD's contrast term ``a (logp(y | v, x) - logp(y | v', x))``. ``a = 0``
  gives RITUAL (with the VCD head), ``alpha_pos = 0`` gives VCD exactly. It is the sum of both methods'
  deviations from plain decoding in the RITUAL code's own parameters (``ritual_alpha_pos`` weighs the
  ``T(v)`` branch, ``ritual_alpha_neg`` the ``v'`` branch, whose VCD mode is ``(1 + alpha_neg) l - alpha_neg
  l_neg``).
- No-image contrast, VDD (Zhang et al., 2024, "Debiasing Multimodal Large Language Models": post-hoc
  debiasing and Visual Debias Decoding): ``(1 + a) logp(y | v, x) - a logp(y | x)`` with ``x`` the prompt
  without its image placeholders (:func:`strip_image_tokens`), on the same head (their code applies VCD's
  cutoff, ``cd_beta``).

The published codes combine raw logits; log-probabilities differ from them by a per-row constant, so greedy
choices, the plausibility head and the sampling distribution are the same.

Every weight (``vcd_alpha``, ``ritual_alpha_pos``, ``vdd_alpha``) and head threshold may be given per row:
pass a ``[B]`` tensor as the keyword override of the same name, e.g. ``vcd_contrast(l, l_noisy, cfg,
vcd_alpha=torch.tensor([0.0, 1.0]))``. A weight of 0 leaves its branch out exactly, even where that branch
has -inf log-probabilities. Subtracted branches are floored at :data:`~._math.LOG_PROB_FLOOR`, so a token
that is impossible under the perturbed input gets a large finite bonus, never +inf.

Perturbations are pure and seeded: :func:`seeded_generator` gives one ``torch.Generator`` per sample of a
request, and :func:`diffusion_noise` / :func:`random_transform` draw only from the generator they are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageEnhance, ImageFilter

from ..samplers.seeding import perturbation_generator
from ..samplers.warpers import RowParam, relative_top_mask
from ._math import LOG_PROB_FLOOR
from ._validation import check_int, check_range, choice_range, did_you_mean, number_range

MAX_ALPHA = 100.0
NUM_DIFFUSION_STEPS = 1000

# ------------------------------------------------------------------------------------------------------------
# Diffusion noise (VCD)
# ------------------------------------------------------------------------------------------------------------

# name -> (default beta_start, default beta_end)
NOISE_SCHEDULES: dict[str, tuple[float, float]] = {
    # DDPM's linear schedule (Ho et al., 2020): beta_t = linspace(1e-4, 0.02, T).
    "linear": (1e-4, 0.02),
    # What VCD's public code (vcd_utils/vcd_add_noise.py) computes despite its "diffusion" naming:
    # beta_t = sigmoid(linspace(-6, 6, T)) * (0.5e-2 - 1e-5) + 1e-5. Much milder: at t = 500 alpha_bar is
    # 0.745 (linear: 0.078), so VCD's published noise_step 500 keeps sqrt(0.745) = 0.86 of the image.
    "vcd_sigmoid": (1e-5, 0.5e-2),
}


def _check_schedule(schedule: str) -> None:
    if schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"noise_schedule must be one of {', '.join(map(repr, NOISE_SCHEDULES))}, got {schedule!r}."
            f"{did_you_mean(str(schedule), NOISE_SCHEDULES)}"
        )


def beta_schedule(
    schedule: str = "linear",
    num_steps: int = NUM_DIFFUSION_STEPS,
    *,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> torch.Tensor:  # [num_steps] float64
    """The betas of a named schedule; ``beta_start`` / ``beta_end`` default to the schedule's own values."""
    _check_schedule(schedule)
    check_int("num_steps", num_steps, 1)
    default_start, default_end = NOISE_SCHEDULES[schedule]
    start = default_start if beta_start is None else beta_start
    end = default_end if beta_end is None else beta_end
    check_range("beta_start", start, 0.0, 1.0, high_inclusive=False)
    check_range("beta_end", end, 0.0, 1.0, high_inclusive=False)
    if schedule == "linear":
        return torch.linspace(start, end, num_steps, dtype=torch.float64)
    return torch.sigmoid(torch.linspace(-6.0, 6.0, num_steps, dtype=torch.float64)) * (end - start) + start


def alpha_bar(
    noise_step: int,
    schedule: str = "linear",
    num_steps: int = NUM_DIFFUSION_STEPS,
    *,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> float:
    """``prod_{s <= t} (1 - beta_s)`` for the 0-based step ``t = noise_step`` (VCD's ``alphas_prod[t]``)."""
    betas = beta_schedule(schedule, num_steps, beta_start=beta_start, beta_end=beta_end)
    check_int("noise_step", noise_step, 0, num_steps - 1)
    return float(torch.prod(1.0 - betas[: noise_step + 1]))


def diffusion_noise(
    pixels: torch.Tensor,  # [C, H, W] or [B, C, H, W] float (normalized pixel values)
    noise_step: int = 500,
    *,
    schedule: str = "linear",
    num_steps: int = NUM_DIFFUSION_STEPS,
    beta_start: float | None = None,
    beta_end: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:  # same shape, dtype and device as pixels
    """Forward diffusion ``q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``, eps ~ N(0, I).

    The image for VCD's contrast (Leng et al., 2024). ``schedule="linear"`` (default) is DDPM's linear beta
    schedule; ``schedule="vcd_sigmoid"`` reproduces VCD's public code (see :data:`NOISE_SCHEDULES`). As in
    that code the result is not clamped: it stays in the processor's normalized pixel space.

    ``generator`` may be one generator (the whole tensor drawn from it) or, for ``[B, C, H, W]``, a sequence
    of ``B`` generators, row ``i`` drawn from ``generator[i]``: a sample's noise then does not depend on the
    other samples in the batch. Noise is drawn in float32 on the generator's device, so a CPU generator gives
    the same noise whatever device ``pixels`` lives on; None uses the global RNG.
    """
    if not pixels.is_floating_point() or pixels.dim() not in (3, 4):
        raise ValueError(
            f"pixels must be a float tensor of shape [C, H, W] or [B, C, H, W], got {pixels.dtype} "
            f"{tuple(pixels.shape)}"
        )
    a_bar = alpha_bar(noise_step, schedule, num_steps, beta_start=beta_start, beta_end=beta_end)
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else pixels.device
        eps = torch.randn(pixels.shape, generator=generator, device=device, dtype=torch.float32)
    else:
        generators = list(generator)
        if pixels.dim() != 4 or len(generators) != pixels.shape[0]:
            raise ValueError(
                f"a sequence of generators needs pixels of shape [B, C, H, W] and one generator per row; got "
                f"{len(generators)} generators for shape {tuple(pixels.shape)}"
            )
        rows = [
            torch.randn(pixels.shape[1:], generator=g, device=g.device, dtype=torch.float32)
            for g in generators
        ]
        eps = torch.stack([row.to(pixels.device) for row in rows])  # [B, C, H, W]
    eps = eps.to(pixels.device)
    noisy = math.sqrt(a_bar) * pixels.float() + math.sqrt(1.0 - a_bar) * eps
    return noisy.to(pixels.dtype)


# ------------------------------------------------------------------------------------------------------------
# Seeded generators
# ------------------------------------------------------------------------------------------------------------


def seeded_generator(seed: int, request_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for sample ``request_index`` of a request seeded with ``seed``.

    :func:`contrastive_decoding.samplers.seeding.perturbation_generator`: the two integers are hashed
    (splitmix64) into one 64-bit seed, so neighbouring seeds and indices give unrelated streams: each image of a
    batch gets its own independent draw, the same one on every run.
    """
    return perturbation_generator(seed, request_index, device)


# ------------------------------------------------------------------------------------------------------------
# Random image transformations (RITUAL)
# ------------------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VcdConfig:
    # weight of the contrast against the noised image; 0 gives plain decoding on the head
    vcd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head: keep tokens with p(y | v, x) >= beta * max p
    vcd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))
    # diffusion step t of the noised image, 0-based out of 1000
    noise_step: int = field(default=500, metadata=number_range(0, NUM_DIFFUSION_STEPS - 1, integer=True))
    # "linear" (DDPM) or "vcd_sigmoid" (VCD's public code)
    noise_schedule: str = field(default="linear", metadata=choice_range(NOISE_SCHEDULES))

    def __post_init__(self) -> None:
        check_range("vcd_alpha", self.vcd_alpha, 0.0, MAX_ALPHA)
        check_range("vcd_beta", self.vcd_beta, 0.0, 1.0)
        check_int("noise_step", self.noise_step, 0, NUM_DIFFUSION_STEPS - 1)
        _check_schedule(self.noise_schedule)


@dataclass(frozen=True)
class RitualConfig:
    # weight of the transformed-image branch
    ritual_alpha_pos: float = field(default=3.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head as in RITUAL's code; 0 keeps every token (the paper's formula)
    ritual_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_range("ritual_alpha_pos", self.ritual_alpha_pos, 0.0, MAX_ALPHA)
        check_range("ritual_beta", self.ritual_beta, 0.0, 1.0)


@dataclass(frozen=True)
class RitualVcdConfig:
    # weight of the transformed-image branch
    ritual_alpha_pos: float = field(default=3.0, metadata=number_range(0.0, MAX_ALPHA))
    # weight of the contrast against the noised image
    vcd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    vcd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))  # plausibility head on p(y | v, x)
    noise_step: int = field(default=500, metadata=number_range(0, NUM_DIFFUSION_STEPS - 1, integer=True))
    noise_schedule: str = field(default="linear", metadata=choice_range(NOISE_SCHEDULES))

    def __post_init__(self) -> None:
        check_range("ritual_alpha_pos", self.ritual_alpha_pos, 0.0, MAX_ALPHA)
        check_range("vcd_alpha", self.vcd_alpha, 0.0, MAX_ALPHA)
        check_range("vcd_beta", self.vcd_beta, 0.0, 1.0)
        check_int("noise_step", self.noise_step, 0, NUM_DIFFUSION_STEPS - 1)
        _check_schedule(self.noise_schedule)


@dataclass(frozen=True)
class VddConfig:
    # weight of the contrast against the prompt without its image
    vdd_alpha: float = field(default=1.0, metadata=number_range(0.0, MAX_ALPHA))
    # plausibility head (the VDD code's cd_beta); 0 keeps every token
    vdd_beta: float = field(default=0.1, metadata=number_range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_range("vdd_alpha", self.vdd_alpha, 0.0, MAX_ALPHA)
        check_range("vdd_beta", self.vdd_beta, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------------------
# Contrast functions
# ------------------------------------------------------------------------------------------------------------


def _check_pair(first: torch.Tensor, second: torch.Tensor, second_name: str) -> None:
    if first.dim() != 2 or not first.is_floating_point():
        raise ValueError(f"image_logits must be a float tensor [batch, vocab], got {tuple(first.shape)}")
    if second.shape != first.shape:
        raise ValueError(
            f"{second_name} must have the shape of image_logits {tuple(first.shape)}, "
            f"got {tuple(second.shape)}"
        )


def _weight(name: str, value: RowParam, like: torch.Tensor) -> float | torch.Tensor:
    """A weight in [0, MAX_ALPHA] as a python float or a [B, 1] float32 tensor on ``like``'s device."""
    if isinstance(value, torch.Tensor):
        if value.shape != (like.shape[0],):
            raise ValueError(
                f"{name} must be a number or a tensor of shape [{like.shape[0]}], got {value.shape}"
            )
        column = value.to(device=like.device, dtype=torch.float32).reshape(-1, 1)  # [B, 1]
        ok = (column >= 0) & (column <= MAX_ALPHA)
        if not bool(ok.all()):
            raise ValueError(f"{name} must be in [0, {MAX_ALPHA:g}], got {column[~ok][0].item()}")
        return column
    check_range(name, value, 0.0, MAX_ALPHA)
    return float(value)


def _scaled(weight: float | torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:  # [B, V]
    """``weight * logprobs`` with weight 0 giving exact zeros (no 0 * -inf = nan)."""
    if isinstance(weight, torch.Tensor):
        return torch.where(weight == 0, torch.zeros_like(logprobs), weight * logprobs)
    return torch.zeros_like(logprobs) if weight == 0 else weight * logprobs


def _head(scores: torch.Tensor, image_logprobs: torch.Tensor, beta: RowParam) -> torch.Tensor:  # [B, V]
    if isinstance(beta, torch.Tensor):
        beta = beta.to(device=image_logprobs.device, dtype=torch.float64)
    head = relative_top_mask(image_logprobs, beta, normalized=True)  # [B, V]
    return scores.masked_fill(~head, -math.inf)


def _logprobs(logits: torch.Tensor) -> torch.Tensor:  # [B, V]
    return logits.float().log_softmax(dim=-1)


def vcd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    perturbed_logits: torch.Tensor,  # [B, V] logits given the noised image and the same prompt
    cfg: VcdConfig | None = None,
    *,
    vcd_alpha: RowParam | None = None,  # per-row override of cfg.vcd_alpha
    vcd_beta: RowParam | None = None,  # per-row override of cfg.vcd_beta
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """VCD (Leng et al., 2024): ``(1 + a) logp(y | v, x) - a logp(y | v', x)`` on the head of p(. | v, x)."""
    _check_pair(image_logits, perturbed_logits, "perturbed_logits")
    cfg = VcdConfig() if cfg is None else cfg
    alpha = _weight("vcd_alpha", cfg.vcd_alpha if vcd_alpha is None else vcd_alpha, image_logits)
    with_image = _logprobs(image_logits)  # [B, V]
    perturbed = _logprobs(perturbed_logits).clamp_min(LOG_PROB_FLOOR)  # [B, V]
    scores = _scaled(1.0 + alpha, with_image) - _scaled(alpha, perturbed)  # [B, V]
    return _head(scores, with_image, cfg.vcd_beta if vcd_beta is None else vcd_beta)


def ritual_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    transformed_logits: torch.Tensor,  # [B, V] logits given T(image) and the same prompt
    cfg: RitualConfig | None = None,
    *,
    ritual_alpha_pos: RowParam | None = None,  # per-row override of cfg.ritual_alpha_pos
    ritual_beta: RowParam | None = None,  # per-row override of cfg.ritual_beta
) -> torch.Tensor:  # [B, V]
    """RITUAL (Woo et al., 2024): ``logp(y | v, x) + alpha_pos logp(y | T(v), x)``.

    The paper's formula has no head; the authors' code keeps tokens with
    ``p(y | v, x) >= ritual_beta * max p`` (0.1, the default here). ``ritual_beta = 0`` gives the paper's
    head-less score (-inf only where a branch is -inf).
    """
    _check_pair(image_logits, transformed_logits, "transformed_logits")
    cfg = RitualConfig() if cfg is None else cfg
    alpha_pos = _weight(
        "ritual_alpha_pos",
        cfg.ritual_alpha_pos if ritual_alpha_pos is None else ritual_alpha_pos,
        image_logits,
    )
    with_image = _logprobs(image_logits)  # [B, V]
    scores = with_image + _scaled(alpha_pos, _logprobs(transformed_logits))  # [B, V]
    return _head(scores, with_image, cfg.ritual_beta if ritual_beta is None else ritual_beta)


def ritual_vcd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image
    transformed_logits: torch.Tensor,  # [B, V] logits given T(image)
    perturbed_logits: torch.Tensor,  # [B, V] logits given the noised image
    cfg: RitualVcdConfig | None = None,
    *,
    ritual_alpha_pos: RowParam | None = None,
    vcd_alpha: RowParam | None = None,
    vcd_beta: RowParam | None = None,
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """RITUAL + VCD: ``(1 + a) logp(y | v, x) + alpha_pos logp(y | T(v), x) - a logp(y | v', x)``.

    RITUAL's score plus VCD's contrast term ``a (logp(y | v, x) - logp(y | v', x))``, on VCD's head:
    ``vcd_alpha = 0`` is RITUAL with the VCD head, ``ritual_alpha_pos = 0`` is :func:`vcd_contrast`. The head
    is taken on ``p(y | v, x)``.
    """
    _check_pair(image_logits, transformed_logits, "transformed_logits")
    _check_pair(image_logits, perturbed_logits, "perturbed_logits")
    cfg = RitualVcdConfig() if cfg is None else cfg
    alpha_pos = _weight(
        "ritual_alpha_pos",
        cfg.ritual_alpha_pos if ritual_alpha_pos is None else ritual_alpha_pos,
        image_logits,
    )
    alpha = _weight("vcd_alpha", cfg.vcd_alpha if vcd_alpha is None else vcd_alpha, image_logits)
    with_image = _logprobs(image_logits)  # [B, V]
    transformed = _logprobs(transformed_logits)  # [B, V]
    perturbed = _logprobs(perturbed_logits).clamp_min(LOG_PROB_FLOOR)  # [B, V]
    scores = _scaled(1.0 + alpha, with_image) + _scaled(alpha_pos, transformed) - _scaled(alpha, perturbed)
    return _head(scores, with_image, cfg.vcd_beta if vcd_beta is None else vcd_beta)


def vdd_contrast(
    image_logits: torch.Tensor,  # [B, V] logits given the image and the prompt
    no_image_logits: torch.Tensor,  # [B, V] logits given the prompt without its image (strip_image_tokens)
    cfg: VddConfig | None = None,
    *,
    vdd_alpha: RowParam | None = None,  # per-row override of cfg.vdd_alpha
    vdd_beta: RowParam | None = None,  # per-row override of cfg.vdd_beta
) -> torch.Tensor:  # [B, V], -inf outside the plausibility head
    """No-image contrast, VDD (Zhang et al., 2024): ``(1 + a) logp(y | v, x) - a logp(y | x)`` on the head."""
    _check_pair(image_logits, no_image_logits, "no_image_logits")
    cfg = VddConfig() if cfg is None else cfg
    alpha = _weight("vdd_alpha", cfg.vdd_alpha if vdd_alpha is None else vdd_alpha, image_logits)
    with_image = _logprobs(image_logits)  # [B, V]
    without_image = _logprobs(no_image_logits).clamp_min(LOG_PROB_FLOOR)  # [B, V]
    scores = _scaled(1.0 + alpha, with_image) - _scaled(alpha, without_image)  # [B, V]
    return _head(scores, with_image, cfg.vdd_beta if vdd_beta is None else vdd_beta)


# ------------------------------------------------------------------------------------------------------------
# Prompt without the image (VDD)
# ------------------------------------------------------------------------------------------------------------


def strip_image_tokens(
    input_ids: torch.Tensor,  # [B, L] token ids, any padding
    attention_mask: torch.Tensor | None,  # [B, L] 1 for real tokens, 0 for padding; None: all real
    image_token_ids: set[int] | Sequence[int],
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # ids [B, L'], mask [B, L'], left-padded
    """The prompt without its image: drop image placeholder tokens and padding, then left-pad again.

    ``image_token_ids`` lists every id that stands for the image (e.g. LLaVA's ``<image>``; for Qwen2-VL
    also ``<|vision_start|>`` and ``<|vision_end|>`` around ``<|image_pad|>``). Real tokens keep their order
    and are right-aligned; ``L'`` is the longest remaining row. The mask keeps the input mask's dtype (that
    of ``input_ids`` if None).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [batch, length], got {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    image_ids = torch.tensor(sorted(set(image_token_ids)), dtype=input_ids.dtype, device=input_ids.device)
    keep = attention_mask.bool() & ~torch.isin(input_ids, image_ids)  # [B, L]
    counts = keep.sum(dim=-1)  # [B]
    new_length = int(counts.max()) if counts.numel() else 0
    batch = input_ids.shape[0]
    ids = torch.full((batch, new_length), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((batch, new_length), dtype=attention_mask.dtype, device=input_ids.device)
    if new_length == 0:
        return ids, mask
    column = (
        (new_length - counts)[:, None] + keep.long().cumsum(dim=-1) - 1
    )  # [B, L] target column of kept tokens
    rows = torch.arange(batch, device=input_ids.device)[:, None].expand_as(input_ids)  # [B, L]
    ids[rows[keep], column[keep]] = input_ids[keep]
    mask[rows[keep], column[keep]] = 1
    return ids, mask
