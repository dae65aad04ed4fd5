"""Teacher-forced scoring: ``score(model, tokenizer, contexts, continuations, method=...)``.

For each (context, continuation) pair, the log-likelihood of the continuation's tokens under the method's
contrasted next-token distribution, the way the DoLa and contrastive-decoding papers score multiple-choice
tasks (TruthfulQA MC, FACTOR): at continuation position t the method's scores are computed from
context + continuation[:t], exactly as generation computes them for the next token, and the token's entry of
``log_softmax(scores)`` is taken.

Each batch costs one forward per model (not one per token, not one per continuation): row g holds the batch's
distinct context g, then each of its continuations (but the last token) one after another under a 4-D mask
(:func:`prefix_forward`, :mod:`contrastive_decoding.packing`; CAD's context-free prompts are rows of the same
forward). A multiple-choice item (one question, k answers) thus computes its question once, not k times, and
every answer token once: the physical floor of teacher forcing; with a
:class:`~contrastive_decoding.prefix_cache.PrefixCache` a context continues the KV cache of an earlier call's
context sharing its leading tokens (a benchmark's few-shot stem runs once per run). The outputs (logits;
hidden states for DoLa, SLED and layer fusion) are taken, and projected through the LM head, only at the
positions that predict a continuation token. The method math is
``contrastive_decoding.decoding``'s, applied to every such position as if it were a row of a generation batch:

- ``plain`` (alias ``greedy``): the model's log-probabilities;
- ``dola``: ``dola.contrast(final, early, cfg)`` with the premature layer chosen per position, early exits from
  the Hugging Face backend's :class:`~contrastive_decoding.backends.hf.early_exit.EarlyExitHeads`;
- ``sled``: ``sled.sled_scores(final, early, cfg)`` per position, on the same early-exit heads (SLED's layers);
- ``expert_amateur``: ``expert_amateur.contrast(expert, amateur, cfg)``, one forward of each model;
- ``cad`` / ``adacad``: the CAD / AdaCAD score against ``context_free_contexts[i]`` + the same continuation
  (AdaCAD's alpha per position);
- ``layer_fusion``: the fused final + lower-layer expert-amateur contrast;
- methods whose ``MethodSpec.scoring`` says they do not score (contrastive search, the image methods,
  condition contrast) are refused with the spec's reason.

Scores outside a method's plausibility head are -inf (DoLa's relative-top head, expert-amateur's
``plausibility_alpha`` head), so a continuation token outside it scores -inf. DoLa's own multiple-choice scripts
(``tfqa_mc_eval.py``, ``factor_eval.py``) score with ``relative_top=0.0`` (no head) and without the final
log-softmax (``post_softmax=False``): ``score(..., method="dola", relative_top=0.0, normalize=False)``
reproduces that; the default (``relative_top=0.1``, normalized) scores what DoLa generation samples from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .decoding import context as context_math
from .decoding import dola as dola_math
from .decoding import expert_amateur as ea_math
from .decoding import make_method_config, method_parameters, registry
from .decoding import sled as sled_math
from .decoding.spec import AMATEUR, CONTEXT_FREE_PROMPT
from .method_call import SAMPLING_PARAMETERS, MethodCall
from .prefix_cache import PrefixCache
from .teacher_forcing import (
    PrefixRows,
    forward_rows,
    left_padded,
    output_head,
    prefix_forward,
    prefix_targets,
    row_batches,
)

# DoLa projects (1 + L) early-exit rows per position through the LM head; positions are processed in chunks
# so that one chunk's logits stay below this many elements (2**26 float32 = 256 MiB).
DOLA_CHUNK_ELEMENTS = 2**26


@dataclass
class ContinuationScore:
    """The score of one continuation given its context.

    ``logprob``: sum of ``token_logprobs``; ``token_logprobs``: one entry per continuation token (-inf for a
    token outside the method's plausibility head); ``num_tokens``: the number of continuation tokens;
    ``is_greedy``: every continuation token is the argmax of the method's scores (greedy decoding with the
    method would produce the continuation, ties aside). With ``normalize=False`` the log-prob fields hold the
    method's raw per-token scores instead.
    """

    logprob: float
    token_logprobs: list[float]
    num_tokens: int
    is_greedy: bool


# --------------------------------------------------------------------------- pure tensor functions


def continuation_positions(window: int, continuation_lengths: torch.Tensor) -> torch.Tensor:
    """Which of the last ``window`` positions of left-padded ``context + continuation`` rows predict a
    continuation token: ``[B] -> bool [B, window]``.

    Every row ends with its continuation, so for a continuation of m tokens the predicting positions are the
    m positions before the last one: window indices ``window - 1 - m .. window - 2``. Needs ``window > m``.
    """
    index = torch.arange(window, device=continuation_lengths.device)  # [W]
    lengths = continuation_lengths[:, None]  # [B, 1]
    return (index >= window - 1 - lengths) & (index < window - 1)  # [B, W]


def method_scores(
    method: str,
    cfg: Any,
    logits: torch.Tensor,  # [N, V] per-position logits (expert / with context)
    second_logits: torch.Tensor | None = None,  # [N, V] amateur or context-free logits
) -> torch.Tensor:  # [N, V] float32, what generation ranks the next token by
    """The method's next-token scores for N positions, each treated as one row of a generation batch."""
    if method == registry.PLAIN:
        return logits.float()
    if second_logits is None:
        raise ValueError(f"{method} needs second logits (amateur or context-free)")
    if method == "expert_amateur":
        return ea_math.contrast(logits, second_logits, cfg)
    if method == "cad":
        return context_math.cad_contrast(logits, second_logits, cfg.cad_alpha)
    if method == "adacad":
        return context_math.adacad_contrast(logits, second_logits, cfg)[0]
    raise ValueError(f"method_scores does not handle {method!r}")


def dola_scores(
    heads: Any,  # EarlyExitHeads
    hidden_states: Sequence[torch.Tensor | None],  # per layer [N, H]; only heads.layers and the last are read
    cfg: dola_math.DolaConfig,
    chunk_elements: int = DOLA_CHUNK_ELEMENTS,
) -> torch.Tensor:  # [N, V] DoLa scores, premature layer chosen per position
    """DoLa's scores at N positions: each position is a row for ``EarlyExitHeads`` and ``dola.contrast``."""
    final = hidden_states[-1]
    num_positions = final.shape[0]
    vocab = heads.head.lm_head.weight.shape[0]
    chunk = max(1, chunk_elements // ((1 + len(heads.layers)) * vocab))
    pieces = []
    for start in range(0, num_positions, chunk):
        # [n, 1, H] per layer: the heads read position -1 of each row.
        states = tuple(None if h is None else h[start : start + chunk, None, :] for h in hidden_states)
        final_logits, early_logits = heads(states)  # [n, V], [L, n, V]
        pieces.append(dola_math.contrast(final_logits, early_logits, cfg)[0])
    return torch.cat(pieces)


def sled_scores(
    heads: Any,  # EarlyExitHeads over SLED's layers
    hidden_states: Sequence[torch.Tensor | None],  # per layer [N, H]; only heads.layers and the last are read
    cfg: sled_math.SledConfig,
    chunk_elements: int = DOLA_CHUNK_ELEMENTS,
) -> torch.Tensor:  # [N, V] SLED's evolved scores
    """SLED's scores at N positions: each position is a row for ``EarlyExitHeads`` and ``sled.sled_scores``."""
    final = hidden_states[-1]
    vocab = heads.head.lm_head.weight.shape[0]
    chunk = max(1, chunk_elements // ((1 + len(heads.layers)) * vocab))
    pieces = []
    for start in range(0, final.shape[0], chunk):
        states = tuple(None if h is None else h[start : start + chunk, None, :] for h in hidden_states)
        final_logits, early_logits = heads(states)  # [n, V], [L, n, V]
        pieces.append(sled_math.sled_scores(final_logits, early_logits, cfg))
    return torch.cat(pieces)


def token_scores(
    scores: torch.Tensor,  # [N, V]
    targets: torch.Tensor,  # [N] token ids
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:  # per-token values [N] float32, is argmax [N] bool
    """``log_softmax(scores)[target]`` (``normalize=False``: ``scores[target]``) and whether target is the argmax."""
    values = scores.float().log_softmax(dim=-1) if normalize else scores.float()
    picked = values.gather(-1, targets[:, None]).squeeze(-1)  # [N]
    return picked, scores.argmax(dim=-1) == targets


@torch.no_grad()
def _score_batch(
    method: str,
    cfg: Any,
    model,
    sequences: list[list[int]],  # context + continuation ids per row
    continuation_lengths: list[int],
    *,
    free_sequences: list[list[int]] | None,
    amateur_model,
    vocab_size: int | None,
    heads: Any,
    pad_token_id: int,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # values [N], is argmax [N]: row by row, positions in order
    device = model.device
    batch = len(sequences)
    lengths = torch.tensor(continuation_lengths, device=device)  # [B]
    window = int(lengths.max()) + 1  # the positions that predict continuation tokens, plus the last one
    all_rows = sequences + (free_sequences or [])
    input_ids, attention_mask = left_padded(all_rows, pad_token_id, device)  # [B or 2B, S]
    positions = continuation_positions(window, lengths)  # [B, W]
    targets = input_ids[:batch, -window:].roll(-1, dims=1)[positions]  # [N] the token each position predicts

    if method == "layer_fusion":
        scores = _layer_fusion_scores(
            cfg, model, heads, input_ids, attention_mask, batch, window, positions, amateur_model, vocab_size
        )
    elif method in ("dola", "sled"):
        outputs = forward_rows(model, input_ids, attention_mask, keep=1, hidden=True)
        heads.head.check(outputs.hidden_states[-1][:, -1], outputs.logits[:, -1].float())
        needed = {*heads.layers, len(outputs.hidden_states) - 1}
        states = [
            h[:, -window:][positions] if index in needed else None
            for index, h in enumerate(outputs.hidden_states)
        ]  # per layer [N, H]
        scores = (dola_scores if method == "dola" else sled_scores)(heads, states, cfg)
    else:
        logits = forward_rows(model, input_ids, attention_mask, keep=window).logits  # [B or 2B, W, V]
        if method == "expert_amateur":
            amateur_device = amateur_model.device
            amateur_logits = forward_rows(
                amateur_model, input_ids.to(amateur_device), attention_mask.to(amateur_device), keep=window
            ).logits
            first = logits[positions][:, :vocab_size]  # [N, V]
            second = amateur_logits[positions.to(amateur_device)][:, :vocab_size].to(first.device)
        elif method in registry.taking(CONTEXT_FREE_PROMPT):
            first, second = logits[:batch][positions], logits[batch:][positions]  # [N, V] each
        else:
            first, second = logits[positions], None
        scores = method_scores(method, cfg, first, second)
    return token_scores(scores, targets, normalize)


@torch.no_grad()
def _score_shared(
    method: str,
    cfg: Any,
    model,
    contexts: list[list[int]],  # per row
    continuations: list[list[int]],
    *,
    free_contexts: list[list[int]] | None,
    amateur_model,
    vocab_size: int | None,
    heads: Any,
    pad_token_id: int,
    normalize: bool,
    prefix_cache: PrefixCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # values [N], is argmax [N]: row by row, positions in order
    """``_score_batch``'s scores with each distinct prefix run once (see :func:`prefix_forward`), continuing
    ``prefix_cache``'s entries when given, the LM head applied at the scored positions only. The context-free
    (or induced) rows run in the same forward as the context rows, each with its own prefix."""
    rows = PrefixRows.group(contexts, continuations)
    both = None  # the context rows, then the context-free rows: [2N] scored positions
    if free_contexts is not None:
        both = PrefixRows.group(contexts + free_contexts, continuations + continuations)
    targets = prefix_targets(rows, model.device)
    if method in ("dola", "sled"):  # early exits projected once per distinct position, then expanded
        layers = frozenset({*heads.layers, -1})
        outputs = prefix_forward(
            model, rows, pad_token_id, logits=False, hidden_layers=layers, prefix_cache=prefix_cache
        )
        heads.head.check(outputs.hidden[-1][outputs.prefix_position], outputs.prefix_logits)
        num_states = max(heads.layers) + 1
        states = [outputs.hidden.get(index) for index in range(num_states)] + [outputs.hidden[-1]]
        scores = (dola_scores if method == "dola" else sled_scores)(heads, states, cfg)[outputs.position]
    elif method == "layer_fusion":
        scores = _layer_fusion_shared(
            cfg, model, heads, both or rows, amateur_model, vocab_size, pad_token_id, prefix_cache
        )
    else:
        first, _ = prefix_forward(
            model, both or rows, pad_token_id, head=output_head(model), prefix_cache=prefix_cache
        ).expanded()
        second = None
        if both is not None:
            first, second = first[: len(targets)], first[len(targets) :]  # [N, V] each
        if method == "expert_amateur":
            amateur_logits, _ = prefix_forward(
                amateur_model, rows, pad_token_id, head=output_head(amateur_model), prefix_cache=prefix_cache
            ).expanded()
            first, second = first[:, :vocab_size], amateur_logits[:, :vocab_size].to(first.device)
        scores = method_scores(method, cfg, first, second)
    return token_scores(scores, targets, normalize)


def _layer_fusion_shared(cfg, model, heads, rows, amateur_model, vocab_size, pad_token_id, prefix_cache):
    """``rows``: without an amateur, the context rows then the induced ones (one forward of the model)."""
    from .decoding.layer_fusion import layer_fusion_contrast

    (head, norm, layer), (amateur_head, amateur_norm, amateur_layer) = heads

    def final_and_lower(m, m_rows, m_head, m_norm, m_layer):
        outputs = prefix_forward(
            m,
            m_rows,
            pad_token_id,
            hidden_layers=frozenset({m_layer}),
            prefix_cache=prefix_cache,
            head=m_head,
        )
        lower = m_head(m_norm(outputs.hidden[m_layer]))  # [D, V]: the lower layer's exit, once per position
        return outputs.logits[outputs.position], lower[outputs.position]  # [N, V] each

    expert_final, expert_lower = final_and_lower(model, rows, head, norm, layer)
    if amateur_model is None:  # the model itself on the induced prompts: the second half of the rows
        half = expert_final.shape[0] // 2
        amateur_final, amateur_lower = expert_final[half:], expert_lower[half:]
        expert_final, expert_lower = expert_final[:half], expert_lower[:half]
    else:
        amateur_final, amateur_lower = (
            logits.to(expert_final.device)
            for logits in final_and_lower(amateur_model, rows, amateur_head, amateur_norm, amateur_layer)
        )
    v = vocab_size or expert_final.shape[-1]
    return layer_fusion_contrast(
        expert_final[:, :v], amateur_final[:, :v], expert_lower[:, :v], amateur_lower[:, :v], cfg
    )


def _fusion_logits(model, head, norm, layer: int, input_ids, attention_mask, window, positions):
    """(final [N, V], lower-layer early exit [N, V]) at the scored positions of one model's rows."""
    outputs = forward_rows(model, input_ids, attention_mask, keep=window, hidden=True)
    final = outputs.logits[:, -window:][positions].float()  # [N, V]
    lower = head(norm(outputs.hidden_states[layer][:, -window:][positions]))  # [N, V]
    return final, lower


def _layer_fusion_scores(
    cfg, model, heads, input_ids, attention_mask, batch, window, positions, amateur_model, vocab_size
) -> torch.Tensor:  # [N, V]
    from .decoding.layer_fusion import layer_fusion_contrast

    (head, norm, layer), (amateur_head, amateur_norm, amateur_layer) = heads
    expert_rows = slice(0, batch)
    expert_final, expert_lower = _fusion_logits(
        model, head, norm, layer, input_ids[expert_rows], attention_mask[expert_rows], window, positions
    )
    if amateur_model is None:  # the model itself on the induced prompts (the extra rows)
        amateur_final, amateur_lower = _fusion_logits(
            model, head, norm, layer, input_ids[batch:], attention_mask[batch:], window, positions
        )
    else:
        device = amateur_model.device
        amateur_final, amateur_lower = (
            logits.to(expert_final.device)
            for logits in _fusion_logits(
                amateur_model,
                amateur_head,
                amateur_norm,
                amateur_layer,
                input_ids[expert_rows].to(device),
                attention_mask[expert_rows].to(device),
                window,
                positions.to(device),
            )
        )
    v = vocab_size or expert_final.shape[-1]
    return layer_fusion_contrast(
        expert_final[:, :v], amateur_final[:, :v], expert_lower[:, :v], amateur_lower[:, :v], cfg
    )


def _fusion_heads(model, amateur_model, cfg) -> tuple:
    from .backends.hf.early_exit import check_dola_architecture, final_norm
    from .backends.hf.runner import OutputHead
    from .decoding.layer_fusion import lower_layers

    check_dola_architecture(model)
    layers = model.config.get_text_config().num_hidden_layers
    amateur = amateur_model if amateur_model is not None else model
    if amateur_model is not None:
        check_dola_architecture(amateur_model)
    layer, amateur_layer = lower_layers(cfg, layers, amateur.config.get_text_config().num_hidden_layers)

    def parts(m, index):
        return OutputHead(m), final_norm(m), index

    return parts(model, layer), parts(amateur, amateur_layer)


# --------------------------------------------------------------------------- the public API


def _method_config(method: str | MethodCall, params: dict[str, Any]) -> Any:
    if isinstance(method, MethodCall):
        if params or method.sampling:
            extra = ", ".join([*params, *method.sampling])
            raise ValueError(
                f"score takes the method's parameters only once and no sampling ones; got {extra}"
            )
        return method.config
    names = method_parameters(method)
    for key in params:
        if key in SAMPLING_PARAMETERS and key not in names:
            raise ValueError(
                f"score does not sample or penalize: {key!r} is a generation parameter. Valid parameters for "
                f"method {method!r}: {', '.join(names) or 'none'}."
            )
    return make_method_config(method, **params)  # unknown parameters raise there, with a did-you-mean


def _as_list(values: Sequence[str] | str, name: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{index}] must be a string, got {type(value).__name__}")
    return values


def score(
    model,
    tokenizer,
    contexts: Sequence[str] | str,
    continuations: Sequence[str] | str,
    method: str | MethodCall = "plain",
    *,
    context_free_contexts: Sequence[str] | str | None = None,
    amateur_model=None,
    amateur_tokenizer=None,
    batch_size: int = 8,
    normalize: bool = True,
    amateur_instruction: str | None = None,
    share_prefixes: bool = True,
    prefix_cache: PrefixCache | None = None,
    **params: Any,
) -> list[ContinuationScore]:
    """Score each continuation given its context under ``method``'s contrasted next-token distribution.

    ``contexts[i]`` is tokenized as a prompt (``tokenizer(context)``, special tokens included, as
    :func:`contrastive_decoding.generate` does) and ``continuations[i]`` alone without special tokens
    (``tokenizer(continuation, add_special_tokens=False)``); the ids are concatenated, so put the separating
    space in the continuation (``" Paris"``). ``params`` are the method's parameters (``dola_layers``,
    ``relative_top``, ``cad_alpha``, ...), validated as in ``generate``. ``context_free_contexts[i]`` is
    ``contexts[i]`` without its context (CAD / AdaCAD); ``amateur_model`` (with ``amateur_tokenizer``) the
    amateur for ``expert_amateur``. ``normalize=False`` returns the method's raw scores of the tokens
    instead of their log-softmax (DoLa's ``post_softmax=False``; see the module docstring for reproducing
    DoLa's multiple-choice numbers with ``relative_top=0.0``).

    Each distinct context (and context-free context) runs once per batch and its continuations are scored from
    its KV cache (``share_prefixes=True``, the default; ``batch_size`` counts continuations, a context's
    continuations share a batch when they fit). ``share_prefixes=False`` runs every ``context + continuation``
    as its own full sequence instead: the same scores up to float rounding, for models whose cache cannot be
    reordered. A ``prefix_cache`` (:class:`~contrastive_decoding.prefix_cache.PrefixCache`, shared across
    calls) keeps the KV caches of recent contexts: a later context runs only the tokens after the longest
    leading run it shares with one of them (a benchmark's instruction and few-shot examples run once per
    run, not once per item), with the same scores up to float rounding.

    >>> score(model, tokenizer, ["Q: What is the capital of France?\\nA:"] * 2, [" Paris", " Lyon"],
    ...       method="dola", dola_layers="high", relative_top=0.0)
    """
    spec = method.spec if isinstance(method, MethodCall) else registry.get_spec(method)
    if not spec.scoring.per_continuation:  # cannot score, or scores a set of choices (calibration)
        raise ValueError(f"{spec.name} cannot score continuations one at a time: {spec.scoring.reason}")
    cfg = _method_config(method, params)
    method = spec.name
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False, got {normalize!r}")
    if not isinstance(share_prefixes, bool):
        raise ValueError(f"share_prefixes must be True or False, got {share_prefixes!r}")
    if prefix_cache is not None and not isinstance(prefix_cache, PrefixCache):
        raise ValueError(f"prefix_cache must be a PrefixCache or None, got {type(prefix_cache).__name__}")
    if prefix_cache is not None and not share_prefixes:
        raise ValueError("prefix_cache needs share_prefixes=True (the full path runs every sequence whole)")
    contexts = _as_list(contexts, "contexts")
    continuations = _as_list(continuations, "continuations")
    if len(contexts) != len(continuations):
        raise ValueError(
            f"contexts and continuations must have the same length, got {len(contexts)} contexts and "
            f"{len(continuations)} continuations"
        )
    free_texts: list[str] | None = None
    if spec.takes(CONTEXT_FREE_PROMPT):
        if context_free_contexts is None:
            raise ValueError(
                f"{method} needs context_free_contexts: one per context, the context's prompt without the "
                "context (the continuations are appended to both)"
            )
        free_texts = _as_list(context_free_contexts, "context_free_contexts")
        if len(free_texts) != len(contexts):
            raise ValueError(
                f"{method} needs one context_free_context per context, got {len(free_texts)} for "
                f"{len(contexts)} contexts"
            )
    if AMATEUR in spec.needs and amateur_model is None:
        raise ValueError(f"{method} needs an amateur model (a smaller model with the same tokenizer)")
    if model.config.is_encoder_decoder:
        raise ValueError(f"score supports decoder-only models; {type(model).__name__} is an encoder-decoder")

    heads = None
    vocab_size = None
    if method == "layer_fusion":
        if cfg.refocus_weight:
            raise ValueError("score does not take layer_fusion's refocus branch: set refocus_weight=0")
        heads = _fusion_heads(model, amateur_model, cfg)
        if (
            amateur_model is None
        ):  # the amateur is the model itself after the hallucination-inducing instruction
            from .decoding.layer_fusion import DEFAULT_AMATEUR_INSTRUCTION

            instruction = (
                amateur_instruction if amateur_instruction is not None else DEFAULT_AMATEUR_INSTRUCTION
            )
            free_texts = [instruction + context for context in contexts]
        else:
            from .backends.hf.generate import shared_vocabulary_size

            vocab_size = shared_vocabulary_size(model, amateur_model, tokenizer, amateur_tokenizer)
    if method == "dola":
        from .backends.hf.early_exit import EarlyExitHeads

        heads = EarlyExitHeads(model, cfg.dola_layers, apply_final_norm=cfg.early_exit_norm)
    if method == "sled":
        from .backends.hf.early_exit import EarlyExitHeads

        text = model.config.get_text_config()
        layers = sled_math.early_exit_layers(
            cfg.sled_layers, text.num_hidden_layers, bool(text.tie_word_embeddings)
        )
        heads = EarlyExitHeads(model, layers=layers, apply_final_norm=cfg.early_exit_norm, method="SLED")
    if AMATEUR in spec.needs:
        from .backends.hf.generate import shared_vocabulary_size

        vocab_size = shared_vocabulary_size(model, amateur_model, tokenizer, amateur_tokenizer)

    if not contexts:
        return []
    context_ids = tokenizer(contexts)["input_ids"]
    continuation_ids = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    free_ids = tokenizer(free_texts)["input_ids"] if free_texts is not None else None
    _check_lengths(model, context_ids, continuation_ids, free_ids)

    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    results: list[ContinuationScore | None] = [None] * len(context_ids)
    common = dict(amateur_model=amateur_model, vocab_size=vocab_size, heads=heads, normalize=normalize)
    common["pad_token_id"] = int(pad_token_id)
    for rows in row_batches(context_ids, continuation_ids, batch_size, share_prefixes):
        lengths = [len(continuation_ids[i]) for i in rows]
        if share_prefixes:
            values, greedy = _score_shared(
                method,
                cfg,
                model,
                [context_ids[i] for i in rows],
                [continuation_ids[i] for i in rows],
                free_contexts=[free_ids[i] for i in rows] if free_ids else None,
                prefix_cache=prefix_cache,
                **common,
            )
        else:
            free_sequences = (
                [list(free_ids[i]) + list(continuation_ids[i]) for i in rows] if free_ids else None
            )
            sequences = [list(context_ids[i]) + list(continuation_ids[i]) for i in rows]
            values, greedy = _score_batch(
                method, cfg, model, sequences, lengths, free_sequences=free_sequences, **common
            )
        for row, row_values, row_greedy in zip(
            rows, values.split(lengths), greedy.split(lengths), strict=True
        ):
            token_values = row_values.tolist()
            results[row] = ContinuationScore(
                logprob=float(sum(token_values)),
                token_logprobs=token_values,
                num_tokens=len(token_values),
                is_greedy=bool(row_greedy.all()),
            )
    return results  # type: ignore[return-value]


def _check_lengths(
    model,
    context_ids: list[list[int]],
    continuation_ids: list[list[int]],
    free_ids: list[list[int]] | None,
) -> None:
    from .api import context_limit

    limit = context_limit(model)
    for index, (context, continuation) in enumerate(zip(context_ids, continuation_ids, strict=True)):
        if not continuation:
            raise ValueError(f"continuation {index} is empty: it has no tokens to score")
        if not context:
            raise ValueError(
                f"context {index} has no tokens: the first continuation token needs at least one token "
                "before it (start the context with the tokenizer's BOS token, or move a word into it)"
            )
        total = len(context) + len(continuation)
        if limit is not None and total > limit:
            raise ValueError(
                f"pair {index} has {total} tokens (context {len(context)} + continuation {len(continuation)}), "
                f"more than the model's context of {limit} tokens. Shorten the context or the continuation."
            )
        if free_ids is not None:
            free = free_ids[index]
            if not free:
                raise ValueError(
                    f"context_free_context {index} has no tokens: the first continuation token needs at least "
                    "one token before it"
                )
            if limit is not None and len(free) + len(continuation) > limit:
                raise ValueError(
                    f"context-free pair {index} has {len(free) + len(continuation)} tokens, more than the "
                    f"model's context of {limit} tokens"
                )
