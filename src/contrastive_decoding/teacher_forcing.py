"""The model calls of teacher-forced scoring (:mod:`contrastive_decoding.scoring`): one full forward over
left-padded rows, and the shared-prefix path, where each distinct context runs once into a KV cache and every
continuation is scored from its context's cache (:func:`prefix_forward`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def forward_rows(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep: int,
    hidden: bool = False,
    cache: bool = False,
):
    """One forward over left-padded rows, positions and mask as ``SequenceRunner.prefill`` (``cache``: return
    the KV cache too)."""
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # [B, S]
    has_padding = bool((attention_mask == 0).any())
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask if has_padding else None,
        position_ids=position_ids,
        use_cache=cache,
        output_hidden_states=hidden,
        return_dict=True,
        logits_to_keep=keep,
    )


def left_padded(rows: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    from .backends.hf.runner import left_pad

    return left_pad([torch.tensor(row, dtype=torch.long, device=device) for row in rows], pad_token_id)


@dataclass(frozen=True)
class PrefixRows:
    """Continuation rows over G distinct prefixes: row r continues ``prefixes[row_prefix[r]]``."""

    prefixes: list[list[int]]  # G prefix token lists
    row_prefix: list[int]  # [R] the prefix each row continues
    continuations: list[list[int]]  # [R] each row's continuation tokens (at least one)

    @classmethod
    def group(cls, prefixes: list[list[int]], continuations: list[list[int]]) -> PrefixRows:
        """Rows with equal prefix token lists share one prefix (first-seen order)."""
        index: dict[tuple[int, ...], int] = {}
        row_prefix = [index.setdefault(tuple(prefix), len(index)) for prefix in prefixes]
        return cls([list(key) for key in index], row_prefix, [list(c) for c in continuations])


def right_padded(rows: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``input_ids [R, T]`` and ``attention_mask [R, T]``."""
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, : len(row)] = 1
    return input_ids.to(device), attention_mask.to(device)


def scored_position_index(row_prefix: list[int], lengths: list[int], window: int) -> torch.Tensor:
    """Where each scored position's output lies in ``cat([prefill_last [G], continuation [R', window]])``.

    Position 0 of row r (it predicts the continuation's first token) is the last prefix position: entry
    ``row_prefix[r]``. Position t >= 1 is the continuation pass's output at row r', column t - 1, where r' counts
    the rows with at least two tokens: entry ``G + r' * window + t - 1``. Returns ``[N]`` (N = sum of lengths),
    rows in order, positions in order.
    """
    groups = max(row_prefix) + 1
    index: list[int] = []
    second = 0
    for prefix, length in zip(row_prefix, lengths, strict=True):
        index.append(prefix)
        if length > 1:
            index.extend(groups + second * window + t for t in range(length - 1))
            second += 1
    return torch.tensor(index, dtype=torch.long)


@dataclass(frozen=True)
class PositionOutputs:
    """A model's outputs at the D distinct positions that predict continuation tokens, and which one each of
    the N scored positions (row by row, in order) is: rows of one prefix share their first position. The
    first G distinct positions are the G prefixes' last positions, whose model logits are ``prefix_logits``."""

    logits: torch.Tensor | None  # [D, V] float32
    hidden: dict[int, torch.Tensor]  # {layer: [D, H]}
    position: torch.Tensor  # [N] index into D
    prefix_logits: torch.Tensor  # [G, V] the model's own logits at the prefixes' last positions

    def expanded(self) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """The outputs at the N scored positions: ``[N, V]`` logits, ``{layer: [N, H]}``."""
        logits = self.logits[self.position] if self.logits is not None else None
        return logits, {layer: states[self.position] for layer, states in self.hidden.items()}


@dataclass
class Prefill:
    """The G prefixes run into one KV cache over ``[G, S]`` slots, row g's real tokens where ``mask[g]`` is 1,
    and the model's outputs at each prefix's last token."""

    cache: Any  # transformers Cache
    mask: torch.Tensor  # [G, S]
    logits: torch.Tensor  # [G, V] float32, the model's own
    hidden: dict[int, torch.Tensor]  # {layer: [G, H]}


def prefill_left_padded(model, prefixes: list[list[int]], pad_token_id: int, layers: set[int]) -> Prefill:
    """The prefixes left-padded, one forward from scratch."""
    ids, mask = left_padded(prefixes, pad_token_id, model.device)  # [G, S]
    out = forward_rows(model, ids, mask, keep=1, hidden=bool(layers), cache=True)
    hidden = {layer: out.hidden_states[layer][:, -1] for layer in layers}  # [G, H]
    return Prefill(out.past_key_values, mask, out.logits[:, -1].float(), hidden)


def shared_stem(prefixes: list[list[int]]) -> list[int]:
    """The tokens one cached row can hold for all G prefixes: the prefix itself when G = 1, else their common
    leading tokens, short of each prefix's last token (every prefix keeps a token of its own to run)."""
    if len(prefixes) == 1:
        return list(prefixes[0])
    from .prefix_cache import common_length

    first = prefixes[0]
    length = min([common_length(first, p) for p in prefixes[1:]] + [len(p) - 1 for p in prefixes])
    return list(first[:length])


def _extend(model, cache, tokens: list[int], start: int, hidden: bool):
    """``tokens[start:]`` as one unpadded row on ``cache`` (which holds ``tokens[:start]``)."""
    device = model.device
    return model(
        input_ids=torch.tensor([tokens[start:]], dtype=torch.long, device=device),  # [1, T]
        position_ids=torch.arange(start, len(tokens), device=device)[None],  # [1, T]
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=hidden,
        return_dict=True,
        logits_to_keep=1,
    )


def prefill_from_cache(
    model, prefixes: list[list[int]], pad_token_id: int, layers: set[int], prefix_cache
) -> Prefill | None:
    """The prefixes on a :class:`~contrastive_decoding.prefix_cache.PrefixCache`: their shared stem continues
    the cached entry sharing most of its tokens (only the rest runs, as one unpadded row) and is stored back;
    with G > 1 prefixes, each prefix's own tail then runs right-padded on the stem's cache, copied to G rows.
    ``None`` when the G > 1 prefixes share no token (nothing to reuse)."""
    device = model.device
    stem = shared_stem(prefixes)
    single = len(prefixes) == 1
    if not stem:
        return None
    reused, cache = prefix_cache.lookup(model, stem, limit=len(stem) - 1 if single else len(stem))
    out = None
    if reused < len(stem):
        out = _extend(model, cache, stem, reused, hidden=single and bool(layers))
        cache = out.past_key_values
        prefix_cache.store(model, stem, cache)
    if single:
        hidden = {layer: out.hidden_states[layer][:, -1] for layer in layers}  # [1, H]
        mask = torch.ones((1, len(stem)), dtype=torch.long, device=device)
        return Prefill(cache, mask, out.logits[:, -1].float(), hidden)
    groups, start = len(prefixes), len(stem)
    cache.batch_repeat_interleave(groups)
    tail_ids, tail_mask = right_padded([p[start:] for p in prefixes], pad_token_id, device)  # [G, T]
    mask = torch.cat([torch.ones((groups, start), dtype=torch.long, device=device), tail_mask], dim=1)
    last = tail_mask.sum(-1) - 1  # [G] each tail's last column
    columns, which = torch.unique(last, return_inverse=True)  # [K], [G]
    out = model(
        input_ids=tail_ids,
        attention_mask=mask,
        position_ids=start + torch.arange(tail_ids.shape[1], device=device)[None].expand(groups, -1),
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=bool(layers),
        return_dict=True,
        logits_to_keep=columns,  # [G, K, V]: the model's own head at the tails' last columns only
    )
    rows = torch.arange(groups, device=device)
    hidden = {layer: out.hidden_states[layer][rows, last] for layer in layers}  # [G, H]
    return Prefill(out.past_key_values, mask, out.logits[rows, which].float(), hidden)


def prefix_forward(
    model,
    rows: PrefixRows,
    pad_token_id: int,
    *,
    logits: bool = True,
    hidden_layers: frozenset[int] = frozenset(),
    prefix_cache=None,
    head=None,
) -> PositionOutputs:
    """The model's outputs at every position that predicts a continuation token, each prefix run once.

    Two forwards: the G distinct prefixes, left-padded, with a KV cache (its last position predicts every
    row's first continuation token), then every row's continuation but its last token, right-padded, on its
    prefix's cache (``Cache.reorder_cache`` picks each row's prefix; positions and mask continue the prefix's).
    With a ``prefix_cache`` (:class:`~contrastive_decoding.prefix_cache.PrefixCache`) the prefixes continue
    the cached prefix sharing most of their leading tokens instead (:func:`prefill_from_cache`). Returns final
    logits (``logits=True``) and the hidden states of ``hidden_layers`` (indices into transformers'
    ``hidden_states``: 0 = embeddings, -1 = the final, normed state) at the distinct positions that predict a
    continuation token (padding dropped), as one full forward of each ``prefix + continuation`` would give them
    (up to float rounding): project early exits there, then expand (:class:`PositionOutputs`). With an
    ``OutputHead`` ``head`` that reproduces the model's logits at the prefixes' last tokens, the final logits
    are ``head`` applied at these positions only, not at every padded one.
    """
    device = model.device
    wanted = set(hidden_layers) | ({-1} if logits and head is not None else set())
    prefill = None
    if prefix_cache is not None and prefix_cache.supports(model):
        prefill = prefill_from_cache(model, rows.prefixes, pad_token_id, wanted, prefix_cache)
    if prefill is None:
        prefill = prefill_left_padded(model, rows.prefixes, pad_token_id, wanted)
    use_head = logits and head is not None and head.matches(prefill.hidden[-1], prefill.logits)
    if not use_head:
        wanted = set(hidden_layers)
    lengths = [len(c) for c in rows.continuations]
    longer = [r for r, length in enumerate(lengths) if length > 1]
    pieces_logits = [prefill.logits]  # [G, V]
    pieces_hidden = {layer: [prefill.hidden[layer]] for layer in wanted}  # [G, H]
    window = max(lengths) - 1
    if longer:
        cache = prefill.cache
        select = torch.tensor([rows.row_prefix[r] for r in longer], dtype=torch.long, device=device)  # [R']
        cache.reorder_cache(select)
        tail_ids, tail_mask = right_padded(
            [rows.continuations[r][:-1] for r in longer], pad_token_id, device
        )  # [R', T]: T = window, the longest continuation but its last token
        mask = torch.cat([prefill.mask[select], tail_mask], dim=1)  # [R', S + T]
        start = prefill.mask[select].sum(-1, keepdim=True)  # [R', 1] each prefix's length
        positions = start + torch.arange(window, device=device)  # [R', T]
        second = model(
            input_ids=tail_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            output_hidden_states=bool(wanted),
            return_dict=True,
            logits_to_keep=0 if logits and not use_head else 1,
        )
        if logits and not use_head:
            pieces_logits.append(second.logits.float().flatten(0, 1))  # [R' * T, V]
        for layer in wanted:
            pieces_hidden[layer].append(second.hidden_states[layer].flatten(0, 1))  # [R' * T, H]
    index = scored_position_index(rows.row_prefix, lengths, window).to(device)  # [N]
    distinct, position = torch.unique(index, return_inverse=True)  # [D], [N]
    hidden = {layer: torch.cat(pieces)[distinct] for layer, pieces in pieces_hidden.items()}  # [D, H]
    final_logits = None
    if use_head:
        final_logits = head(hidden[-1])  # [D, V]: the LM head at the scored positions only
    elif logits:
        final_logits = torch.cat(pieces_logits)[distinct]
    return PositionOutputs(
        logits=final_logits,
        hidden={layer: hidden[layer] for layer in hidden_layers},
        position=position,
        prefix_logits=prefill.logits,
    )


def output_head(model):
    """The model's :class:`~contrastive_decoding.backends.hf.runner.OutputHead`, or None without output
    embeddings (``prefix_forward`` then takes the model's own logits at every position)."""
    from .backends.hf.runner import OutputHead

    return OutputHead(model) if model.get_output_embeddings() is not None else None


def prefix_targets(rows: PrefixRows, device) -> torch.Tensor:  # [N] the token each scored position predicts
    return torch.tensor([t for c in rows.continuations for t in c], dtype=torch.long, device=device)


def row_batches(
    context_ids: list[list[int]], continuation_ids: list[list[int]], batch_size: int, share_prefixes: bool
) -> list[list[int]]:
    """Row indices per batch. Longest first, so rows of similar length share a batch (less padding).

    With ``share_prefixes``, rows of one context are adjacent and a context's rows are kept in one batch when
    they fit in ``batch_size`` (a context with more rows than that is split into full batches), so each
    distinct context runs once per batch it is in.
    """
    if not share_prefixes:
        order = sorted(
            range(len(context_ids)), key=lambda i: -(len(context_ids[i]) + len(continuation_ids[i]))
        )
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, context in enumerate(context_ids):
        groups.setdefault(tuple(context), []).append(index)
    batches: list[list[int]] = []
    current: list[int] = []
    for members in sorted(groups.values(), key=lambda rows: -len(context_ids[rows[0]])):
        if current and len(current) + len(members) > batch_size:
            batches.append(current)
            current = []
        while len(members) > batch_size:
            batches.append(members[:batch_size])
            members = members[batch_size:]
        current.extend(members)
    if current:
        batches.append(current)
    return batches
