"""KV caches of recently scored prefixes, reused across ``score`` calls (:class:`PrefixCache`).

Multiple-choice benchmarks put the same long stem (an instruction and a few worked examples) before every
question: with a :class:`PrefixCache`, ``score`` runs that stem once per run instead of once per item. For each
batch's prefix it finds the cached prefix sharing the most leading tokens with it, takes that entry's KV states
of those tokens and runs only the remaining ones (:func:`contrastive_decoding.packing.packed_forward`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Entry:
    tokens: tuple[int, ...]  # the prefix's token ids
    states: list[tuple[torch.Tensor, torch.Tensor]]  # per layer keys, values [1, heads, len(tokens), dim]
    dtype: torch.dtype  # the model's dtype and device when the entry was made
    device: torch.device


def common_length(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share."""
    limit = min(len(a), len(b))
    for index in range(limit):
        if a[index] != b[index]:
            return index
    return limit


def full_attention_cache(model) -> bool:
    """Whether the model's default cache holds every past position of every layer as keys and values
    (transformers' ``DynamicLayer``): sliding-window and linear-attention layers do not, and their models score
    without the prefix cache."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config the default cache cannot be built from: do not reuse
        return False
    return bool(layers) and all(
        type(layer) is DynamicLayer and not layer.is_sliding and layer.is_croppable for layer in layers
    )


class PrefixCache:
    """The KV caches of the last ``max_entries`` prefixes per model, for reuse by later ``score`` calls.

    Keyed weakly on the model object (a cache does not keep its model alive); an entry made under another dtype
    or device of the same model is dropped. Changing a model's weights in place is not detected: use a new
    ``PrefixCache`` (or :meth:`clear`) then. Models whose cache layers do not keep every position (sliding-window
    or linear attention) score without it, with unchanged results.

    >>> cache = cd.PrefixCache()
    >>> for item in items:
    ...     cd.score(model, tokenizer, [item.context] * 4, item.choices, "dola", prefix_cache=cache)
    """

    def __init__(self, max_entries: int = 4):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._entries: weakref.WeakKeyDictionary[Any, list[_Entry]] = weakref.WeakKeyDictionary()
        self._supported: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self.reused_tokens = 0  # tokens taken from the cache instead of run, over this cache's life

    def supports(self, model) -> bool:
        """Whether ``model``'s prefixes can be reused (see :func:`full_attention_cache`); decided once per
        model."""
        if model not in self._supported:
            self._supported[model] = full_attention_cache(model)
        return self._supported[model]

    def lookup(self, model, tokens: list[int], limit: int) -> tuple[int, Any]:
        """(m, states): the most leading tokens (at most ``limit``) that ``tokens`` shares with a cached prefix
        of ``model``, and that prefix's KV states of those m tokens (per layer keys and values
        ``[1, heads, m, dim]``, views: do not write to them); ``(0, None)`` when none shares any (or the model
        is not supported)."""
        if not self.supports(model):
            return 0, None
        entries = self._live_entries(model)
        best, best_length = None, 0
        for entry in entries:
            length = min(common_length(entry.tokens, tokens), limit)
            if length > best_length:
                best, best_length = entry, length
        if best is None:
            return 0, None
        entries.remove(best)  # most recently used first
        entries.insert(0, best)
        self.reused_tokens += best_length
        return best_length, [
            (keys[..., :best_length, :], values[..., :best_length, :]) for keys, values in best.states
        ]

    def store(self, model, tokens: list[int], states: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep ``states`` (per layer keys and values ``[1, heads, len(tokens), dim]``, not written to
        afterwards) as ``model``'s newest entry."""
        if not self.supports(model):
            return
        entries = self._live_entries(model)
        key = tuple(tokens)
        entries[:] = [entry for entry in entries if entry.tokens != key]
        entries.insert(0, _Entry(key, states, _dtype(model), model.device))
        del entries[self.max_entries :]

    def clear(self) -> None:
        """Drop every entry."""
        self._entries = weakref.WeakKeyDictionary()
        self.reused_tokens = 0

    def cached_prefixes(self, model) -> list[tuple[int, ...]]:
        """The token ids of ``model``'s cached prefixes, most recently used first."""
        return [entry.tokens for entry in self._entries.get(model, [])]

    def __len__(self) -> int:
        """The number of models with entries."""
        return len(self._entries)

    def _live_entries(self, model) -> list[_Entry]:
        entries = self._entries.setdefault(model, [])
        dtype, device = _dtype(model), model.device
        entries[:] = [entry for entry in entries if entry.dtype == dtype and entry.device == device]
        return entries


def _dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype
