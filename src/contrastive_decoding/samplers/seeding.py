"""Seeding: one scheme for every random draw that must reproduce row by row, on both backends.

Every seeded stream is keyed, never advanced: the generator for draw ``index`` of a request seeded with
``seed`` is a fresh ``torch.Generator`` seeded with :func:`stream_seed` ``(seed, index, stream)``, a splitmix64
hash of the three integers. Nothing depends on the batch a row is in, on the other rows, or on how many draws
were made before, so a row reproduces alone and in any batch.

- **Token draws** (``stream=TOKEN_STREAM``, :func:`draw_generator` / :func:`draw_uniforms`): a seeded row's
  draw for its output position ``t`` (the number of tokens it has generated so far) comes from a CPU generator
  keyed on ``(seed, t)``. It draws one float64 uniform ``u`` in ``[0, 1)`` and
  :func:`~contrastive_decoding.samplers.select.select_tokens` takes the first token whose cumulative probability
  exceeds ``u`` (inverse CDF in float64, token-id order). The uniform comes from the CPU whatever the scores'
  device, so the same probabilities give the same token on CPU and GPU, on the Hugging Face backend and in the
  vLLM pair processor. Rows without a seed draw from the global torch RNG (or the generator given), as
  transformers' ``_sample`` does.
- **Perturbations** (``stream=PERTURBATION_STREAM``, :func:`perturbation_generator`): sample ``index`` of a
  request (e.g. the image of batch row ``index``) draws its noise / random transformation from a generator
  keyed on ``(seed, index)`` on the device it asks for.

``num_return_sequences`` / vLLM's ``n``: sequence ``j`` of a prompt seeded with ``seed`` uses ``seed + j`` (what
vLLM gives its child requests), see :func:`row_seeds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1
PERTURBATION_STREAM = 0
TOKEN_STREAM = 1

SeedArg = int | Sequence[int] | None  # one seed for every row, one per prompt / row, or unseeded


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _check_int(name: str, value: object, low: int | None = None) -> None:
    valid = "" if low is None else f" in [{low}, inf)"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer{valid}, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be{valid}, got {value!r}")


def stream_seed(seed: int, index: int, stream: int = PERTURBATION_STREAM) -> int:
    """The 64-bit seed of draw ``index`` of stream ``stream`` of a request seeded with ``seed``.

    ``splitmix64(splitmix64(seed) ^ index)`` for perturbations (stream 0), with the stream mixed in first for
    the others, so neighbouring seeds, indices and streams give unrelated generators. ``seed`` is taken modulo
    2**64 (negative seeds are fine); ``index`` must be >= 0.
    """
    _check_int("seed", seed)
    _check_int("index", index, 0)
    _check_int("stream", stream, 0)
    base = seed & _MASK64
    if stream != PERTURBATION_STREAM:
        base = _splitmix64(base ^ _splitmix64(stream))
    return _splitmix64(_splitmix64(base) ^ (index & _MASK64))


def perturbation_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` for sample ``index`` of a request seeded with ``seed`` (image noise, RITUAL's
    random transformations): the same stream on every run, independent of the other samples."""
    _check_int("seed", seed, 0)
    _check_int("request_index", index, 0)
    return torch.Generator(device=device).manual_seed(stream_seed(seed, index, PERTURBATION_STREAM))


def draw_generator(seed: int, position: int) -> torch.Generator:
    """The CPU generator of a seeded row's token draw at output ``position`` (tokens generated so far)."""
    return torch.Generator(device="cpu").manual_seed(stream_seed(seed, position, TOKEN_STREAM))


def draw_uniforms(seeds: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
    """One float64 uniform in [0, 1) per seeded row, a CPU tensor [S]: the first draw of each row's
    ``draw_generator(seed, position)``."""
    return torch.stack(
        [
            torch.rand((), dtype=torch.float64, generator=draw_generator(seed, position))
            for seed, position in zip(seeds, positions, strict=True)
        ]
    )  # [S]


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``, or None (global RNG) when seed is None.

    For unseeded rows' draws that should still be reproducible as a whole batch (they advance with every draw);
    seeded rows use :func:`draw_generator` instead."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def check_seed(seed: SeedArg, name: str = "seed") -> None:
    """Raise unless ``seed`` is None, an int, or a non-empty sequence of ints."""
    if seed is None:
        return
    if isinstance(seed, int) and not isinstance(seed, bool):
        return
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence) or not seed:
        raise ValueError(f"{name} must be an int, one int per row, or None, got {seed!r}")
    for value in seed:
        _check_int(f"every {name}", value)


def row_seeds(seed: SeedArg, batch_size: int, num_return_sequences: int = 1) -> list[int] | None:
    """The seed of each of ``batch_size`` rows, or None when unseeded.

    ``batch_size`` rows are ``batch_size // num_return_sequences`` prompts, each repeated
    ``num_return_sequences`` times in a row (as ``generate`` expands them). An int seeds every prompt with it;
    a sequence gives one seed per prompt (or one per row when it has ``batch_size`` entries). Sequence ``j`` of a
    prompt seeded ``s`` gets ``s + j`` (vLLM's seeds for ``n > 1``), so the samples of one prompt differ.
    """
    check_seed(seed)
    if seed is None:
        return None
    repeat = max(int(num_return_sequences or 1), 1)
    if batch_size % repeat:
        repeat = 1
    if isinstance(seed, int):
        return [seed + row % repeat for row in range(batch_size)]
    seeds = list(seed)
    if len(seeds) == batch_size:
        return seeds
    if len(seeds) * repeat == batch_size:
        return [seeds[row // repeat] + row % repeat for row in range(batch_size)]
    raise ValueError(
        f"seed must be an int or one int per prompt ({batch_size // repeat}) or per row ({batch_size}), "
        f"got {len(seeds)} seeds"
    )
