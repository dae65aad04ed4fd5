"""Token selection on [B, V] scores: the one function both backends choose their tokens with.

:func:`select_tokens` is a pipeline of four stages:

1. Greedy rows (``do_sample=False``) take the argmax of their scores.
2. Sampled rows are warped with their own :class:`SamplingConfig` (:meth:`SamplingConfig.warp`'s order;
   one call for the batch when every row is sampled with the same settings, else row by row) and turned into
   float32 probabilities.
3. Unseeded sampled rows draw with the exponential race ``argmax(p / q)``, ``q ~ Exp(1)`` from ``generator``
   (None: the global torch RNG). That is exactly what ``torch.multinomial(p, 1)`` computes (same random numbers,
   same token, same RNG state after), minus its host-side checks, so the Hugging Face backend draws what
   transformers' own ``_sample`` draws for the same global seed.
4. Seeded rows draw by inverse CDF: the first token (in token-id order) whose float64 cumulative probability
   exceeds ``u * total``, with ``u`` the row's uniform for its (seed, output position) from
   :mod:`.seeding`. A seeded row's token therefore depends on its probabilities, seed and position only: the
   same alone or in any batch, on CPU or GPU, on either backend.

No host syncs: configs were validated when they were built, the warpers' unchecked forms are used, and the
only host-to-device copies are small non-blocking ones (row indices, uniforms).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import SamplingConfig
from .seeding import draw_uniforms, make_generator

__all__ = ["draw_exponential_race", "draw_inverse_cdf", "make_generator", "select_tokens"]


def _on_device(values: list | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Small host data as a tensor on ``device`` without waiting for the device (non-blocking copy)."""
    host = torch.as_tensor(values, dtype=dtype)
    return host if device.type == "cpu" else host.to(device, non_blocking=True)


def draw_exponential_race(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``argmax(probs / q)`` with ``q ~ Exp(1)`` per entry: one draw per row of ``probs`` [R, V] -> [R].

    Bit for bit ``torch.multinomial(probs, 1).squeeze(-1)`` (which computes this after host-side checks)."""
    noise = torch.empty_like(probs).exponential_(generator=generator)  # [R, V]
    return probs.div(noise).argmax(dim=-1)  # [R]


def draw_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor | float) -> torch.Tensor:
    """The first token whose cumulative probability exceeds ``u * total`` per row: [R, V], [R] (or one
    scalar / 0-d CPU tensor for every row) -> [R].

    Computed in float64; tokens with zero probability are never chosen (even when ``u * total`` rounds up to
    the total, the last token with mass is taken)."""
    cdf = probs.double().cumsum(dim=-1)  # [R, V]
    threshold = (cdf[:, -1] * uniforms)[:, None]  # [R, 1]
    index = torch.searchsorted(cdf, threshold, right=True).squeeze(-1)  # [R]
    vocab = probs.shape[-1]
    last_with_mass = vocab - 1 - (probs > 0).flip(-1).to(torch.uint8).argmax(dim=-1)  # [R]
    return torch.minimum(index, last_with_mass)


def _settings(config: SamplingConfig) -> tuple:
    return (
        config.do_sample,
        config.temperature,
        config.top_k,
        config.top_p,
        config.typical_p,
        config.min_p,
        config.top_n_sigma,
        config.epsilon_cutoff,
        config.eta_cutoff,
    )


def _row_configs(sampling: SamplingConfig | Sequence[SamplingConfig], batch: int) -> list[SamplingConfig]:
    if isinstance(sampling, SamplingConfig):
        return [sampling] * batch
    configs = list(sampling)
    if len(configs) != batch or not all(isinstance(config, SamplingConfig) for config in configs):
        raise ValueError(
            f"sampling must be a SamplingConfig or one per row ({batch}), got {len(configs)} items"
        )
    return configs


def _row_positions(positions: int | Sequence[int], batch: int) -> list[int]:
    if isinstance(positions, int):
        return [positions] * batch
    values = list(positions)
    if len(values) != batch:
        raise ValueError(f"positions must be an int or one per row ({batch}), got {len(values)}")
    return values


def select_tokens(
    scores: torch.Tensor,  # [B, V]
    sampling: SamplingConfig | Sequence[SamplingConfig],
    generator: torch.Generator | None = None,
    *,
    positions: int | Sequence[int] = 0,
) -> torch.Tensor:  # [B] long
    """The next token of each row: argmax for greedy rows, else a draw from the row's warped scores.

    ``sampling``: one config for every row or one per row (validated configs: nothing is checked here).
    ``generator``: for unseeded sampled rows (None: the global RNG on the scores' device). ``positions``: each
    row's output position, i.e. how many tokens it has generated so far; it keys seeded rows' draws.
    Pass already-warped scores with warpers left off in ``sampling`` (``SamplingConfig(do_sample=True,
    seed=...)``) to draw only, as the Hugging Face loop does after transformers' processors.
    """
    if scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor of shape [batch, vocab], got {tuple(scores.shape)}")
    batch = scores.shape[0]
    configs = _row_configs(sampling, batch)
    sampled = [row for row, config in enumerate(configs) if config.do_sample]
    if not sampled:
        return scores.argmax(dim=-1)  # [B]

    # 2. warp and normalise the sampled rows: [S, V], S = len(sampled)
    every_row = len(sampled) == batch
    if every_row and len({_settings(config) for config in configs}) == 1:
        probs = torch.softmax(configs[0].warp(scores).float(), dim=-1)  # [B, V]
    else:
        probs = torch.cat(
            [torch.softmax(configs[row].warp(scores[row : row + 1]).float(), dim=-1) for row in sampled]
        )  # [S, V]

    # 3. / 4. draw: the global RNG (or generator) for unseeded rows, keyed uniforms for seeded ones
    seeds = [configs[row].seed for row in sampled]
    seeded = [index for index, seed in enumerate(seeds) if seed is not None]
    if not seeded:
        drawn = draw_exponential_race(probs, generator)  # [S]
    else:
        row_positions = _row_positions(positions, batch)
        uniforms = draw_uniforms([seeds[i] for i in seeded], [row_positions[sampled[i]] for i in seeded])
        if len(seeded) == len(sampled):
            drawn = draw_inverse_cdf(probs, _on_device(uniforms, torch.float64, probs.device))  # [S]
        else:
            by_index = dict(zip(seeded, uniforms, strict=True))  # 0-d CPU tensors: host scalars in the ops
            drawn = torch.cat(
                [
                    draw_inverse_cdf(probs[i : i + 1], by_index[i])
                    if i in by_index
                    else draw_exponential_race(probs[i : i + 1], generator)
                    for i in range(len(sampled))
                ]
            )  # [S]
    if every_row:
        return drawn
    tokens = scores.argmax(dim=-1)  # [B] greedy rows keep their argmax
    return tokens.index_copy(0, _on_device(sampled, torch.long, scores.device), drawn)
