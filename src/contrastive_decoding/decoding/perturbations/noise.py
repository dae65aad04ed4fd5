"""Forward diffusion noise on pixel tensors: VCD's perturbed image ``v'`` (Leng et al., CVPR 2024).

``q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` on the processor's normalized pixels, with
``alpha_bar_t`` from a named beta schedule (:data:`NOISE_SCHEDULES`). Noise draws only from the generator it
is given (:func:`~.seeds.seeded_generator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._validation import check_int, check_range, did_you_mean

NUM_DIFFUSION_STEPS = 1000

# name -> (default beta_start, default beta_end)
NOISE_SCHEDULES: dict[str, tuple[float, float]] = {
    # DDPM's linear schedule (Ho et al., 2020): beta_t = linspace(1e-4, 0.02, T).
    "linear": (1e-4, 0.02),
    # What VCD's public code (vcd_utils/vcd_add_noise.py) computes despite its "diffusion" naming:
    # beta_t = sigmoid(linspace(-6, 6, T)) * (0.5e-2 - 1e-5) + 1e-5. Much milder: at t = 500 alpha_bar is
    # 0.745 (linear: 0.078), so VCD's published noise_step 500 keeps sqrt(0.745) = 0.86 of the image.
    "vcd_sigmoid": (1e-5, 0.5e-2),
}


def check_schedule(schedule: str) -> None:
    """Raise unless ``schedule`` names one of :data:`NOISE_SCHEDULES` (with a did-you-mean)."""
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
    check_schedule(schedule)
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
