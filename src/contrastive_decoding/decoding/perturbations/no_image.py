"""The prompt without its image: VDD's contrast input ``x`` (Zhang et al., 2024, "Debiasing Multimodal Large
Language Models")."""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
