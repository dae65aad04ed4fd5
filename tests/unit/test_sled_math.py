"""SLED's math on hand-built and random distributions: the evolved scores against a literal transcription of
the reference code (``tests/reference_loops.sled_reference_scores``), the latent distribution by hand, the
degenerate settings, batched == row by row, and the config's errors."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive_decoding.decoding import SledConfig, make_method_config, sled
from tests.reference_loops import sled_reference_scores


def random_case(seed: int, layers: int = 4, batch: int = 3, vocab: int = 40, spread: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    final = torch.randn(batch, vocab, generator=generator) * spread  # [B, V]
    early = final[None] + torch.randn(layers, batch, vocab, generator=generator) * spread  # [L, B, V]
    return final, early


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "rate, scale, bound, steps", [(2.0, 10, -1000.0, 1), (2.5, 7, -100.0, 10), (0.5, 40, -2500.0, 1)]
)
def test_scores_equal_a_literal_transcription_of_the_reference(seed, rate, scale, bound, steps):
    final, early = random_case(seed)
    cfg = SledConfig(
        evolution_rate=rate, evolution_scale=scale, evolution_lower_bound=bound, evolution_steps=steps
    )
    ours = sled.sled_scores(final, early, cfg)  # [B, V]
    for row in range(final.shape[0]):
        expected = sled_reference_scores(final[row], [e[row] for e in early], rate, scale, bound, steps=steps)
        torch.testing.assert_close(ours[row], expected, rtol=1e-5, atol=1e-5)


def test_cosines_equal_torch_cosine_similarity():
    final, early = random_case(7, layers=3, batch=2, vocab=25)
    top_ids = final.topk(5, dim=-1).indices  # [B, K]
    ours = sled.layer_token_cosines(final, early, top_ids)  # [L, B, K]
    probs = early.softmax(-1)
    for layer in range(3):
        for row in range(2):
            for slot, token in enumerate(top_ids[row].tolist()):
                target = probs[layer, row] - torch.nn.functional.one_hot(torch.tensor(token), 25).float()
                cos = torch.nn.functional.cosine_similarity(target, early[layer, row] - final[row], dim=0)
                assert math.isclose(float(ours[layer, row, slot]), float(cos), abs_tol=1e-6)


def test_latent_distribution_by_hand():
    # One layer, vocabulary 3, the final layer's top-2 are tokens 0 and 1.
    final = torch.tensor([[2.0, 1.0, 0.0]])
    early = torch.tensor([[[0.0, 1.0, 0.0]]])  # [1, 1, 3]
    p = [math.exp(x) for x in (0.0, 1.0, 0.0)]
    p = [x / sum(p) for x in p]
    d = [-2.0, 0.0, 0.0]  # early - final
    d_norm = 2.0
    cosines = []
    for j in (0, 1):
        target = [p[i] - (1.0 if i == j else 0.0) for i in range(3)]
        dot = sum(a * b for a, b in zip(target, d, strict=True))
        cosines.append(dot / (math.sqrt(sum(a * a for a in target)) * d_norm))
    weights = [max(c, 0.0) ** 2 for c in cosines]
    latent, top_ids = sled.latent_distribution(final, early, evolution_scale=2)
    assert top_ids.tolist() == [[0, 1]]
    # the final layer raised token 0 over the early layer (e - f < 0 there): only token 0's cosine is > 0,
    # so the latent distribution is all on token 0
    assert cosines[1] < 0 < cosines[0]
    assert weights[1] == 0.0
    torch.testing.assert_close(latent, torch.tensor([[w / sum(weights) for w in weights]]))


def test_latent_is_zero_when_no_cosine_is_positive_and_the_evolution_only_sharpens():
    final = torch.tensor([[2.0, 1.0, 0.0]])
    early = final[None].clone()  # identical layer: e - f = 0, every cosine 0
    latent, _ = sled.latent_distribution(final, early, evolution_scale=3)
    assert latent.tolist() == [[0.0, 0.0, 0.0]]
    cfg = SledConfig(evolution_rate=1.0, evolution_scale=3)
    probs = final.softmax(-1)
    torch.testing.assert_close(sled.sled_scores(final, early, cfg), final - probs)


def test_evolution_rate_zero_keeps_the_final_logits_on_the_top_tokens():
    final, early = random_case(3, vocab=60)
    cfg = SledConfig(evolution_rate=0.0, evolution_scale=12)
    scores = sled.sled_scores(final, early, cfg)
    top = final.topk(12, dim=-1).indices
    assert torch.equal(scores.gather(-1, top), final.gather(-1, top))
    outside = torch.ones_like(scores, dtype=torch.bool).scatter(-1, top, False)
    assert bool((scores[outside] == -1000.0).all())
    assert torch.equal(scores.argmax(-1), final.argmax(-1))  # == greedy on the final layer


def test_tokens_outside_the_top_k_keep_the_lower_bound():
    final, early = random_case(4)
    scores = sled.sled_scores(final, early, SledConfig(evolution_scale=5, evolution_lower_bound=-7.0))
    assert ((scores == -7.0).sum(-1) == final.shape[-1] - 5).all()


def test_a_stronger_rate_moves_the_evolved_distribution_toward_the_latent():
    final, early = random_case(5, batch=1)
    latent, top_ids = sled.latent_distribution(final, early, 10)
    target = torch.zeros_like(final).scatter(-1, top_ids, latent)
    distances = []
    for rate in (0.0, 0.5, 1.0):
        evolved = sled.evolve_logits(final, latent, top_ids, rate).softmax(-1)
        distances.append(float((evolved - target).abs().sum()))
    assert distances[0] > distances[1] > distances[2]


def test_batched_equals_row_by_row():
    final, early = random_case(11, batch=5)
    cfg = SledConfig(evolution_rate=1.5, evolution_scale=8, evolution_steps=3)
    batched = sled.sled_scores(final, early, cfg)
    for row in range(5):
        alone = sled.sled_scores(final[row : row + 1], early[:, row : row + 1], cfg)
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=0, atol=1e-6)


def test_evolution_scale_above_the_vocabulary_is_clamped():
    final, early = random_case(2, vocab=6)
    scores = sled.sled_scores(final, early, SledConfig(evolution_scale=50))
    assert bool((scores > -1000.0).all())


def test_layers():
    assert sled.early_exit_layers("all", 6, True) == [0, 1, 2, 3, 4, 5]
    assert sled.early_exit_layers("high", 6, False) == [3, 5]
    assert sled.early_exit_layers("low", 6, True) == [2]
    assert sled.early_exit_layers((1, 4, 9), 6, False) == [1, 4]
    assert SledConfig(sled_layers=[1, 2]).sled_layers == (1, 2)
    hash(SledConfig(sled_layers=[1, 2]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"evolution_rate": -0.1}, r"evolution_rate must be in \[0, 100\], got -0.1"),
        ({"evolution_scale": 0}, r"evolution_scale must be in \[1, inf\), got 0"),
        ({"evolution_scale": 2.5}, r"evolution_scale must be an integer"),
        ({"evolution_lower_bound": 1.0}, r"evolution_lower_bound must be in \(-inf, 0\], got 1.0"),
        ({"evolution_steps": 0}, r"evolution_steps must be in \[1, 100\], got 0"),
        ({"sled_layers": "middle"}, r"sled_layers must be 'all', 'low', 'high' or a list"),
        ({"sled_layers": []}, r"sled_layers must be a non-empty list"),
        ({"sled_layers": [-1]}, r"sled_layers must be a non-empty list of layer indices >= 0"),
        ({"early_exit_norm": "yes"}, r"early_exit_norm must be true or false"),
    ],
)
def test_config_errors_name_the_parameter_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SledConfig(**kwargs)


def test_make_method_config_did_you_mean():
    assert make_method_config("sled", evolution_rate=1.0).evolution_rate == 1.0
    with pytest.raises(ValueError, match="evolution_rate"):
        make_method_config("sled", evolution_rat=1.0)


def test_cosines_of_a_saturated_early_exit_equal_torch_cosine_similarity():
    # An early exit without the final norm can be huge: softmax rounds its argmax to 1.0 in float32, and the
    # closed form must not cancel to 0 there (the reference's explicit vector keeps the other tiny terms).
    final = torch.tensor([[6.8, 6.6, 6.4, 6.2, 0.0, -1.0]])
    early = torch.tensor([[[136.0, 100.0, 110.0, 40.0, 1.0, 0.0]]])
    top_ids = final.topk(4, dim=-1).indices
    ours = sled.layer_token_cosines(final, early, top_ids)[0, 0]
    probs = early[0, 0].softmax(-1)
    assert float(probs[0]) == 1.0
    for slot, token in enumerate(top_ids[0].tolist()):
        target = probs - torch.nn.functional.one_hot(torch.tensor(token), 6).float()
        cos = torch.nn.functional.cosine_similarity(target, early[0, 0] - final[0], dim=0)
        assert math.isclose(float(ours[slot]), float(cos), rel_tol=1e-4, abs_tol=1e-6), token
