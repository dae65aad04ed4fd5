"""One forward per batch for teacher-forced scoring: the physical floor.

Row g of the batch holds prefix g's tokens that no cache holds, then every continuation of that prefix but its
last token, one after another (:class:`PackedBatch`). A 4-D mask lets each prefix token attend causally to its
prefix, and each continuation token to its whole prefix and the tokens before it in its own continuation only;
positions restart at the prefix's length for each continuation. Every token of the batch is computed once, with
no padding between continuations and no copy of the prefix's cache per continuation (the tree attention of
``SequenceRunner.candidates``). With a :class:`~contrastive_decoding.prefix_cache.PrefixCache`, row g first
continues the cached KV states of the earlier prefix sharing most of its leading tokens (the cached parts of the
G rows left-padded to one width), and each prefix's states go back into the cache afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

TAIL, CONTINUATION, PAD = 0, 1, 2  # the kinds of slot in a packed row

# Attention implementations that take a custom additive 4-D mask as it is (transformers' masking_utils).
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PackedBatch:
    """The new tokens of G packed rows: prefix g's uncached tail, then its continuations (but their last
    tokens), right-padded to ``width``; which slot each scored position's output is."""

    ids: torch.Tensor  # [G, W]
    kind: torch.Tensor  # [G, W] TAIL, CONTINUATION or PAD
    owner: torch.Tensor  # [G, W] the row a CONTINUATION slot belongs to, -1 otherwise
    rank: torch.Tensor  # [G, W] the slot's index in its tail or in its continuation
    positions: torch.Tensor  # [G, W] position ids
    cached: list[int]  # [G] the prefix tokens taken from a cache (before the tail)
    index: torch.Tensor  # [N] each scored position (rows in order, positions in order) in the [G * W] outputs
    prefix_last: torch.Tensor  # [G] each prefix's last token in the [G * W] outputs

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @classmethod
    def of(
        cls,
        prefixes: list[list[int]],
        row_prefix: list[int],
        continuations: list[list[int]],
        cached: list[int],
        pad_token_id: int,
    ) -> PackedBatch:
        """``cached[g]`` (less than ``len(prefixes[g])``) leading tokens of prefix g come from a cache."""
        slots = [  # per prefix: (token, kind, owner, rank, position)
            [(token, TAIL, -1, t, cached[g] + t) for t, token in enumerate(prefix[cached[g] :])]
            for g, prefix in enumerate(prefixes)
        ]
        tails = [len(members) for members in slots]
        where: list[tuple[int, int]] = []  # per scored position: (prefix, slot)
        for row, (g, continuation) in enumerate(zip(row_prefix, continuations, strict=True)):
            where.append((g, tails[g] - 1))  # the prefix's last token predicts the first continuation token
            for t, token in enumerate(continuation[:-1]):
                where.append((g, len(slots[g])))
                slots[g].append((token, CONTINUATION, row, t, len(prefixes[g]) + t))
        groups, width = len(slots), max(len(members) for members in slots)
        table = torch.zeros((5, groups, width), dtype=torch.long)
        table[0], table[1], table[2] = pad_token_id, PAD, -1
        for g, members in enumerate(slots):
            table[:, g, : len(members)] = torch.tensor(members, dtype=torch.long).T
        index = torch.tensor([g * width + slot for g, slot in where], dtype=torch.long)
        prefix_last = torch.tensor([g * width + tails[g] - 1 for g in range(groups)], dtype=torch.long)
        return cls(*table, list(cached), index, prefix_last)

    def mask(self, dtype: torch.dtype, device) -> torch.Tensor:  # [G, 1, W, M + W], M = max(cached)
        """The additive 4-D mask over the cached slots (left-padded to M) and the packed ones."""
        kind, owner, rank = self.kind.to(device), self.owner.to(device), self.rank.to(device)
        query_tail, key_tail = (kind == TAIL)[:, :, None], (kind == TAIL)[:, None, :]  # [G, W, 1], [G, 1, W]
        both_continuations = (kind == CONTINUATION)[:, :, None] & (kind == CONTINUATION)[:, None, :]
        before = rank[:, None, :] <= rank[:, :, None]  # [G, W, W]: key's rank <= query's rank
        same = owner[:, :, None] == owner[:, None, :]
        # tail keys: causal for tail queries, all of them for continuation (and pad) queries; continuation keys:
        # causal within the query's own continuation
        new = (key_tail & (~query_tail | before)) | (both_continuations & same & before)  # [G, W, W]
        width_cached = max(self.cached)
        slot = torch.arange(width_cached, device=device)  # [M]
        start = width_cached - torch.tensor(self.cached, device=device)  # [G] first real cached slot
        old = (slot[None, :] >= start[:, None])[:, None, :].expand(-1, self.width, -1)  # [G, W, M]
        allowed = torch.cat([old, new], dim=-1)  # [G, W, M + W]
        additive = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return additive.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def packable(model, length: int) -> bool:
    """Whether a packed forward runs on ``model`` with ``length`` slots per row: its attention takes a custom 4-D
    mask, and any sliding window (which such a mask does not apply) is longer than the row."""
    # transformers' config attribute naming the attention implementation (private name, the usual accessor)
    if getattr(model.config, "_attn_implementation", None) not in MASKED_ATTENTION:
        return False
    from .backends.hf.generate import _cache_layers

    windows = [layer.sliding_window for layer in _cache_layers(model) if layer.is_sliding]
    return not windows or length < min(windows)


def stacked_cache(model, pieces: list[list[tuple[torch.Tensor, torch.Tensor]] | None]):
    """A ``DynamicCache`` over G rows from per-row cached states (``pieces[g]``: per layer keys and values
    ``[1, heads, m_g, dim]``, or None for none), each row left-padded to the longest; None when all are None."""
    from transformers import DynamicCache

    reference = next((piece for piece in pieces if piece), None)
    if reference is None:
        return None
    width = max(piece[0][0].shape[-2] for piece in pieces if piece)
    cache = DynamicCache(config=model.config)
    for layer, (ref_keys, ref_values) in enumerate(reference):
        keys, values = [], []
        for piece in pieces:
            for states, ref, out in ((0, ref_keys, keys), (1, ref_values, values)):
                tensor = piece[layer][states] if piece else ref[..., :0, :]
                pad = width - tensor.shape[-2]
                out.append(torch.nn.functional.pad(tensor, (0, 0, pad, 0)) if pad else tensor)
        cache.update(torch.cat(keys), torch.cat(values), layer)  # [G, heads, M, dim]
    return cache


def row_states(cache, row: int, start: int, stop: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Slots ``start:stop`` of row ``row`` of a ``DynamicCache``, per layer ``[1, heads, stop - start, dim]``."""
    return [
        (layer.keys[row : row + 1, :, start:stop].clone(), layer.values[row : row + 1, :, start:stop].clone())
        for layer in cache.layers
    ]


@dataclass(frozen=True)
class PackedOutputs:
    batch: PackedBatch
    logits: torch.Tensor | None  # [G * W, V] float32 (only when asked for every slot)
    hidden: dict[int, torch.Tensor]  # {layer: [G * W, H]}
    prefix_logits: torch.Tensor  # [G, V] float32, the model's own logits at each prefix's last token


def packed_forward(
    model,
    prefixes: list[list[int]],
    row_prefix: list[int],
    continuations: list[list[int]],
    pad_token_id: int,
    layers: set[int],
    *,
    all_logits: bool = False,
    prefix_cache=None,
) -> PackedOutputs:
    """The packed batch's one forward; ``layers``' hidden states at every slot, the model's logits at the
    prefixes' last tokens (every slot's with ``all_logits``). With ``prefix_cache``, prefix g continues its
    longest cached match and is stored back."""
    device = model.device
    pieces: list[Any] = [None] * len(prefixes)
    cached = [0] * len(prefixes)
    reuse = prefix_cache is not None and prefix_cache.supports(model)
    if reuse:
        for g, prefix in enumerate(prefixes):
            cached[g], pieces[g] = prefix_cache.lookup(model, prefix, limit=len(prefix) - 1)
    batch = PackedBatch.of(prefixes, row_prefix, continuations, cached, pad_token_id)
    cache = stacked_cache(model, pieces)
    columns, which = torch.unique(batch.prefix_last % batch.width, return_inverse=True)  # [K], [G]
    out = model(
        input_ids=batch.ids.to(device),
        attention_mask=batch.mask(model.dtype, device),
        position_ids=batch.positions.to(device),
        past_key_values=cache,
        use_cache=reuse,
        output_hidden_states=bool(layers),
        return_dict=True,
        logits_to_keep=0 if all_logits else columns.to(device),  # [G, K, V]: the prefixes' last tokens only
    )
    rows = torch.arange(len(prefixes), device=device)
    if all_logits:
        logits = out.logits.float().flatten(0, 1)  # [G * W, V]
        prefix_logits = logits[batch.prefix_last.to(device)]
    else:
        logits, prefix_logits = None, out.logits[rows, which.to(device)].float()  # [G, V]
    if reuse:
        start = max(cached)
        for g, prefix in enumerate(prefixes):
            states = row_states(out.past_key_values, g, start - cached[g], start + len(prefix) - cached[g])
            prefix_cache.store(model, prefix, states)
    hidden = {layer: out.hidden_states[layer].flatten(0, 1) for layer in layers}  # [G * W, H]
    return PackedOutputs(batch, logits, hidden, prefix_logits)
