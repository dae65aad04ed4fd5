"""Seeded generators for the perturbations: one ``torch.Generator`` per sample of a request.

A row's noise or random transformation draws only from its own generator, so a sample's perturbation does not
depend on the other samples in its batch and is the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...samplers.seeding import perturbation_generator


def seeded_generator(seed: int, request_index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for sample ``request_index`` of a request seeded with ``seed``.

    :func:`contrastive_decoding.samplers.seeding.perturbation_generator`: the two integers are hashed
    (splitmix64) into one 64-bit seed, so neighbouring seeds and indices give unrelated streams: each image of a
    batch gets its own independent draw, the same one on every run.
    """
    return perturbation_generator(seed, request_index, device)


def row_generators(perturbation_seed: int | Sequence[int], batch_size: int) -> list[torch.Generator]:
    """One generator per row: an int seed gives row ``b`` ``seeded_generator(seed, b)``; a list gives row
    ``b`` ``seeded_generator(seeds[b], 0)``, so a row's perturbation can be reproduced outside its batch."""
    if isinstance(perturbation_seed, int) and not isinstance(perturbation_seed, bool):
        return [seeded_generator(perturbation_seed, row) for row in range(batch_size)]
    seeds = list(perturbation_seed)
    if len(seeds) != batch_size:
        raise ValueError(
            f"perturbation_seed must be an int or one int per row ({batch_size}), got {len(seeds)} seeds"
        )
    return [seeded_generator(int(seed), 0) for seed in seeds]
