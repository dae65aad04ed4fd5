"""Slow, obviously-correct reference decoders: batch size 1, no KV cache, the whole sequence re-run every step,
the math written out again here (independently of ``contrastive_decoding.decoding``)."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def _full(model, ids: list[int], hidden: bool = False):
    return model(torch.tensor([ids]), output_hidden_states=hidden, use_cache=False)


def greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(_full(model, ids).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def contrastive_search(model, prompt: list[int], steps: int, penalty_alpha: float, top_k: int) -> list[int]:
    ids = list(prompt)
    for _ in range(steps):
        out = _full(model, ids, hidden=True)
        context = out.hidden_states[-1][0]  # [S, H]
        probs = out.logits[0, -1].float().softmax(-1)
        top_probs, top_ids = probs.topk(top_k)
        best, best_score = None, -math.inf
        for prob, token in zip(top_probs.tolist(), top_ids.tolist(), strict=True):
            candidate = _full(model, ids + [token], hidden=True).hidden_states[-1][0, -1]  # [H]
            penalty = max(float(torch.nn.functional.cosine_similarity(candidate, h, dim=0)) for h in context)
            score = (1 - penalty_alpha) * prob - penalty_alpha * penalty
            if score > best_score:
                best, best_score = token, score
        ids.append(best)
    return ids[len(prompt) :]


def dola(model, prompt: list[int], steps: int, layers: list[int], relative_top: float = 0.1) -> list[int]:
    lm_head = model.get_output_embeddings()
    softcap = getattr(
        model.config, "final_logit_softcapping", None
    )  # Gemma 2/3: the model's own logits have it

    def head(hidden):
        logits = lm_head(hidden)
        return logits if softcap is None else torch.tanh(logits / softcap) * softcap

    ids = list(prompt)
    for _ in range(steps):
        out = _full(model, ids, hidden=True)
        final = out.logits[0, -1].float().log_softmax(-1)
        best_layer, best_div = None, -math.inf
        for layer in layers:
            early = head(out.hidden_states[layer][0, -1]).float().log_softmax(-1)
            m = 0.5 * (final.exp() + early.exp())
            # the DoLa code's divergence: mean over the vocabulary of KL(M || p) terms
            div = 0.5 * ((m * (m.log() - final)).mean() + (m * (m.log() - early)).mean())
            if len(layers) == 1 or div > best_div:
                best_layer, best_div = layer, div
        premature = head(out.hidden_states[best_layer][0, -1]).float().log_softmax(-1)
        keep = final >= final.max() + math.log(relative_top)
        score = torch.where(keep, final - premature, torch.full_like(final, -math.inf))
        ids.append(int(score.argmax()))
    return ids[len(prompt) :]


def expert_amateur(
    expert, amateur, prompt, steps, plausibility_alpha=0.1, amateur_temperature=1.0, beta=None
):
    ids = list(prompt)
    for _ in range(steps):
        e = _full(expert, ids).logits[0, -1].float().log_softmax(-1)
        a = (_full(amateur, ids).logits[0, -1].float() / amateur_temperature).log_softmax(-1)
        score = e - a if beta is None else (1 + beta) * e - beta * a
        keep = e.exp() >= plausibility_alpha * e.exp().max()
        ids.append(int(torch.where(keep, score, torch.full_like(score, -math.inf)).argmax()))
    return ids[len(prompt) :]


def cad(model, prompt, context_free_prompt, steps, alpha=1.0, adaptive=False, threshold=0.0):
    ids, free = list(prompt), list(context_free_prompt)
    for _ in range(steps):
        c = _full(model, ids).logits[0, -1].float()
        f = _full(model, free).logits[0, -1].float()
        if adaptive:
            p, q = c.softmax(-1), f.softmax(-1)
            m = 0.5 * (p + q)
            alpha = float(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())
            alpha = 0.0 if alpha < threshold else alpha
        score = (1 + alpha) * c.log_softmax(-1) - alpha * f.log_softmax(-1)
        token = int(score.argmax())
        ids.append(token)
        free.append(token)
    return ids[len(prompt) :]


def seeded_sample(
    model, prompt: list[int], steps: int, temperature: float, seed: int, first_position: int = 0, eos=2
) -> list[int]:
    """Sampling with temperature, each draw by inverse CDF on the uniform keyed on (seed, output position),
    the package's seeding scheme (positions counted from ``first_position``); stops after an EOS."""
    from contrastive_decoding.samplers.seeding import draw_generator

    eos = {eos} if isinstance(eos, int) else set(eos)
    ids = list(prompt)
    for step in range(steps):
        probs = (_full(model, ids).logits[0, -1] / temperature).float().softmax(-1)
        uniform = torch.rand((), dtype=torch.float64, generator=draw_generator(seed, first_position + step))
        cdf = probs.double().cumsum(-1)
        token = int((cdf > uniform * cdf[-1]).nonzero()[0])
        ids.append(token)
        if token in eos:
            break
    return ids[len(prompt) :]


def candidate_contrastive_score(
    model, prompt: list[int], candidate: list[int], penalty_alpha: float
) -> float:
    """The mean over the candidate's tokens of (1 - alpha) p(token | before) - alpha max cos(h_token, h_before)."""
    out = _full(model, prompt + candidate, hidden=True)
    probs = out.logits[0].float().softmax(-1)  # [S, V]
    hidden = out.hidden_states[-1][0]  # [S, H]
    total = 0.0
    for t, token in enumerate(candidate):
        position = len(prompt) + t
        penalty = max(
            float(torch.nn.functional.cosine_similarity(hidden[position], hidden[j], dim=0))
            for j in range(position)
        )
        total += (1 - penalty_alpha) * float(probs[position - 1, token]) - penalty_alpha * penalty
    return total / len(candidate)


def rerank_beam_search(
    model,
    prompt: list[int],
    max_new_tokens: int,
    *,
    num_samples: int,
    beam_width: int,
    segment_length: int,
    temperature: float,
    seed: int,
    penalty_alpha: float,
    eos=2,
) -> list[int]:
    """RankGen's beam search for one prompt, with the contrastive-search scorer: every unfinished beam samples
    ``num_samples`` segments (sample j of beam slot w seeded ``seed + w * num_samples + j``); the best
    ``beam_width`` of all candidates (finished beams with their score) are kept, ties to the lower index."""
    eos = {eos} if isinstance(eos, int) else set(eos)
    beams = [([], False, 0.0)] * beam_width  # (tokens, finished, score)
    generated = 0
    while generated < max_new_tokens and not all(finished for _, finished, _ in beams):
        length = min(segment_length, max_new_tokens - generated)
        entries = []  # (score, order, beam)
        for w, (tokens, finished, score) in enumerate(beams):
            if finished:
                entries.append((score, w * num_samples, (tokens, True, score)))
                continue
            for j in range(num_samples):
                new = seeded_sample(
                    model, prompt + tokens, length, temperature, seed + w * num_samples + j, generated, eos
                )
                candidate = tokens + new
                value = candidate_contrastive_score(model, prompt, candidate, penalty_alpha)
                done = bool(eos & set(new)) or len(candidate) >= max_new_tokens
                entries.append((value, w * num_samples + j, (candidate, done, value)))
        entries.sort(key=lambda entry: (-entry[0], entry[1]))
        beams = [beam for _, _, beam in entries[:beam_width]]
        generated += length
    return beams[0][0]


def sled_reference_scores(
    final: torch.Tensor,  # [V] final-layer logits of one row
    early: list[torch.Tensor],  # per early layer [V]
    evolution_rate: float,
    evolution_scale: int,
    evolution_lower_bound: float,
    steps: int = 1,
) -> torch.Tensor:  # [V]
    """A literal transcription of SLED's reference step (``sled_greedy_decode`` of github.com/JayZhang42/SLED's
    transformers fork; ``op_T`` = ``steps``) for a batch of one: the [L, K, V] candidate tensor, the cosine
    via ``F.cosine_similarity``, the per-layer normalization and layer weights, then the evolution."""
    import torch.nn.functional as F

    mature = final[None].float()  # [1, V]
    stacked = torch.stack([e[None].float() for e in early])  # [L, 1, V]
    softmax_mature = F.softmax(mature, dim=-1)
    softmax_premature = F.softmax(stacked, dim=-1)  # [L, 1, V]
    topk_indices = torch.topk(softmax_mature, evolution_scale).indices[0]  # [K]
    divergence = stacked - mature  # [L, 1, V]
    candidate = softmax_premature.expand(-1, len(topk_indices), -1)  # [L, K, V]
    mask = torch.zeros_like(candidate)
    mask.scatter_(2, topk_indices[None, :, None].expand(stacked.shape[0], -1, -1), 1)
    candidate = candidate - mask
    dots = F.cosine_similarity(candidate, divergence, dim=2)  # [L, K]
    values, indices = torch.topk(dots, evolution_scale)
    token_ids = topk_indices[indices]  # [L, K]
    values = (values * (values > 0)) ** 2
    sums = torch.sum(values, dim=1).clone()  # [L]
    nonzero = sums != 0
    values[nonzero] /= sums[nonzero].unsqueeze(1)
    if sums.sum() != 0:
        sums = sums / sums.sum()
    delta = torch.zeros_like(softmax_mature).repeat(values.size(0), 1)  # [L, V]
    delta.scatter_(1, token_ids, -values)
    delta = torch.sum(delta * sums.unsqueeze(1), dim=0)  # [V]
    hidden = mature.clone()
    rates = [evolution_rate * (1 - i / steps) for i in range(steps)]
    for rate in rates:
        hidden.sub_(rate * (F.softmax(hidden, dim=-1) + delta))
    out = torch.full_like(hidden[0], fill_value=evolution_lower_bound)
    out[topk_indices] = hidden[0, topk_indices]
    return out


def sled(
    model,
    prompt: list[int],
    steps: int,
    layers: list[int],
    evolution_rate: float = 2.0,
    evolution_scale: int = 10,
    evolution_lower_bound: float = -1000.0,
) -> list[int]:
    """Greedy SLED, the whole sequence re-run every step, early exits ``lm_head(hidden_states[i])``."""
    head = model.get_output_embeddings()
    ids = list(prompt)
    for _ in range(steps):
        out = _full(model, ids, hidden=True)
        final = out.logits[0, -1].float()
        early = [head(out.hidden_states[layer][0, -1]).float() for layer in layers]
        scores = sled_reference_scores(final, early, evolution_rate, evolution_scale, evolution_lower_bound)
        ids.append(int(scores.argmax()))
    return ids[len(prompt) :]
