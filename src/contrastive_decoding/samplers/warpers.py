"""Sampling warpers: pure functions over a batch of next-token scores.

Each function takes ``scores`` of shape ``[B, V]`` and a per-row parameter given either as a python
scalar (same value for every row) or a ``[B]`` tensor (one value per row, as in vLLM ``v1/sample``), and
returns a new tensor with removed tokens set to ``-inf``; the input is never modified. The "off" value
of a parameter (temperature 1.0, top_k 0, top_p 1.0, typical_p 1.0, min_p 0, top_n_sigma 0,
epsilon_cutoff 0, eta_cutoff 0) leaves its row bit-identical, so a batch can mix sampled and unfiltered rows.
The math matches transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``,
``TypicalLogitsWarper``, ``MinPLogitsWarper``, ``EpsilonLogitsWarper`` and ``EtaLogitsWarper`` exactly
(thresholds such as ``1 - top_p`` are computed in float64, like transformers' python floats; a float32
parameter tensor holds float32(0.9), not 0.9, so pass float64 tensors for bit-parity with python-float
parameters). transformers has no top-nσ warper: :func:`apply_top_n_sigma` follows the paper and llama.cpp.

Two forms of each warper:

- ``apply_<name>`` validates its parameter and names it in the error (python scalars are checked in python;
  a ``[B]`` tensor is checked on its device, which costs a host sync): for users and for admission-time code.
- ``apply_<name>_unchecked`` trusts its parameter (validated once, e.g. by ``SamplingConfig`` or at a vLLM
  request's admission) and never syncs with the host: the hot-path form, used by ``SamplingConfig.warp`` and
  the vLLM logits processors. With a python scalar "off" value it returns ``scores`` itself (no copy).
"""

from __future__ import annotations

import math

import torch

RowParam = float | int | torch.Tensor  # a python scalar or a [B] tensor


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor of shape [batch, vocab], got {tuple(scores.shape)}")


def _row_param(value: RowParam, scores: torch.Tensor, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A parameter as a [B, 1] tensor on the scores' device."""
    if isinstance(value, torch.Tensor):
        return value.to(device=scores.device, dtype=dtype)[:, None]  # [B, 1]
    return torch.full((scores.shape[0], 1), value, dtype=dtype, device=scores.device)  # [B, 1]


def _check_param(value: RowParam, scores: torch.Tensor, name: str, ok, valid: str) -> None:
    """Raise unless ``ok(value)`` holds: in python for a scalar, on the tensor's device for a [B] tensor."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a number or a [batch] tensor, got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        if not ok(value):
            raise ValueError(f"{name} must be in {valid}, got {value}")
        return
    if value.shape != (scores.shape[0],):
        raise ValueError(f"{name} must have shape [{scores.shape[0]}], got {tuple(value.shape)}")
    good = ok(value.double())
    if not bool(good.all()):  # host sync: validated entries only
        raise ValueError(f"{name} must be in {valid}, got {value[~good].flatten()[0].item()}")


def _check_min_tokens(min_tokens_to_keep: int) -> None:
    if (
        isinstance(min_tokens_to_keep, bool)
        or not isinstance(min_tokens_to_keep, int)
        or min_tokens_to_keep < 1
    ):
        raise ValueError(f"min_tokens_to_keep must be an int in [1, inf), got {min_tokens_to_keep!r}")


def _copy_if_same(out: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    return out.clone() if out is scores else out


def _positive_finite(t):
    if isinstance(t, torch.Tensor):
        return (t > 0) & torch.isfinite(t)
    return 0 < t < math.inf


def _unit_interval(p):  # (0, 1]
    return (p > 0) & (p <= 1) if isinstance(p, torch.Tensor) else 0 < p <= 1


def _closed_unit_interval(p):  # [0, 1]
    return (p >= 0) & (p <= 1) if isinstance(p, torch.Tensor) else 0 <= p <= 1


def _below_one(p):  # [0, 1)
    return (p >= 0) & (p < 1) if isinstance(p, torch.Tensor) else 0 <= p < 1


def _non_negative_finite(n):  # [0, inf)
    if isinstance(n, torch.Tensor):
        return (n >= 0) & torch.isfinite(n)
    return 0 <= n < math.inf


def _is_off(value: RowParam, off: float) -> bool:
    """A python scalar equal to the parameter's off value (tensors are never skipped: no host sync)."""
    return not isinstance(value, torch.Tensor) and value == off


def _keep_top(remove: torch.Tensor, scores: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """``remove`` [B, V] minus every token scoring >= the min_tokens_to_keep-th highest score of its row
    (transformers' epsilon / eta rule: ties with the last kept token are kept)."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    return remove & (scores < torch.topk(scores, k)[0][..., -1, None])


# --- temperature -----------------------------------------------------------------------------------------


def apply_temperature_unchecked(scores: torch.Tensor, temperature: RowParam) -> torch.Tensor:
    """``scores / temperature`` [B, V] (no validation, no host sync); a scalar 1.0 returns ``scores``."""
    if not isinstance(temperature, torch.Tensor):
        if temperature == 1.0:
            return scores
        return scores / float(temperature)  # same op as transformers' TemperatureLogitsWarper
    return scores / _row_param(temperature, scores, "temperature", torch.float64).to(scores.dtype)  # [B, V]


def apply_temperature(scores: torch.Tensor, temperature: RowParam) -> torch.Tensor:
    """``scores / temperature``; temperature in (0, inf), 1.0 is off. Returns [B, V]."""
    _check_scores(scores)
    _check_param(temperature, scores, "temperature", _positive_finite, "(0, inf)")
    return _copy_if_same(apply_temperature_unchecked(scores, temperature), scores)


# --- top-k -----------------------------------------------------------------------------------------------


def apply_top_k_unchecked(scores: torch.Tensor, top_k: RowParam) -> torch.Tensor:
    """Top-k filter [B, V] (no validation, no host sync); a scalar 0 (or >= V) returns ``scores``."""
    vocab = scores.shape[-1]
    if not isinstance(top_k, torch.Tensor):
        k = min(int(top_k), vocab)
        if k == 0 or k == vocab:
            return scores
        threshold = torch.topk(scores, k, dim=-1).values[..., -1:]  # [B, 1] the k-th largest score
        return scores.masked_fill(scores < threshold, -math.inf)
    k = _row_param(top_k, scores, "top_k", torch.long).clamp(max=vocab)  # [B, 1]
    descending = torch.sort(scores, dim=-1, descending=True).values  # [B, V]; no max(k) on the host
    threshold = descending.gather(-1, (k - 1).clamp(min=0))  # [B, 1] the k-th largest score
    remove = (scores < threshold) & (k > 0)  # [B, V]
    return scores.masked_fill(remove, -math.inf)


def apply_top_k(scores: torch.Tensor, top_k: RowParam) -> torch.Tensor:
    """Keep tokens scoring >= the k-th largest score of their row (ties kept); top_k in [1, inf), 0 is off."""
    _check_scores(scores)
    if isinstance(top_k, float):
        raise TypeError(f"top_k must be an int or a [batch] tensor, got {top_k!r}")
    _check_param(top_k, scores, "top_k", lambda k: k >= 0, "[0, inf) (0 disables it)")
    return _copy_if_same(apply_top_k_unchecked(scores, top_k), scores)


# --- top-p -----------------------------------------------------------------------------------------------


def apply_top_p_unchecked(scores: torch.Tensor, top_p: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter [B, V] (no validation, no host sync); a scalar 1.0 returns ``scores``."""
    if not isinstance(top_p, torch.Tensor) and top_p >= 1.0:
        return scores
    sorted_scores, sorted_idx = torch.sort(scores, descending=False)  # [B, V] ascending
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    if isinstance(top_p, torch.Tensor):
        p = _row_param(top_p, scores, "top_p", torch.float64)  # [B, 1]
        sorted_remove = cumulative <= (1 - p).to(
            scores.dtype
        )  # [B, V] threshold rounded like a python scalar
        sorted_remove[..., -min_tokens_to_keep:] = False
        sorted_remove &= p < 1  # rows that are off keep everything
    else:
        sorted_remove = cumulative <= (1 - top_p)  # [B, V] as transformers' TopPLogitsWarper
        sorted_remove[..., -min_tokens_to_keep:] = False
    remove = sorted_remove.scatter(1, sorted_idx, sorted_remove)  # [B, V] back to vocab order
    return scores.masked_fill(remove, -math.inf)


def apply_top_p(scores: torch.Tensor, top_p: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering; top_p in (0, 1], 1.0 is off. Returns [B, V]."""
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(top_p, scores, "top_p", _unit_interval, "(0, 1]")
    return _copy_if_same(apply_top_p_unchecked(scores, top_p, min_tokens_to_keep), scores)


# --- typical ---------------------------------------------------------------------------------------------


def apply_typical_unchecked(
    scores: torch.Tensor, typical_p: RowParam, min_tokens_to_keep: int = 1
) -> torch.Tensor:
    """Typical filter [B, V] (no validation, no host sync); a scalar 1.0 returns ``scores``."""
    if not isinstance(typical_p, torch.Tensor) and typical_p >= 1.0:
        return scores
    log_probs = torch.log_softmax(scores, dim=-1)  # [B, V]
    entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)  # [B, 1]
    surprise_gap = torch.abs(-log_probs - entropy)  # [B, V]
    sorted_gap, sorted_idx = torch.sort(surprise_gap, descending=False)  # [B, V]
    cumulative = scores.gather(-1, sorted_idx).softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    if isinstance(typical_p, torch.Tensor):
        mass = _row_param(typical_p, scores, "typical_p", torch.float64)  # [B, 1]
        last = (cumulative < mass.to(scores.dtype)).sum(dim=-1, keepdim=True)  # [B, 1]
    else:
        last = (cumulative < typical_p).sum(dim=-1, keepdim=True)  # [B, 1] as transformers
    last = last.clamp(max=scores.shape[-1] - 1)
    sorted_remove = sorted_gap > sorted_gap.gather(-1, last)  # [B, V]
    sorted_remove[..., :min_tokens_to_keep] = False
    if isinstance(typical_p, torch.Tensor):
        sorted_remove &= mass < 1
    remove = sorted_remove.scatter(1, sorted_idx, sorted_remove)  # [B, V]
    return scores.masked_fill(remove, -math.inf)


def apply_typical(scores: torch.Tensor, typical_p: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling (Meister et al., 2022); typical_p in (0, 1], 1.0 is off. Returns [B, V].

    Tokens are ordered by ``|-log p(v) - H(p)|``; the smallest prefix whose mass reaches typical_p is kept,
    plus every token tied with its last member.
    """
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(typical_p, scores, "typical_p", _unit_interval, "(0, 1]")
    return _copy_if_same(apply_typical_unchecked(scores, typical_p, min_tokens_to_keep), scores)


# --- min-p -----------------------------------------------------------------------------------------------


def apply_min_p_unchecked(scores: torch.Tensor, min_p: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Min-p filter [B, V] (no validation, no host sync); a scalar 0.0 returns ``scores``."""
    if _is_off(min_p, 0.0):
        return scores
    probs = torch.softmax(scores, dim=-1)  # [B, V]
    top_probs = probs.amax(dim=-1, keepdim=True)  # [B, 1]
    if isinstance(min_p, torch.Tensor):
        # the float64 parameter rounded to the scores' dtype, as transformers' python float is
        threshold = _row_param(min_p, scores, "min_p", torch.float64).to(scores.dtype) * top_probs  # [B, 1]
    else:
        threshold = float(min_p) * top_probs  # [B, 1] as transformers' MinPLogitsWarper
    remove = probs < threshold  # [B, V]; a row with min_p 0 removes nothing
    k = min(min_tokens_to_keep, probs.shape[-1])
    remove.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
    return scores.masked_fill(remove, -math.inf)


def apply_min_p(scores: torch.Tensor, min_p: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Min-p sampling (Nguyen et al., 2024): keep tokens with ``p(v) >= min_p * max p``; min_p in [0, 1], 0 is
    off. The min_tokens_to_keep most probable tokens are always kept. Returns [B, V]."""
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(min_p, scores, "min_p", _closed_unit_interval, "[0, 1] (0 disables it)")
    return _copy_if_same(apply_min_p_unchecked(scores, min_p, min_tokens_to_keep), scores)


# --- top-n-sigma -----------------------------------------------------------------------------------------


def apply_top_n_sigma_unchecked(scores: torch.Tensor, top_n_sigma: RowParam) -> torch.Tensor:
    """Top-nσ filter [B, V] (no validation, no host sync); a scalar 0.0 returns ``scores``."""
    if _is_off(top_n_sigma, 0.0):
        return scores
    stats = scores if scores.dtype in (torch.float32, torch.float64) else scores.float()  # [B, V]
    finite = stats > -math.inf  # [B, V] tokens earlier filters (or a grammar) left in the row
    count = finite.sum(dim=-1, keepdim=True).clamp(min=1)  # [B, 1]
    values = stats.masked_fill(~finite, 0.0)  # [B, V]
    mean = values.sum(dim=-1, keepdim=True) / count  # [B, 1]
    variance = (values - mean).square().masked_fill(~finite, 0.0).sum(dim=-1, keepdim=True) / count  # [B, 1]
    top = stats.amax(dim=-1, keepdim=True)  # [B, 1]
    n = _row_param(top_n_sigma, scores, "top_n_sigma", stats.dtype)  # [B, 1]
    cutoff = top - n * variance.sqrt()  # [B, 1]
    remove = stats < cutoff  # [B, V]
    if isinstance(top_n_sigma, torch.Tensor):
        remove &= n > 0  # rows that are off keep everything
    return scores.masked_fill(remove, -math.inf)


def apply_top_n_sigma(scores: torch.Tensor, top_n_sigma: RowParam) -> torch.Tensor:
    """Top-nσ sampling (Tang et al., 2024, "Top-nσ: Not All Logits Are You Need"): keep tokens whose score is
    ``>= max - top_n_sigma * σ``; top_n_sigma in [0, inf), 0 is off (as in llama.cpp). Returns [B, V].

    Convention (llama.cpp's ``llama_sampler_top_n_sigma_apply``): the max, mean and the population standard
    deviation (divided by the count, not count - 1) are taken over the row's finite scores, so tokens an earlier
    filter or processor set to ``-inf`` do not count; with none of those it is the paper's σ over the whole
    vocabulary. The kept set does not depend on the temperature (dividing the scores by T divides max and σ
    by T); ``SamplingConfig`` applies it right after temperature, on the temperature-scaled scores, as the
    paper does. The token with the highest score is always kept.
    """
    _check_scores(scores)
    _check_param(top_n_sigma, scores, "top_n_sigma", _non_negative_finite, "[0, inf) (0 disables it)")
    return _copy_if_same(apply_top_n_sigma_unchecked(scores, top_n_sigma), scores)


# --- epsilon ---------------------------------------------------------------------------------------------


def apply_epsilon_unchecked(
    scores: torch.Tensor, epsilon_cutoff: RowParam, min_tokens_to_keep: int = 1
) -> torch.Tensor:
    """Epsilon filter [B, V] (no validation, no host sync); a scalar 0.0 returns ``scores``."""
    if _is_off(epsilon_cutoff, 0.0):
        return scores
    probs = scores.softmax(dim=-1)  # [B, V]
    if isinstance(epsilon_cutoff, torch.Tensor):
        epsilon = _row_param(epsilon_cutoff, scores, "epsilon_cutoff", torch.float64).to(
            scores.dtype
        )  # [B, 1]
        remove = probs < epsilon  # [B, V]; a row with epsilon 0 removes nothing
    else:
        remove = probs < float(epsilon_cutoff)  # [B, V] as transformers' EpsilonLogitsWarper
    return scores.masked_fill(_keep_top(remove, scores, min_tokens_to_keep), -math.inf)


def apply_epsilon(
    scores: torch.Tensor, epsilon_cutoff: RowParam, min_tokens_to_keep: int = 1
) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al., 2022, "Truncation Sampling as Language Model Desmoothing"): keep tokens
    with ``p(v) >= epsilon_cutoff``; epsilon_cutoff in [0, 1), 0 is off. Returns [B, V]."""
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(epsilon_cutoff, scores, "epsilon_cutoff", _below_one, "[0, 1) (0 disables it)")
    return _copy_if_same(apply_epsilon_unchecked(scores, epsilon_cutoff, min_tokens_to_keep), scores)


# --- eta -------------------------------------------------------------------------------------------------


def apply_eta_unchecked(
    scores: torch.Tensor, eta_cutoff: RowParam, min_tokens_to_keep: int = 1
) -> torch.Tensor:
    """Eta filter [B, V] (no validation, no host sync); a scalar 0.0 returns ``scores``."""
    if _is_off(eta_cutoff, 0.0):
        return scores
    probs = scores.softmax(dim=-1)  # [B, V]
    # the entropy as torch.distributions.Categorical(logits=scores).entropy() computes it (transformers' call),
    # without building the distribution (its argument validation syncs with the host)
    normalized = scores - scores.logsumexp(dim=-1, keepdim=True)  # [B, V]
    p_log_p = normalized.clamp(min=torch.finfo(scores.dtype).min) * normalized.softmax(dim=-1)  # [B, V]
    entropy = -p_log_p.sum(-1)  # [B]
    if isinstance(eta_cutoff, torch.Tensor):
        epsilon = eta_cutoff.to(device=scores.device, dtype=torch.float64).to(torch.float32)  # [B]
    else:
        epsilon = torch.tensor(float(eta_cutoff), device=scores.device)  # float32, as transformers holds it
    eta = torch.min(epsilon, torch.sqrt(epsilon) * torch.exp(-entropy))[..., None]  # [B, 1]
    remove = probs < eta  # [B, V]; a row with eta_cutoff 0 has eta 0 and removes nothing
    return scores.masked_fill(_keep_top(remove, scores, min_tokens_to_keep), -math.inf)


def apply_eta(scores: torch.Tensor, eta_cutoff: RowParam, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Eta sampling (Hewitt et al., 2022): keep tokens with ``p(v) >= eta``, ``eta = min(eta_cutoff,
    sqrt(eta_cutoff) * exp(-H(p)))``; eta_cutoff in [0, 1), 0 is off. Returns [B, V]."""
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(eta_cutoff, scores, "eta_cutoff", _below_one, "[0, 1) (0 disables it)")
    return _copy_if_same(apply_eta_unchecked(scores, eta_cutoff, min_tokens_to_keep), scores)


# --- plausibility head -----------------------------------------------------------------------------------


def relative_top_mask(
    scores: torch.Tensor, alpha: RowParam, min_tokens_to_keep: int = 1, *, normalized: bool = False
) -> torch.Tensor:
    """Plausibility head: True where ``p(v) >= alpha * max p``, alpha in [0, 1]. Returns bool [B, V].

    Computed in log space (``log_softmax >= max log_softmax + log(alpha)``); the min_tokens_to_keep
    highest tokens (and their ties) are always kept, as in transformers' DoLa ``_relative_top_filter``.
    ``normalized=True`` says ``scores`` already are log-probabilities (no second log-softmax).
    """
    _check_scores(scores)
    _check_min_tokens(min_tokens_to_keep)
    _check_param(alpha, scores, "alpha", lambda a: (a >= 0) & (a <= 1), "[0, 1]")  # no sync for a scalar
    a = _row_param(alpha, scores, "alpha", torch.float64)  # [B, 1]
    log_probs = scores if normalized else torch.log_softmax(scores, dim=-1)  # [B, V]
    top = log_probs.max(dim=-1, keepdim=True).values  # [B, 1]
    k = min(min_tokens_to_keep, scores.shape[-1])
    kth = top if k == 1 else torch.topk(log_probs, k, dim=-1).values[..., -1:]  # [B, 1]
    head = top + torch.log(a).to(scores.dtype)  # [B, 1]
    return log_probs >= torch.minimum(kth, head)  # [B, V]
