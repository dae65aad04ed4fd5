"""The perturbed inputs the image-contrast methods contrast against, apart from their math.

- :mod:`.noise`: forward diffusion noise on pixel tensors (VCD's ``v'``), :func:`diffusion_noise`.
- :mod:`.transforms`: RITUAL's random transformations of PIL images (``T(v)``), :func:`random_transform`.
- :mod:`.no_image`: the prompt without its image placeholders (VDD's ``x``), :func:`strip_image_tokens`.
- :mod:`.seeds`: one seeded ``torch.Generator`` per sample, :func:`seeded_generator` / :func:`row_generators`.

Perturbations are pure and seeded: they draw only from the generator they are given. Backend-neutral (torch and
PIL; neither transformers nor vLLM); a backend lays the results out as its model's inputs. Not a method: it
declares no ``SPECS``. It lives under ``decoding/`` because the method configs validate against its tables
(:data:`NOISE_SCHEDULES`) and it validates with ``decoding._validation``: a package beside ``decoding/`` would
import it and be imported by it.
"""

from __future__ import annotations

from .no_image import strip_image_tokens
from .noise import NOISE_SCHEDULES, NUM_DIFFUSION_STEPS, alpha_bar, beta_schedule, diffusion_noise
from .seeds import row_generators, seeded_generator
from .transforms import RITUAL_TRANSFORMS, apply_transform, random_transform

__all__ = [
    "NOISE_SCHEDULES",
    "NUM_DIFFUSION_STEPS",
    "RITUAL_TRANSFORMS",
    "alpha_bar",
    "apply_transform",
    "beta_schedule",
    "diffusion_noise",
    "random_transform",
    "row_generators",
    "seeded_generator",
    "strip_image_tokens",
]
