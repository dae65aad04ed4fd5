"""rerank's pure parts on hand-built tables and tensors: choosing beams, rounds, seeds, the contrastive-search
score of whole candidates, and the config's errors."""

from __future__ import annotations

import math

import pytest
import torch

from contrastive_decoding.decoding.rerank import (
    SCORER_NAMES,
    RerankConfig,
    candidate_contrastive_scores,
    candidate_seeds,
    choose_beams,
    round_lengths,
)

INF = math.inf


def test_choose_beams_pools_the_candidates_of_all_beams_best_first():
    scores = torch.tensor(
        [
            [[0.1, 0.9, 0.3], [0.8, 0.2, 0.7]],  # prompt 0: best 0.9 (beam 0), then 0.8 (beam 1)
            [[0.5, 0.1, 0.2], [0.6, 0.4, 0.3]],  # prompt 1: both best from beam 1 then beam 0
        ]
    )  # [B=2, W=2, S=3]
    beam, sample, best = choose_beams(scores, 2)
    assert beam.tolist() == [[0, 1], [1, 0]]
    assert sample.tolist() == [[1, 0], [0, 0]]
    assert torch.allclose(best, torch.tensor([[0.9, 0.8], [0.6, 0.5]]))
    # both from one beam when that beam has the two best
    beam, sample, _ = choose_beams(torch.tensor([[[0.1, 0.2], [0.9, 0.8]]]), 2)
    assert beam.tolist() == [[1, 1]] and sample.tolist() == [[0, 1]]


def test_choose_beams_keeps_finished_beams_by_their_score_and_skips_empty_slots():
    # beam 0 finished with score 0.5 (one entry, the rest -inf); beam 1 sampled three candidates
    scores = torch.tensor([[[0.5, -INF, -INF], [0.4, 0.6, -0.1]]])
    beam, sample, best = choose_beams(scores, 2)
    assert beam.tolist() == [[1, 0]] and sample.tolist() == [[1, 0]]
    assert best.tolist() == [[pytest.approx(0.6), 0.5]]
    beam, sample, _ = choose_beams(scores, 1)
    assert (beam.item(), sample.item()) == (1, 1)


def test_choose_beams_breaks_ties_by_the_lower_index():
    scores = torch.zeros(1, 3, 4)
    beam, sample, _ = choose_beams(scores, 3)
    assert beam.tolist() == [[0, 0, 0]] and sample.tolist() == [[0, 1, 2]]
    scores[0, 2, 3] = 1.0
    beam, sample, _ = choose_beams(scores, 2)
    assert beam.tolist() == [[2, 0]] and sample.tolist() == [[3, 0]]


def test_choose_beams_errors():
    with pytest.raises(ValueError, match=r"width must be in \[1, 4\], got 5"):
        choose_beams(torch.zeros(1, 2, 2), 5)
    with pytest.raises(ValueError, match="at least 2 scored candidates"):
        choose_beams(torch.tensor([[[1.0, -INF], [-INF, -INF]]]), 2)
    with pytest.raises(ValueError, match="prompts, beams, samples"):
        choose_beams(torch.zeros(2, 2), 1)


def test_round_lengths_cut_the_last_round():
    assert round_lengths(10, 4) == [4, 4, 2]
    assert round_lengths(8, 4) == [4, 4]
    assert round_lengths(5, None) == [5]
    assert round_lengths(3, 20) == [3]


def test_candidate_seeds_follow_prompt_slot_sample():
    # prompt 0 (seed 10) samples from slots 0 and 1, prompt 1 (seed 50) from slot 1 only; 2 samples each
    assert candidate_seeds([10, 50], [[0, 1], [1]], 2) == [10, 11, 12, 13, 52, 53]


def _reference_candidate_scores(token_probs, hidden, mask, alpha):
    """A literal loop: per candidate token, confidence minus alpha times the max cosine over earlier real
    tokens; averaged over the candidate's real tokens."""
    rows, tokens = token_probs.shape
    context = hidden.shape[1] - tokens
    out = []
    for r in range(rows):
        total, count = 0.0, 0
        for t in range(tokens):
            position = context + t
            if not mask[r, position]:
                continue
            best = max(
                float(torch.nn.functional.cosine_similarity(hidden[r, position], hidden[r, j], dim=0))
                for j in range(position)
                if mask[r, j]
            )
            total += (1 - alpha) * float(token_probs[r, t]) - alpha * best
            count += 1
        out.append(total / count)
    return torch.tensor(out)


def test_candidate_contrastive_scores_equal_a_literal_loop():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 5, generator=generator)  # [R, C + T, H], C = 3, T = 3
    hidden[1, 0] = float("nan")  # a padded position's state may be NaN: it must never count
    token_probs = torch.rand(3, 3, generator=generator)
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 0],  # left-padded prompt, candidate ended after 2 tokens
            [1, 1, 1, 1, 0, 0],  # candidate of one token
        ]
    )
    for alpha in (0.0, 0.6, 1.0):
        ours = candidate_contrastive_scores(token_probs, hidden, mask, alpha)
        assert torch.allclose(ours, _reference_candidate_scores(token_probs, hidden, mask, alpha), atol=1e-6)
    assert torch.allclose(candidate_contrastive_scores(token_probs, hidden, mask, 0.0)[2], token_probs[2, 0])


def test_candidate_contrastive_scores_penalise_repeating_the_context():
    context = torch.eye(4)[None]  # [1, 4, 4]: four orthogonal states
    repeat = torch.cat([context, context[:, :1]], dim=1)  # the candidate's state repeats the first
    fresh = torch.cat([context, torch.ones(1, 1, 4)], dim=1)  # cos 0.5 with each
    probs, mask = torch.tensor([[0.5]]), torch.ones(1, 5)
    assert candidate_contrastive_scores(probs, fresh, mask, 0.6) > candidate_contrastive_scores(
        probs, repeat, mask, 0.6
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"num_samples": 0}, r"num_samples must be in \[1, 1000\], got 0"),
        ({"beam_width": 1.5}, r"beam_width must be an integer in \[1, 100\]"),
        ({"segment_length": 0}, r"segment_length must be in \[1, 100000\], got 0"),
        (
            {"scorer": "minlm"},
            "scorer must be one of minilm, rankgen, contrastive_search.*Did you mean 'minilm'",
        ),
        ({"scorer_path": ""}, "scorer_path must be a non-empty string or null"),
        ({"scorer": "contrastive_search", "scorer_path": "/x"}, "scorer_path is for the minilm / rankgen"),
        ({"scorer_alpha": 1.5}, r"scorer_alpha must be in \[0, 1\], got 1.5"),
    ],
)
def test_config_errors_name_the_parameter_and_range(params, message):
    with pytest.raises(ValueError, match=message):
        RerankConfig(**params)


def test_config_defaults_and_what_ranks():
    config = RerankConfig()
    assert (config.num_samples, config.beam_width, config.segment_length, config.scorer) == (
        4,
        1,
        None,
        "minilm",
    )
    assert config.ranks
    assert not RerankConfig(num_samples=1).ranks
    assert RerankConfig(num_samples=1, beam_width=2).ranks


def test_the_scorer_registry_has_every_scorer_the_config_accepts():
    from contrastive_decoding.rerank_scorers import SCORERS

    assert set(SCORERS) == set(SCORER_NAMES)
