import math
import subprocess
import sys

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitNormalization,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from contrastive_decoding.backends.hf.sampling import (
    SamplingLogitsWarper,
    sampling_config_from_generation_config,
    strip_hf_sampling_warpers,
    warper_position,
)
from contrastive_decoding.samplers import (
    SamplingConfig,
    apply_epsilon,
    apply_epsilon_unchecked,
    apply_eta,
    apply_eta_unchecked,
    apply_min_p,
    apply_min_p_unchecked,
    apply_temperature,
    apply_temperature_unchecked,
    apply_top_k,
    apply_top_k_unchecked,
    apply_top_n_sigma,
    apply_top_n_sigma_unchecked,
    apply_top_p,
    apply_top_p_unchecked,
    apply_typical,
    apply_typical_unchecked,
    draw_exponential_race,
    draw_generator,
    draw_inverse_cdf,
    draw_uniforms,
    make_generator,
    perturbation_generator,
    relative_top_mask,
    row_seeds,
    select_tokens,
    stream_seed,
)


def logits_of(*probs: float) -> torch.Tensor:
    return torch.tensor([probs]).log()  # [1, V]


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


@pytest.fixture
def random_logits() -> torch.Tensor:
    return torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)) * 3  # [8, 1000]


def assert_same_filter(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# --- hand-computed answers -----------------------------------------------------------------------------


def test_top_p_by_hand():
    # ascending cumulative: 0.1, 0.2, 0.5, 1.0; remove <= 0.3 -> the two 0.1 tokens.
    assert kept(apply_top_p(logits_of(0.5, 0.3, 0.1, 0.1), 0.7)) == [0, 1]
    assert kept(apply_top_p(logits_of(0.5, 0.3, 0.1, 0.1), 0.4)) == [0]
    # ascending cumulative: 0.05, 0.2, 0.5, 1.0; top_p 0.4 removes <= 0.6 -> only token 0, unless kept.
    assert kept(apply_top_p(logits_of(0.5, 0.3, 0.15, 0.05), 0.4)) == [0]
    assert kept(apply_top_p(logits_of(0.5, 0.3, 0.15, 0.05), 0.4, min_tokens_to_keep=3)) == [0, 1, 2]


def test_typical_by_hand():
    # p = 1/2, 1/4, 1/8, 1/8: H = 1.75 ln2, |-log p - H| = .75, .25, 1.25, 1.25 (x ln2)
    # typical order: 1, 0, {2, 3} with cumulative mass .25, .75, .875, 1.
    scores = logits_of(0.5, 0.25, 0.125, 0.125)
    assert kept(apply_typical(scores, 0.2)) == [1]
    assert kept(apply_typical(scores, 0.5)) == [0, 1]
    assert kept(apply_typical(scores, 0.8)) == [0, 1, 2, 3]  # token 3 is tied with token 2
    assert kept(apply_typical(scores, 0.2, min_tokens_to_keep=2)) == [0, 1]


def test_top_k_keeps_ties():
    scores = torch.tensor([[3.0, 2.0, 2.0, 1.0]])
    assert kept(apply_top_k(scores, 1)) == [0]
    assert kept(apply_top_k(scores, 2)) == [0, 1, 2]
    assert kept(apply_top_k(scores, 10)) == [0, 1, 2, 3]


def test_temperature_by_hand():
    scores = torch.tensor([[2.0, -1.0]])
    torch.testing.assert_close(apply_temperature(scores, 0.5), torch.tensor([[4.0, -2.0]]))


def test_relative_top_mask_by_hand():
    scores = logits_of(0.6, 0.3, 0.05, 0.05)  # alpha * max = 0.06
    assert relative_top_mask(scores, 0.1).tolist() == [[True, True, False, False]]
    assert relative_top_mask(scores, 0.6).tolist() == [[True, False, False, False]]
    assert relative_top_mask(scores, 0.6, min_tokens_to_keep=3).tolist() == [[True, True, True, True]]
    assert relative_top_mask(scores, 0.0).all()
    assert relative_top_mask(scores.log_softmax(-1) + 5.0, 0.1).tolist() == [[True, True, False, False]]


def test_min_p_by_hand():
    scores = logits_of(0.5, 0.3, 0.15, 0.05)
    assert kept(apply_min_p(scores, 0.2)) == [0, 1, 2]  # keeps p >= 0.1
    assert kept(apply_min_p(scores, 0.4)) == [0, 1]  # keeps p >= 0.2
    assert kept(apply_min_p(scores, 1.0)) == [0]
    assert kept(apply_min_p(scores, 1.0, min_tokens_to_keep=3)) == [0, 1, 2]
    assert kept(apply_min_p(scores, 0.0)) == [0, 1, 2, 3]


def test_epsilon_by_hand():
    scores = logits_of(0.5, 0.3, 0.15, 0.05)
    assert kept(apply_epsilon(scores, 0.1)) == [0, 1, 2]
    assert kept(apply_epsilon(scores, 0.2)) == [0, 1]
    assert kept(apply_epsilon(scores, 0.6)) == [0]  # nothing reaches it: the most likely token stays
    assert kept(apply_epsilon(scores, 0.6, min_tokens_to_keep=2)) == [0, 1]


def test_eta_by_hand():
    # H(0.5, 0.3, 0.15, 0.05) = 1.1422 nats, exp(-H) = 0.3191
    scores = logits_of(0.5, 0.3, 0.15, 0.05)
    assert kept(apply_eta(scores, 0.1)) == [0, 1, 2]  # eta = min(0.1, sqrt(0.1) * 0.3191 = 0.1009) = 0.1
    assert kept(apply_eta(scores, 0.5)) == [0, 1]  # eta = min(0.5, sqrt(0.5) * 0.3191 = 0.2256)
    # eta = min(0.9, sqrt(0.9) * 0.3191 = 0.3027): the entropy term decides, and it just removes p = 0.3
    assert kept(apply_eta(scores, 0.9)) == [0]
    assert kept(apply_epsilon(scores, 0.5)) == [0]  # where eta 0.5 kept token 1, epsilon 0.5 does not


def test_top_n_sigma_by_hand():
    # logits 4, 2, 1, 0, -1: mean 1.2, population variance 14.8 / 5 = 2.96, sigma = 1.7205
    scores = torch.tensor([[4.0, 2.0, 1.0, 0.0, -1.0]])
    assert kept(apply_top_n_sigma(scores, 1.0)) == [0]  # cutoff 2.28
    assert kept(apply_top_n_sigma(scores, 1.2)) == [0, 1]  # cutoff 1.94
    assert kept(apply_top_n_sigma(scores, 2.0)) == [0, 1, 2]  # cutoff 0.56
    assert kept(apply_top_n_sigma(scores, 3.0)) == [0, 1, 2, 3, 4]
    # the population sigma, as llama.cpp (the sample sigma 1.9235 would put the cutoff at 1.98 and keep token 1)
    assert kept(apply_top_n_sigma(scores, 1.05)) == [0]
    # tokens already at -inf do not count (llama.cpp): the same answers with masked tokens appended
    masked = torch.cat([scores, torch.full((1, 3), -math.inf)], dim=-1)
    for n in (1.0, 1.2, 2.0, 3.0):
        assert kept(apply_top_n_sigma(masked, n)) == kept(apply_top_n_sigma(scores, n))
    # the kept set does not depend on the temperature; the top token always stays
    for temperature in (0.3, 0.7, 2.0):
        assert kept(apply_top_n_sigma(scores / temperature, 1.2)) == [0, 1]
    assert kept(apply_top_n_sigma(torch.tensor([[1.0, 1.0, 1.0]]), 0.5)) == [0, 1, 2]  # sigma 0: ties stay


def test_top_n_sigma_over_the_vocabulary(random_logits):
    """With no masked tokens: keep exactly the scores >= max - n * std(correction=0) over the vocabulary."""
    for n in (0.5, 1.0, 2.0):
        std, _ = torch.std_mean(random_logits, dim=-1, keepdim=True, correction=0)
        expected = random_logits >= random_logits.amax(-1, keepdim=True) - n * std
        assert torch.equal(torch.isfinite(apply_top_n_sigma(random_logits, n)), expected)


# --- equality with transformers -----------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.5])
def test_temperature_matches_transformers(random_logits, temperature):
    theirs = TemperatureLogitsWarper(temperature)(None, random_logits)
    assert_same_filter(apply_temperature(random_logits, temperature), theirs)
    per_row = torch.full((8,), temperature)
    torch.testing.assert_close(apply_temperature(random_logits, per_row), theirs)


@pytest.mark.parametrize("top_k", [1, 2, 5, 50, 999, 1000, 5000])
def test_top_k_matches_transformers(random_logits, top_k):
    theirs = TopKLogitsWarper(top_k)(None, random_logits)
    assert_same_filter(apply_top_k(random_logits, top_k), theirs)
    assert_same_filter(apply_top_k(random_logits, torch.full((8,), top_k)), theirs)


@pytest.mark.parametrize("top_p", [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 3])
def test_top_p_matches_transformers(random_logits, top_p, min_tokens_to_keep):
    theirs = TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep)(None, random_logits)
    assert_same_filter(apply_top_p(random_logits, top_p, min_tokens_to_keep), theirs)
    assert_same_filter(apply_top_p(random_logits, torch.full((8,), top_p), min_tokens_to_keep), theirs)


def test_top_p_threshold_rounds_like_transformers():
    # smallest prob is 0.10000001639f: above float32(1 - 0.9) = 0.1f but below 1.0f - 0.9f, so keeping
    # token 0 depends on computing 1 - top_p in double before rounding, as transformers' python float does.
    scores = torch.tensor([[0.0, 2.1972243785858154]])
    theirs = TopPLogitsWarper(0.9)(None, scores)
    assert not torch.isinf(theirs).any()
    assert_same_filter(apply_top_p(scores, 0.9), theirs)
    assert_same_filter(apply_top_p(scores, torch.tensor([0.9], dtype=torch.float64)), theirs)


@pytest.mark.parametrize("typical_p", [0.01, 0.2, 0.5, 0.8, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 3])
def test_typical_matches_transformers(random_logits, typical_p, min_tokens_to_keep):
    theirs = TypicalLogitsWarper(typical_p, min_tokens_to_keep=min_tokens_to_keep)(None, random_logits)
    assert_same_filter(apply_typical(random_logits, typical_p, min_tokens_to_keep), theirs)
    assert_same_filter(apply_typical(random_logits, torch.full((8,), typical_p), min_tokens_to_keep), theirs)


def test_typical_matches_transformers_with_ties_and_masked_tokens():
    scores = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0, -math.inf], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for mass in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert_same_filter(apply_typical(scores, mass), TypicalLogitsWarper(mass)(None, scores))


@pytest.mark.parametrize("min_tokens_to_keep", [1, 3])
@pytest.mark.parametrize(
    ("ours", "theirs", "values"),
    [
        (apply_min_p, MinPLogitsWarper, [0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0]),
        (apply_epsilon, EpsilonLogitsWarper, [3e-4, 1e-3, 0.01, 0.1, 0.5, 0.9]),
        (apply_eta, EtaLogitsWarper, [3e-4, 1e-3, 4e-3, 0.01, 0.1, 0.5, 0.9]),
    ],
    ids=["min_p", "epsilon", "eta"],
)
def test_min_p_epsilon_eta_match_transformers(random_logits, ours, theirs, values, min_tokens_to_keep):
    scores = random_logits.clone()
    scores[0, :10] = -math.inf  # masked tokens
    scores[1, :20] = scores[1, 20]  # ties
    for value in values:
        warper = theirs(value, min_tokens_to_keep=min_tokens_to_keep)
        expected = warper(None, scores)
        assert_same_filter(ours(scores, value, min_tokens_to_keep), expected)
        per_row = torch.full((8,), value, dtype=torch.float64)
        assert_same_filter(ours(scores, per_row, min_tokens_to_keep), expected)


def test_config_warp_matches_transformers_chain_with_every_filter(random_logits):
    """transformers' order (``_get_logits_processor``): temperature, top-k, top-p, min-p, typical, epsilon, eta."""
    config = SamplingConfig(
        do_sample=True, temperature=0.7, top_k=200, top_p=0.99, min_p=0.01, typical_p=0.99,
        epsilon_cutoff=3e-4, eta_cutoff=3e-4,
    )  # fmt: skip
    chain = LogitsProcessorList(
        [
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(200),
            TopPLogitsWarper(0.99),
            MinPLogitsWarper(0.01),
            TypicalLogitsWarper(0.99),
            EpsilonLogitsWarper(3e-4),
            EtaLogitsWarper(3e-4),
        ]
    )
    assert_same_filter(config.warp(random_logits), chain(None, random_logits))
    # top-n-sigma comes right after temperature, on the temperature-scaled scores
    with_sigma = SamplingConfig(do_sample=True, temperature=0.7, top_n_sigma=1.0, min_p=0.01)
    expected = apply_min_p(apply_top_n_sigma(apply_temperature(random_logits, 0.7), 1.0), 0.01)
    assert_same_filter(with_sigma.warp(random_logits), expected)


def test_config_warp_matches_transformers_chain(random_logits):
    config = SamplingConfig(do_sample=True, temperature=0.7, top_k=50, top_p=0.9, typical_p=0.95)
    chain = LogitsProcessorList(
        [TemperatureLogitsWarper(0.7), TopKLogitsWarper(50), TopPLogitsWarper(0.9), TypicalLogitsWarper(0.95)]
    )
    assert_same_filter(config.warp(random_logits), chain(None, random_logits))
    assert_same_filter(SamplingLogitsWarper(config)(None, random_logits), chain(None, random_logits))


# --- mixed batches ------------------------------------------------------------------------------------

MIXED = [
    (apply_temperature, torch.tensor([1.0, 0.5, 1.0, 2.0]), {}),
    (apply_top_k, torch.tensor([0, 3, 0, 20]), {}),
    (apply_top_p, torch.tensor([1.0, 0.5, 1.0, 0.9]), {}),
    (apply_typical, torch.tensor([1.0, 0.5, 1.0, 0.9]), {}),
    (apply_top_p, torch.tensor([1.0, 0.5, 1.0, 0.9]), {"min_tokens_to_keep": 4}),
    (apply_min_p, torch.tensor([0.0, 0.2, 0.0, 0.05], dtype=torch.float64), {}),
    (apply_min_p, torch.tensor([0.0, 1.0, 0.0, 0.5], dtype=torch.float64), {"min_tokens_to_keep": 3}),
    (apply_top_n_sigma, torch.tensor([0.0, 1.0, 0.0, 2.5]), {}),
    (apply_epsilon, torch.tensor([0.0, 0.01, 0.0, 0.002], dtype=torch.float64), {}),
    (apply_eta, torch.tensor([0.0, 0.01, 0.0, 0.002], dtype=torch.float64), {}),
]


@pytest.mark.parametrize(("warp", "params", "kwargs"), MIXED)
def test_mixed_batch_equals_rows_alone(warp, params, kwargs):
    scores = torch.randn(4, 100, generator=torch.Generator().manual_seed(1)) * 2  # [4, V]
    scores[0, :30] = -1000.0  # tokens whose softmax underflows to 0 must survive in an off row
    before = scores.clone()
    batched = warp(scores, params, **kwargs)
    assert torch.equal(scores, before)  # never in place
    for row in range(4):
        alone = warp(scores[row : row + 1], params[row].item(), **kwargs)
        assert_same_filter(batched[row : row + 1], alone)
    assert torch.equal(batched[0], scores[0]) and torch.equal(batched[2], scores[2])  # off rows untouched


def test_mixed_relative_top_mask():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    alphas = torch.tensor([0.0, 0.1, 0.5])
    batched = relative_top_mask(scores, alphas)
    for row in range(3):
        assert torch.equal(
            batched[row : row + 1], relative_top_mask(scores[row : row + 1], alphas[row].item())
        )
    assert batched[0].all()


def test_off_values_are_identity_and_copies(random_logits):
    for warp, off in (
        (apply_temperature, 1.0),
        (apply_top_k, 0),
        (apply_top_p, 1.0),
        (apply_typical, 1.0),
        (apply_min_p, 0.0),
        (apply_top_n_sigma, 0.0),
        (apply_epsilon, 0.0),
        (apply_eta, 0.0),
    ):
        out = warp(random_logits, off)
        assert torch.equal(out, random_logits) and out is not random_logits
    assert SamplingConfig(do_sample=True).warp(random_logits).equal(random_logits)


# --- selection ----------------------------------------------------------------------------------------


def test_greedy_is_argmax(random_logits):
    config = SamplingConfig(top_k=3, top_p=0.1)  # ignored when greedy
    assert config.is_greedy
    assert torch.equal(select_tokens(random_logits, config), random_logits.argmax(-1))
    assert config.warp(random_logits) is random_logits


def test_generator_sampling_reproduces(random_logits):
    config = SamplingConfig(do_sample=True, temperature=1.3, top_p=0.95)  # unseeded: the generator decides
    first = [select_tokens(random_logits, config, make_generator(123, "cpu")) for _ in range(3)]
    gen_a, gen_b = make_generator(123), make_generator(123)
    run_a = torch.stack([select_tokens(random_logits, config, gen_a) for _ in range(20)])
    run_b = torch.stack([select_tokens(random_logits, config, gen_b) for _ in range(20)])
    assert torch.equal(run_a, run_b)
    assert all(torch.equal(first[0], tokens) for tokens in first)
    assert run_a.dtype == torch.long and run_a.shape == (20, 8)
    assert len(set(run_a[:, 0].tolist())) > 1  # it does sample
    assert make_generator(None) is None


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(do_sample=True, top_k=5),
        SamplingConfig(do_sample=True, top_p=0.5),
        SamplingConfig(do_sample=True, typical_p=0.3),
        SamplingConfig(do_sample=True, temperature=3.0, top_k=20, top_p=0.8, typical_p=0.9),
    ],
)
def test_samples_stay_in_kept_set(config):
    row = torch.randn(1, 200, generator=torch.Generator().manual_seed(3)) * 2
    scores = row.expand(4000, 200)  # [N, V] many draws at once
    allowed = torch.isfinite(config.warp(row))[0]  # [V]
    tokens = select_tokens(scores, config, make_generator(0))
    assert 1 < int(allowed.sum()) < 200
    assert allowed[tokens].all()
    assert len(set(tokens.tolist())) > 1


def test_exponential_race_is_torch_multinomial(random_logits):
    probs = random_logits.softmax(-1)
    torch.manual_seed(9)
    theirs = torch.multinomial(probs, 1).squeeze(-1)
    after_theirs = torch.rand(4)
    torch.manual_seed(9)
    ours = draw_exponential_race(probs)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.rand(4), after_theirs)  # same RNG consumption
    torch.manual_seed(9)
    assert torch.equal(select_tokens(random_logits, SamplingConfig(do_sample=True)), theirs)


def test_inverse_cdf_by_hand():
    probs = torch.tensor([[0.125, 0.25, 0.0, 0.625]])  # cumulative 0.125, 0.375, 0.375, 1.0 (exact)
    expected = {0.0: 0, 0.1: 0, 0.125: 1, 0.37: 1, 0.375: 3, 0.38: 3, 0.999: 3, 1.0: 3}
    for u, token in expected.items():
        assert draw_inverse_cdf(probs, u).tolist() == [token], u
    tail = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # u * total rounding up to the total never picks a 0 token
    assert draw_inverse_cdf(tail, 1.0).tolist() == [1]
    lead = torch.tensor([[0.0, 0.0, 1.0]])
    assert draw_inverse_cdf(lead, 0.0).tolist() == [2]
    batch = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert draw_inverse_cdf(batch, torch.tensor([0.6, 0.6], dtype=torch.float64)).tolist() == [1, 0]


def test_seeded_rows_draw_by_seed_and_position_only(random_logits):
    config = SamplingConfig(do_sample=True, temperature=1.5, top_k=100, seed=5)
    together = select_tokens(random_logits, config, positions=3)
    torch.manual_seed(0)  # neither the global RNG nor a generator plays a part
    assert torch.equal(select_tokens(random_logits, config, make_generator(1), positions=3), together)
    for row in range(8):
        alone = select_tokens(random_logits[row : row + 1], config, positions=3)
        assert alone.tolist() == [together[row].item()]
    probs = config.warp(random_logits).softmax(-1)
    by_hand = draw_inverse_cdf(probs, draw_uniforms([5] * 8, [3] * 8))
    assert torch.equal(together, by_hand)
    draws = {tuple(select_tokens(random_logits, config, positions=t).tolist()) for t in range(6)}
    assert len(draws) == 6  # positions key different draws
    other_seed = SamplingConfig(do_sample=True, temperature=1.5, top_k=100, seed=6)
    assert not torch.equal(select_tokens(random_logits, other_seed, positions=3), together)


def test_seeded_draws_follow_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.0, 0.2]])
    config = SamplingConfig(do_sample=True, seed=11)
    tokens = torch.cat([select_tokens(probs.log(), config, positions=t) for t in range(4000)])
    frequency = torch.bincount(tokens, minlength=4).double() / 4000
    torch.testing.assert_close(frequency, probs[0].double(), atol=0.03, rtol=0)
    assert frequency[2] == 0


def test_mixed_rows_equal_rows_alone():
    scores = torch.randn(5, 300, generator=torch.Generator().manual_seed(4)) * 2
    configs = [
        SamplingConfig(),  # greedy
        SamplingConfig(do_sample=True, top_k=10, seed=1),
        SamplingConfig(do_sample=True, temperature=0.7, top_p=0.8, seed=2),
        SamplingConfig(),
        SamplingConfig(do_sample=True, typical_p=0.9, seed=3),
    ]
    positions = [0, 4, 9, 2, 1]
    together = select_tokens(scores, configs, positions=positions)
    for row, (config, position) in enumerate(zip(configs, positions, strict=True)):
        alone = select_tokens(scores[row : row + 1], config, positions=position)
        assert alone.tolist() == [together[row].item()], row
    assert together[0] == scores[0].argmax() and together[3] == scores[3].argmax()
    for row in (1, 2, 4):
        assert torch.isfinite(configs[row].warp(scores[row : row + 1])[0, together[row]])
    unseeded = [configs[0], SamplingConfig(do_sample=True, top_k=10), configs[2]]  # a global-RNG row too
    tokens = select_tokens(scores[:3], unseeded, positions=positions[:3])
    assert tokens[0] == together[0] and tokens[2] == together[2]
    with pytest.raises(ValueError, match="one per row"):
        select_tokens(scores, configs[:2])
    with pytest.raises(ValueError, match="positions"):
        select_tokens(scores, configs, positions=[0, 1])


def test_row_seeds():
    assert row_seeds(None, 4) is None
    assert row_seeds(7, 3) == [7, 7, 7]
    assert row_seeds([7, 9], 4, num_return_sequences=2) == [7, 8, 9, 10]
    assert row_seeds(7, 4, num_return_sequences=2) == [7, 8, 7, 8]
    assert row_seeds([1, 2, 3, 4], 4, num_return_sequences=2) == [1, 2, 3, 4]  # one per row, as given
    with pytest.raises(ValueError, match="one int per prompt"):
        row_seeds([1, 2, 3], 4)
    for bad in ("7", 1.5, True, [], [1, None]):
        with pytest.raises(ValueError, match="seed"):
            row_seeds(bad, 2)


def test_one_keyed_scheme_for_draws_and_perturbations():
    mask = (1 << 64) - 1

    def splitmix64(x):
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    assert stream_seed(3, 2) == splitmix64(splitmix64(3) ^ 2)  # the perturbation seeds of before
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(perturbation_generator(3, 2)), draw(perturbation_generator(3, 2)))
    assert torch.equal(draw(draw_generator(3, 2)), draw(draw_generator(3, 2)))
    assert not torch.equal(draw(draw_generator(3, 2)), draw(perturbation_generator(3, 2)))  # own streams
    keys = {stream_seed(s, t, stream) for s in range(5) for t in range(5) for stream in (0, 1)}
    assert len(keys) == 50
    assert stream_seed(-1, 0, 1) == stream_seed(mask, 0, 1)  # seeds are taken modulo 2**64
    uniforms = draw_uniforms([3, 3], [0, 1])
    assert uniforms.dtype == torch.float64 and uniforms.shape == (2,) and 0 <= uniforms.min() < 1


def test_unchecked_forms_equal_checked_ones_and_skip_off_values(random_logits):
    for checked, unchecked, value, off in (
        (apply_temperature, apply_temperature_unchecked, 0.7, 1.0),
        (apply_top_k, apply_top_k_unchecked, 20, 0),
        (apply_top_p, apply_top_p_unchecked, 0.8, 1.0),
        (apply_typical, apply_typical_unchecked, 0.8, 1.0),
        (apply_min_p, apply_min_p_unchecked, 0.1, 0.0),
        (apply_top_n_sigma, apply_top_n_sigma_unchecked, 1.0, 0.0),
        (apply_epsilon, apply_epsilon_unchecked, 1e-3, 0.0),
        (apply_eta, apply_eta_unchecked, 1e-3, 0.0),
    ):
        assert_same_filter(unchecked(random_logits, value), checked(random_logits, value))
        per_row = torch.full((8,), value, dtype=torch.long if isinstance(value, int) else torch.float64)
        assert_same_filter(unchecked(random_logits, per_row), checked(random_logits, per_row))
        assert unchecked(random_logits, off) is random_logits  # no work, no copy
    assert apply_top_k_unchecked(random_logits, 5000) is random_logits


def test_hot_path_makes_no_python_level_host_syncs(monkeypatch, random_logits):
    """Per-step code must not read tensors back (``.item()``, ``bool(t)``, ``.tolist()``, ``int(t)``)."""
    configs = [
        SamplingConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, typical_p=0.95, seed=s)
        for s in range(8)
    ]
    filters = SamplingConfig(
        do_sample=True, min_p=0.05, top_n_sigma=1.0, epsilon_cutoff=1e-3, eta_cutoff=1e-3, seed=1
    )
    mixed = [SamplingConfig(), SamplingConfig(do_sample=True, top_p=0.5), *configs[2:]]

    def sync(*args, **kwargs):
        raise AssertionError("host sync in the hot path")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    configs[0].warp(random_logits)
    select_tokens(random_logits, configs[0], positions=3)
    select_tokens(random_logits, configs, positions=list(range(8)))
    select_tokens(random_logits, mixed, positions=list(range(8)))
    select_tokens(random_logits, SamplingConfig(do_sample=True, top_k=5))
    relative_top_mask(random_logits, 0.1)
    apply_typical_unchecked(random_logits, torch.full((8,), 0.9, dtype=torch.float64))
    apply_top_p_unchecked(random_logits, torch.full((8,), 0.9, dtype=torch.float64))
    apply_top_k_unchecked(random_logits, torch.full((8,), 3))
    select_tokens(random_logits, [filters, *configs[1:]], positions=list(range(8)))
    per_row = torch.full((8,), 0.01, dtype=torch.float64)
    for unchecked in (apply_min_p_unchecked, apply_top_n_sigma_unchecked, apply_epsilon_unchecked):
        unchecked(random_logits, per_row)
    apply_eta_unchecked(random_logits, per_row)


def test_samplers_import_neither_transformers_nor_vllm():
    code = (
        "import sys, contrastive_decoding.samplers; "
        "print(sorted(m for m in ('transformers', 'vllm') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"typical_p": 0.0}, "typical_p"),
        ({"typical_p": 1.01}, "typical_p"),
        ({"min_p": -0.1}, r"min_p must be in \[0, 1\] \(0 disables it\), got -0.1"),
        ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
        ({"top_n_sigma": -1.0}, r"top_n_sigma must be in \[0, inf\) \(0 disables it\), got -1.0"),
        ({"top_n_sigma": math.inf}, r"top_n_sigma must be in \[0, inf\)"),
        ({"epsilon_cutoff": 1.0}, r"epsilon_cutoff must be in \[0, 1\) \(0 disables it\), got 1.0"),
        ({"epsilon_cutoff": -1e-3}, r"epsilon_cutoff must be in \[0, 1\)"),
        ({"eta_cutoff": 1.0}, r"eta_cutoff must be in \[0, 1\) \(0 disables it\), got 1.0"),
        ({"eta_cutoff": "0.1"}, r"eta_cutoff must be in \[0, 1\)"),
        ({"seed": "x"}, "seed"),
        ({"do_sample": 1}, "do_sample"),
    ],
)
def test_config_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**kwargs)


def test_config_error_message_gives_range():
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 1.5"):
        SamplingConfig(top_p=1.5)
    assert isinstance(SamplingConfig(temperature=2).temperature, float)


def test_function_validation_names_parameter():
    scores = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(scores, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="top_k"):
        apply_top_k(scores, -2)
    with pytest.raises(ValueError, match="top_p"):
        apply_top_p(scores, torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="top_p"):
        apply_top_p(scores, torch.tensor([0.5, 0.5, 0.5]))  # wrong batch size
    with pytest.raises(ValueError, match="typical_p"):
        apply_typical(scores, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        relative_top_mask(scores, 1.5)
    with pytest.raises(ValueError, match=r"min_p must be in \[0, 1\]"):
        apply_min_p(scores, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"top_n_sigma must be in \[0, inf\)"):
        apply_top_n_sigma(scores, -0.5)
    with pytest.raises(ValueError, match=r"epsilon_cutoff must be in \[0, 1\)"):
        apply_epsilon(scores, 1.0)
    with pytest.raises(ValueError, match=r"eta_cutoff must be in \[0, 1\)"):
        apply_eta(scores, torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        apply_top_p(scores, 0.5, min_tokens_to_keep=0)


# --- transformers glue --------------------------------------------------------------------------------


def test_strip_hf_sampling_warpers_keeps_others_in_order():
    penalty = RepetitionPenaltyLogitsProcessor(1.2)
    penalty_2 = RepetitionPenaltyLogitsProcessor(1.5)
    processors = LogitsProcessorList(
        [
            penalty,
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(5),
            penalty_2,
            TopPLogitsWarper(0.9),
            MinPLogitsWarper(0.1),
            TypicalLogitsWarper(0.8),
            EpsilonLogitsWarper(0.01),
            EtaLogitsWarper(0.01),
        ]
    )
    kept_list, position = strip_hf_sampling_warpers(processors)
    assert isinstance(kept_list, LogitsProcessorList)
    assert list(kept_list) == [penalty, penalty_2] and position == 1
    assert len(processors) == 9  # input untouched
    assert strip_hf_sampling_warpers(LogitsProcessorList([penalty])) == (LogitsProcessorList([penalty]), None)
    # where warpers go when transformers built none (top_n_sigma alone): before the final renormalisation
    assert warper_position(LogitsProcessorList([penalty, LogitNormalization()])) == 1
    assert warper_position(LogitsProcessorList([penalty])) == 1


def test_sampling_config_from_generation_config():
    config = sampling_config_from_generation_config(
        GenerationConfig(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, typical_p=0.8)
    )
    assert config == SamplingConfig(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, typical_p=0.8)
    assert sampling_config_from_generation_config(GenerationConfig(do_sample=True)) == SamplingConfig(
        do_sample=True
    )
    filters = GenerationConfig(
        do_sample=True, min_p=0.1, epsilon_cutoff=1e-3, eta_cutoff=2e-3, top_n_sigma=1.5, top_k=0
    )
    expected = SamplingConfig(
        do_sample=True, min_p=0.1, epsilon_cutoff=1e-3, eta_cutoff=2e-3, top_n_sigma=1.5
    )
    assert sampling_config_from_generation_config(filters) == expected
    assert sampling_config_from_generation_config(filters, top_n_sigma=0.5).top_n_sigma == 0.5  # kwarg wins
    assert sampling_config_from_generation_config(GenerationConfig(do_sample=False, top_k=3)).is_greedy


def test_sampling_logits_warper_rejects_non_config():
    with pytest.raises(TypeError, match="SamplingConfig"):
        SamplingLogitsWarper({"top_k": 3})
