"""The model calls of teacher-forced scoring (:mod:`contrastive_decoding.scoring`): one full forward over
left-padded rows, and the shared-prefix path, where each distinct context runs once into a KV cache (or
continues a cached earlier context's) and every continuation is scored from its context's cache, all of a
context's continuations packed into one row (:func:`prefix_forward`)."""

from __future__ import annotations

from dataclasses import dataclass

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
    the N scored positions (row by row, in order) is: rows of one prefix share their first position, the
    prefix's last token, which is distinct position ``prefix_position[g]`` for prefix g."""

    logits: torch.Tensor | None  # [D, V] float32
    hidden: dict[int, torch.Tensor]  # {layer: [D, H]}
    position: torch.Tensor  # [N] index into D
    prefix_logits: torch.Tensor  # [G, V] the model's own logits at the prefixes' last positions
    prefix_position: torch.Tensor  # [G] index into D

    def expanded(self) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """The outputs at the N scored positions: ``[N, V]`` logits, ``{layer: [N, H]}``."""
        logits = self.logits[self.position] if self.logits is not None else None
        return logits, {layer: states[self.position] for layer, states in self.hidden.items()}


def padded_forward(model, rows: PrefixRows, pad_token_id: int, layers: set[int], all_logits: bool):
    """The two-forward path for models whose attention takes no 4-D mask (or a sliding window shorter than
    the rows): the prefixes left-padded into a KV cache, then one right-padded row per continuation (but its
    last token) on the cache copied per row (``Cache.reorder_cache``). Returns (logits [X, V] or None, {layer:
    [X, H]}, prefix logits [G, V], index [N] into X, prefix_last [G] into X)."""
    device = model.device
    ids, prefix_mask = left_padded(rows.prefixes, pad_token_id, device)  # [G, S]
    first = forward_rows(model, ids, prefix_mask, keep=1, hidden=bool(layers), cache=True)
    prefix_logits = first.logits[:, -1].float()  # [G, V]
    pieces_logits = [prefix_logits]
    pieces_hidden = {layer: [first.hidden_states[layer][:, -1]] for layer in layers}  # [G, H]
    lengths = [len(c) for c in rows.continuations]
    longer = [r for r, length in enumerate(lengths) if length > 1]
    window = max(lengths) - 1
    if longer:
        cache = first.past_key_values
        select = torch.tensor([rows.row_prefix[r] for r in longer], dtype=torch.long, device=device)  # [R']
        cache.reorder_cache(select)
        tail_ids, tail_mask = right_padded(
            [rows.continuations[r][:-1] for r in longer], pad_token_id, device
        )  # [R', T]: T = window, the longest continuation but its last token
        mask = torch.cat([prefix_mask[select], tail_mask], dim=1)  # [R', S + T]
        start = prefix_mask[select].sum(-1, keepdim=True)  # [R', 1] each prefix's length
        second = model(
            input_ids=tail_ids,
            attention_mask=mask,
            position_ids=start + torch.arange(window, device=device),  # [R', T]
            past_key_values=cache,
            use_cache=True,
            output_hidden_states=bool(layers),
            return_dict=True,
            logits_to_keep=0 if all_logits else 1,
        )
        if all_logits:
            pieces_logits.append(second.logits.float().flatten(0, 1))  # [R' * T, V]
        for layer in layers:
            pieces_hidden[layer].append(second.hidden_states[layer].flatten(0, 1))  # [R' * T, H]
    logits = torch.cat(pieces_logits) if all_logits else None
    hidden = {layer: torch.cat(pieces) for layer, pieces in pieces_hidden.items()}
    index = scored_position_index(rows.row_prefix, lengths, window)
    return logits, hidden, prefix_logits, index, torch.arange(len(rows.prefixes))


def prefix_forward(
    model,
    rows: PrefixRows,
    pad_token_id: int,
    *,
    logits: bool = True,
    hidden_layers: frozenset[int] = frozenset(),
    prefix_cache=None,
    head=None,
    pack: bool | None = None,
) -> PositionOutputs:
    """The model's outputs at every position that predicts a continuation token, each prefix run once.

    One forward (:func:`~contrastive_decoding.packing.packed_forward`): row g holds prefix g, then each of its
    continuations but the last token, one after another under a 4-D mask, so that every token is computed
    once. With a ``prefix_cache`` (:class:`~contrastive_decoding.prefix_cache.PrefixCache`) a prefix first
    continues the cached prefix sharing most of its leading tokens and runs only the rest. Where the model's
    attention cannot take the mask (``pack=None`` decides, ``pack=False`` forces it), two forwards without the
    prefix cache instead (:func:`padded_forward`). Returns final logits (``logits=True``) and the hidden states
    of ``hidden_layers`` (indices into transformers' ``hidden_states``: 0 = embeddings, -1 = the final, normed
    state) at the distinct positions that predict a continuation token (padding dropped), as one full forward
    of each ``prefix + continuation`` would give them (up to float rounding): project early exits there, then
    expand (:class:`PositionOutputs`). With an ``OutputHead`` ``head``, the final logits are ``head`` at these
    positions only, once it reproduces the model's own logits at the prefixes' last tokens (else the model's
    logits at every position, from a second run).
    """
    from .packing import packable, packed_forward

    device = model.device
    wanted = set(hidden_layers) | ({-1} if logits and head is not None else set())
    all_logits = logits and head is None
    if pack is None:
        widths = [len(prefix) for prefix in rows.prefixes]
        for prefix, continuation in zip(rows.row_prefix, rows.continuations, strict=True):
            widths[prefix] += len(continuation) - 1
        pack = packable(model, max(widths))  # sliding-window models keep no prefix cache: rows are this wide
    if pack:
        out = packed_forward(
            model,
            rows.prefixes,
            rows.row_prefix,
            rows.continuations,
            pad_token_id,
            wanted,
            all_logits=all_logits,
            prefix_cache=prefix_cache,
        )
        flat_logits, flat_hidden, prefix_logits = out.logits, out.hidden, out.prefix_logits
        index, prefix_last = out.batch.index, out.batch.prefix_last
    else:
        flat_logits, flat_hidden, prefix_logits, index, prefix_last = padded_forward(
            model, rows, pad_token_id, wanted, all_logits
        )
    distinct, position = torch.unique(index.to(device), return_inverse=True)  # [D], [N]
    prefix_position = torch.searchsorted(distinct, prefix_last.to(device))  # [G]
    hidden = {layer: states[distinct] for layer, states in flat_hidden.items()}  # [D, H]
    final_logits = flat_logits[distinct] if flat_logits is not None else None  # [D, V]
    if logits and head is not None:
        final_logits = head(hidden[-1])  # [D, V]: the LM head at the scored positions only
        if not head.close(final_logits[prefix_position], prefix_logits):  # custom logit post-processing
            return prefix_forward(model, rows, pad_token_id, hidden_layers=hidden_layers, pack=pack)
    return PositionOutputs(
        logits=final_logits,
        hidden={layer: hidden[layer] for layer in hidden_layers},
        position=position,
        prefix_logits=prefix_logits,
        prefix_position=prefix_position,
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
