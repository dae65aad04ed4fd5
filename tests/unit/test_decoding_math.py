"""Hand-checked tests of the decoding methods' configs and pure tensor functions.

Every expected value is computed here with plain ``math`` on small hand-built distributions, never by calling
the function under test a second way.
"""

import math
import re

import pytest
import torch

from contrastive_decoding.decoding import (
    METHOD_CONFIGS,
    AdaCadConfig,
    CadConfig,
    ContrastiveSearchConfig,
    DolaConfig,
    ExpertAmateurConfig,
    check_method,
    dola,
    make_method_config,
    method_parameters,
)
from contrastive_decoding.decoding import context as cad
from contrastive_decoding.decoding import expert_amateur as ea
from contrastive_decoding.decoding._math import (
    LOG_PROB_FLOOR,
    jensen_shannon_from_logprobs,
    probs_from_logprobs,
)
from contrastive_decoding.decoding._validation import check_int, check_range
from contrastive_decoding.decoding.contrastive_search import (
    contrastive_scores,
    degeneration_penalty,
    select_candidate,
)

LN2 = math.log(2.0)


def logprobs_of(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(list(rows)).log()  # [B, V]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def mean_of(p: list[float], q: list[float]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(p, q, strict=True)]


def jsd(p: list[float], q: list[float]) -> float:
    m = mean_of(p, q)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def dola_divergence(p_final: list[float], p_early: list[float]) -> float:
    """0.5 * (mean_v M (log M - log p_final) + mean_v M (log M - log p_early))."""
    m = mean_of(p_final, p_early)
    v = len(m)
    term_final = sum(mv * (math.log(mv) - math.log(f)) for mv, f in zip(m, p_final, strict=True)) / v
    term_early = sum(mv * (math.log(mv) - math.log(e)) for mv, e in zip(m, p_early, strict=True)) / v
    return 0.5 * (term_final + term_early)


def finite(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def expected_scores(values: list[float]) -> torch.Tensor:
    return torch.tensor([values])  # [1, V]


# --- _validation -----------------------------------------------------------------------------------------


def test_check_range_message_names_parameter_and_range():
    with pytest.raises(ValueError, match=re.escape("penalty_alpha must be in [0, 1], got 1.5")):
        check_range("penalty_alpha", 1.5, 0.0, 1.0)


def test_check_range_accepts_inclusive_bounds():
    check_range("x", 0.0, 0.0, 1.0)
    check_range("x", 1, 0.0, 1.0)
    with pytest.raises(ValueError, match=re.escape("x must be in (0, 1], got 0")):
        check_range("x", 0, 0.0, 1.0, low_inclusive=False)
    with pytest.raises(ValueError, match=re.escape("x must be in [0, 1), got 1.0")):
        check_range("x", 1.0, 0.0, 1.0, high_inclusive=False)


def test_check_range_open_ended_formats_infinity():
    with pytest.raises(ValueError, match=re.escape("t must be in (0, inf), got -2")):
        check_range("t", -2, 0.0, math.inf, low_inclusive=False)
    with pytest.raises(ValueError, match=re.escape("t must be in [0, inf), got -1")):
        check_range("t", -1, 0.0)


@pytest.mark.parametrize("bad", [True, False, float("nan"), "0.5", None])
def test_check_range_rejects_bool_nan_and_non_numbers(bad):
    with pytest.raises(ValueError, match=r"^alpha must be a number in \[0, 1\], got "):
        check_range("alpha", bad, 0.0, 1.0)


def test_check_int_rejects_floats_and_bools_and_names_the_range():
    with pytest.raises(ValueError, match=re.escape("top_k must be an integer in [1, 1000], got 4.0")):
        check_int("top_k", 4.0, 1, 1000)
    with pytest.raises(ValueError, match=re.escape("top_k must be an integer in [1, 1000], got True")):
        check_int("top_k", True, 1, 1000)
    with pytest.raises(ValueError, match=re.escape("top_k must be in [1, 1000], got 0")):
        check_int("top_k", 0, 1, 1000)
    check_int("top_k", 1000, 1, 1000)


# --- decoding/__init__: method registry ------------------------------------------------------------------


def test_check_method_known_and_did_you_mean():
    assert check_method("dola") == "dola"
    with pytest.raises(ValueError, match=r"Unknown method 'dolla'\. Did you mean 'dola'\?"):
        check_method("dolla")
    with pytest.raises(ValueError, match=r"Did you mean 'contrastive_search'\?"):
        check_method("contrastive-search")


def test_check_method_far_name_lists_known_methods_without_suggestion():
    with pytest.raises(ValueError, match=r"Known methods: plain \(or greedy\), contrastive_search") as info:
        check_method("xyzzy")
    assert "Did you mean" not in str(info.value)


def test_method_parameters_defaults():
    assert method_parameters("cad") == {"cad_alpha": 1.0}
    assert method_parameters("contrastive_search") == {"penalty_alpha": 0.6, "top_k": 4}
    assert method_parameters("expert_amateur") == {
        "plausibility_alpha": 0.1,
        "amateur_temperature": 1.0,
        "contrast_beta": None,
    }
    assert method_parameters("adacad") == {"adacad_threshold": 0.0}
    assert method_parameters("greedy") == {}
    dola_params = method_parameters("dola")
    assert dola_params["dola_layers"] == "high"
    assert dola_params["relative_top"] == 0.1
    assert dola_params["layer_choice"] == "dola"
    assert dola_params["early_exit_norm"] is False


def test_make_method_config_builds_validated_config():
    cfg = make_method_config("contrastive_search", top_k=6)
    assert isinstance(cfg, ContrastiveSearchConfig)
    assert (cfg.penalty_alpha, cfg.top_k) == (0.6, 6)
    assert isinstance(make_method_config("greedy"), METHOD_CONFIGS["greedy"])
    with pytest.raises(ValueError, match=re.escape("penalty_alpha must be in [0, 1], got 1.5")):
        make_method_config("contrastive_search", penalty_alpha=1.5)


def test_make_method_config_rejects_unknown_parameter_listing_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"Unknown parameter 'cad_alpah' for method 'cad'\. Did you mean 'cad_alpha'\? "
        r"Valid parameters: cad_alpha\.",
    ):
        make_method_config("cad", cad_alpah=0.5)
    with pytest.raises(ValueError, match=r"Valid parameters: penalty_alpha, top_k\.") as info:
        make_method_config("contrastive_search", top_p=0.9)
    assert "'top_p'" in str(info.value)
    with pytest.raises(
        ValueError, match=r"Unknown parameter 'foo' for method 'greedy'.*Valid parameters: none"
    ):
        make_method_config("greedy", foo=1)
    with pytest.raises(ValueError, match="Unknown method"):
        make_method_config("beam", num_beams=2)


# --- _math -----------------------------------------------------------------------------------------------


def test_probs_from_logprobs_floors_without_denormals():
    probs = probs_from_logprobs(torch.tensor([0.0, math.log(0.25), -1000.0, -float("inf")]))  # [4]
    torch.testing.assert_close(probs[:2], torch.tensor([1.0, 0.25]))
    floor = torch.tensor(math.exp(LOG_PROB_FLOOR), dtype=torch.float32)
    assert LOG_PROB_FLOOR == -80.0
    assert probs[2] == floor and probs[3] == floor
    assert probs[2] >= torch.finfo(torch.float32).tiny  # a normal float, not a denormal


def test_jensen_shannon_from_logprobs_broadcasts_layers_against_final():
    final = [[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]  # [B=2, V=3]
    early = [
        [[0.5, 0.25, 0.25], [0.6, 0.2, 0.2]],
        [[0.1, 0.1, 0.8], [0.2, 0.2, 0.6]],
    ]  # [L=2, B=2, V=3]
    got = jensen_shannon_from_logprobs(torch.tensor(final).log()[None], torch.tensor(early).log())  # [L, B]
    expected = torch.tensor([[jsd(final[b], early[layer][b]) for b in range(2)] for layer in range(2)])
    assert got.shape == (2, 2)
    torch.testing.assert_close(got, expected)
    assert got[0, 0] == 0 and got[1, 1] == 0


def test_jensen_shannon_from_logprobs_handles_zero_probability_tokens():
    # p = (1/2, 1/2, 0), q = (1/2, 0, 1/2): m = (1/2, 1/4, 1/4), KL(p || m) = KL(q || m) = 1/2 ln 2.
    p = logprobs_of((0.5, 0.5, 0.0))  # [1, 3], log p[2] = -inf
    q = logprobs_of((0.5, 0.0, 0.5))
    got = jensen_shannon_from_logprobs(p, q)  # [1]
    torch.testing.assert_close(got, torch.tensor([0.5 * LN2]))


# --- contrastive search ----------------------------------------------------------------------------------


def test_contrastive_search_config_validation():
    assert ContrastiveSearchConfig() == ContrastiveSearchConfig(penalty_alpha=0.6, top_k=4)
    with pytest.raises(ValueError, match=re.escape("penalty_alpha must be in [0, 1], got 1.5")):
        ContrastiveSearchConfig(penalty_alpha=1.5)
    with pytest.raises(ValueError, match=re.escape("top_k must be in [1, 1000], got 0")):
        ContrastiveSearchConfig(top_k=0)
    with pytest.raises(ValueError, match="top_k must be an integer"):
        ContrastiveSearchConfig(top_k=4.0)
    with pytest.raises(ValueError, match="penalty_alpha must be a number"):
        ContrastiveSearchConfig(penalty_alpha=float("nan"))


def test_degeneration_penalty_max_cosine_over_context():
    context = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # [B=1, S=2, H=3]
    mask = torch.tensor([[1, 1]])  # [B, S]
    candidates = torch.tensor(
        [[[0.0, 0.0, 5.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 4.0, 0.0]]]
    )  # [B, K=5, H]
    got = degeneration_penalty(context, mask, candidates)  # [B, K]
    # orthogonal; 45 degrees to both; opposite e1 (but orthogonal to e2); scaled e1; (0.6, 0.8) -> max 0.8
    expected = torch.tensor([[0.0, 1 / math.sqrt(2.0), 0.0, 1.0, 0.8]])
    torch.testing.assert_close(got, expected)


def test_degeneration_penalty_ignores_padding_even_when_most_similar():
    # Row 0 pads on the left, row 1 on the right; the padded state equals the candidate in both rows.
    context = torch.tensor(
        [
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        ]
    )  # [B=2, S=3, H=3]
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])  # [B, S]
    candidates = torch.tensor([[[0.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]]])  # [B, K=1, H]
    got = degeneration_penalty(context, mask, candidates)  # [B, K]
    torch.testing.assert_close(got, torch.tensor([[0.0], [0.0]]))
    # Negative similarities stay negative: a padded 1.0 never leaks in.
    got = degeneration_penalty(context, mask, -torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]))
    torch.testing.assert_close(got, torch.tensor([[-1 / math.sqrt(2.0)], [-1 / math.sqrt(2.0)]]))


def test_degeneration_penalty_ignores_nan_padding_states():
    # A fully masked query row can leave NaN hidden states at padded positions; they must not count either.
    context = torch.tensor([[[math.nan, math.nan], [1.0, 0.0], [0.6, 0.8]]])  # [B=1, S=3, H=2]
    mask = torch.tensor([[0, 1, 1]])  # [B, S]
    candidates = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # [B, K=2, H]
    got = degeneration_penalty(context, mask, candidates)  # [B, K]
    torch.testing.assert_close(got, torch.tensor([[0.8, 1.0]]))


def test_contrastive_scores_formula():
    probs = torch.tensor([[0.5, 0.3, 0.2]])  # [B, K]
    penalty = torch.tensor([[1.0, 0.5, -0.25]])  # [B, K]
    got = contrastive_scores(probs, penalty, 0.6)
    expected = torch.tensor([[0.4 * 0.5 - 0.6 * 1.0, 0.4 * 0.3 - 0.6 * 0.5, 0.4 * 0.2 + 0.6 * 0.25]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(contrastive_scores(probs, penalty, 0.0), probs)
    torch.testing.assert_close(contrastive_scores(probs, penalty, 1.0), -penalty)


def test_select_candidate_repeating_candidate_loses_unless_alpha_zero():
    context = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # [B=1, S=2, H=3]
    mask = torch.ones(1, 2, dtype=torch.long)  # [B, S]
    probs = torch.tensor([[0.6, 0.4]])  # [B, K=2]: candidate 0 is the most probable
    candidates = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # [B, K, H]: candidate 0 repeats state 0
    # alpha 0.6: 0.4 * 0.6 - 0.6 * 1 = -0.36 vs 0.4 * 0.4 - 0 = 0.16 -> candidate 1
    assert select_candidate(probs, context, mask, candidates, 0.6).tolist() == [1]
    assert select_candidate(probs, context, mask, candidates, 0.0).tolist() == [0]
    # If the repeated state is padding, nothing is repeated and the probable candidate wins again.
    assert select_candidate(probs, context, torch.tensor([[0, 1]]), candidates, 0.6).tolist() == [0]


def test_select_candidate_per_row():
    context = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [B=2, S=1, H=2]
    mask = torch.ones(2, 1, dtype=torch.long)
    probs = torch.tensor([[0.55, 0.45], [0.55, 0.45]])  # [B, K]
    candidates = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [B, K, H]
    # row 0: candidate 0 repeats the context; row 1: candidate 1 does.
    assert select_candidate(probs, context, mask, candidates, 0.5).tolist() == [1, 0]


# --- expert-amateur --------------------------------------------------------------------------------------


def test_expert_amateur_config_validation():
    assert ExpertAmateurConfig().contrast_beta is None
    with pytest.raises(ValueError, match=re.escape("plausibility_alpha must be in [0, 1], got 1.5")):
        ExpertAmateurConfig(plausibility_alpha=1.5)
    with pytest.raises(ValueError, match=re.escape("amateur_temperature must be in (0, inf), got 0")):
        ExpertAmateurConfig(amateur_temperature=0)
    with pytest.raises(ValueError, match=re.escape("contrast_beta must be in [0, 100], got -0.5")):
        ExpertAmateurConfig(contrast_beta=-0.5)
    with pytest.raises(ValueError, match="amateur_temperature must be a number"):
        ExpertAmateurConfig(amateur_temperature=True)


def test_expert_amateur_li_score_on_head():
    expert = logprobs_of((0.5, 0.3, 0.16, 0.04)) + 3.0  # [1, V] unnormalized logits
    amateur = logprobs_of((0.7, 0.1, 0.1, 0.1)) - 1.0
    got = ea.contrast(expert, amateur, ExpertAmateurConfig(plausibility_alpha=0.1))
    # head: p_exp >= 0.05 -> tokens 0, 1, 2; 0.04 is outside.
    expected = expected_scores([math.log(0.5 / 0.7), math.log(0.3 / 0.1), math.log(0.16 / 0.1), -math.inf])
    torch.testing.assert_close(got, expected)


def test_expert_amateur_flips_away_from_expert_argmax():
    expert = logprobs_of((0.5, 0.3, 0.16, 0.04))
    amateur = logprobs_of((0.7, 0.1, 0.1, 0.1))
    assert expert.argmax(-1).item() == 0
    assert ea.contrast(expert, amateur, ExpertAmateurConfig()).argmax(-1).tolist() == [1]
    # A token the amateur likes even less but that is outside the head never wins.
    amateur = logprobs_of((0.7, 0.1, 0.1999, 0.0001))
    scores = ea.contrast(expert, amateur, ExpertAmateurConfig())
    assert scores[0, 3] == -math.inf
    assert scores.argmax(-1).tolist() == [1]


def test_expert_amateur_obrien_lewis_form():
    expert = logprobs_of((0.5, 0.3, 0.16, 0.04))
    amateur = logprobs_of((0.7, 0.1, 0.1, 0.1))
    got = ea.contrast(expert, amateur, ExpertAmateurConfig(contrast_beta=0.5))
    pe, pa = [0.5, 0.3, 0.16], [0.7, 0.1, 0.1]
    expected = expected_scores(
        [1.5 * math.log(e) - 0.5 * math.log(a) for e, a in zip(pe, pa, strict=True)] + [-math.inf]
    )
    torch.testing.assert_close(got, expected)
    # beta 0: the expert's own log-probs on the head
    got = ea.contrast(expert, amateur, ExpertAmateurConfig(contrast_beta=0.0))
    torch.testing.assert_close(got, expected_scores([math.log(e) for e in pe] + [-math.inf]))


def test_expert_amateur_temperature_sharpens_amateur():
    expert = logprobs_of((0.4, 0.35, 0.25))
    amateur = logprobs_of((0.5, 0.25, 0.25))
    # amateur / 0.5 -> probs proportional to (1/4, 1/16, 1/16) -> (2/3, 1/6, 1/6)
    got = ea.contrast(expert, amateur, ExpertAmateurConfig(amateur_temperature=0.5))
    expected = expected_scores([math.log(0.4 / (2 / 3)), math.log(0.35 / (1 / 6)), math.log(0.25 / (1 / 6))])
    torch.testing.assert_close(got, expected)
    # temperature 2 -> probs proportional to sqrt: (sqrt(.5), .5, .5) / (sqrt(.5) + 1)
    z = math.sqrt(0.5) + 1.0
    got = ea.contrast(expert, amateur, ExpertAmateurConfig(amateur_temperature=2.0))
    expected = expected_scores(
        [math.log(0.4 * z / math.sqrt(0.5)), math.log(0.35 * z / 0.5), math.log(0.25 * z / 0.5)]
    )
    torch.testing.assert_close(got, expected)


def test_expert_amateur_alpha_one_keeps_only_argmax_and_zero_keeps_all():
    expert = logprobs_of((0.2, 0.45, 0.3, 0.05), (0.6, 0.1, 0.1, 0.2))  # [B=2, V]
    amateur = logprobs_of((0.25, 0.25, 0.25, 0.25), (0.1, 0.3, 0.3, 0.3))
    scores = ea.contrast(expert, amateur, ExpertAmateurConfig(plausibility_alpha=1.0))
    assert torch.isfinite(scores).tolist() == [[False, True, False, False], [True, False, False, False]]
    scores = ea.contrast(expert, amateur, ExpertAmateurConfig(plausibility_alpha=0.0))
    assert torch.isfinite(scores).all()


# --- DoLa: config and candidate layers -------------------------------------------------------------------


def test_dola_config_list_becomes_tuple_and_hashable():
    cfg = DolaConfig(dola_layers=[0, 2, 4])
    assert cfg.dola_layers == (0, 2, 4)
    assert isinstance(cfg.dola_layers, tuple)
    assert hash(cfg) == hash(DolaConfig(dola_layers=(0, 2, 4)))
    assert DolaConfig(dola_layers="low").dola_layers == "low"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dola_layers": "middle"}, "dola_layers"),
        ({"dola_layers": []}, "dola_layers"),
        ({"dola_layers": [-1, 2]}, "dola_layers"),
        ({"dola_layers": [True]}, "dola_layers"),
        ({"dola_layers": [1.0]}, "dola_layers"),
        ({"dola_layers": 4}, "dola_layers"),
        ({"relative_top": 1.5}, "relative_top"),
        ({"relative_top": -0.1}, "relative_top"),
        ({"layer_choice": "kl"}, "layer_choice"),
    ],
)
def test_dola_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        DolaConfig(**kwargs)


@pytest.mark.parametrize(
    ("bucket", "num_layers", "tied", "expected"),
    [
        ("high", 30, True, [15, 17, 19, 21, 23, 25, 27, 29]),
        ("low", 30, True, [2, 4, 6, 8, 10, 12, 14]),
        ("low", 30, False, [0, 2, 4, 6, 8, 10, 12, 14]),
        ("low", 24, False, [0, 2, 4, 6, 8, 10]),
        ("high", 24, False, [12, 14, 16, 18, 20, 22]),
        ("high", 24, True, [12, 14, 16, 18, 20, 22]),
        ("low", 40, True, [2, 4, 6, 8, 10, 12, 14, 16, 18]),
        ("high", 40, True, [20, 22, 24, 26, 28, 30, 32, 34, 36, 38]),
        # N > 40: the first / last 20 layers, step 2
        ("low", 48, True, [2, 4, 6, 8, 10, 12, 14, 16, 18]),
        ("low", 48, False, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),
        ("high", 48, True, [28, 30, 32, 34, 36, 38, 40, 42, 44, 46]),
        ("high", 41, False, [21, 23, 25, 27, 29, 31, 33, 35, 37, 39]),
        # shallow tied models: start at 1 for 2 layers, 0 for 1 layer
        ("low", 2, True, [1]),
        ("high", 2, True, [1]),
        ("low", 1, True, [0]),
        ("low", 4, True, [2]),
    ],
)
def test_candidate_layers_buckets(bucket, num_layers, tied, expected):
    assert dola.candidate_layers(bucket, num_layers, tied) == expected


def test_candidate_layers_explicit_list_drops_out_of_range():
    assert dola.candidate_layers((0, 10, 31, 32, 40), 32, True) == [0, 10, 31]
    assert dola.candidate_layers((5, 3), 32, False) == [5, 3]
    with pytest.raises(ValueError, match=r"dola_layers \[32, 40\] has no layer below the model's 32 layers"):
        dola.candidate_layers((32, 40), 32, True)


# --- DoLa: divergence, filter, selection, contrast -------------------------------------------------------


def test_layer_divergence_dola_mode_by_hand():
    final = [0.5, 0.25, 0.25]
    early = [[0.25, 0.25, 0.5], [0.5, 0.25, 0.25], [0.1, 0.3, 0.6]]  # L=3
    got = dola.layer_divergence(
        torch.tensor([final]).log(), torch.tensor(early).log()[:, None, :], "dola"
    )  # [L, B=1]
    expected = torch.tensor([[dola_divergence(final, e)] for e in early])
    assert got.shape == (3, 1)
    torch.testing.assert_close(got, expected)
    assert got[1, 0].abs() < 1e-7  # identical distributions
    # It is not the textbook JSD (mean over V and the reverse KL direction).
    assert abs(got[0, 0].item() - jsd(final, early[0])) > 0.01


def test_layer_divergence_jsd_mode_by_hand():
    final = [0.5, 0.25, 0.125, 0.125]
    early = [[0.125, 0.125, 0.25, 0.5], [0.25, 0.25, 0.25, 0.25]]  # L=2
    got = dola.layer_divergence(torch.tensor([final]).log(), torch.tensor(early).log()[:, None, :], "jsd")
    expected = torch.tensor([[jsd(final, e)] for e in early])
    torch.testing.assert_close(got, expected)


def test_dola_and_jsd_pick_different_layers():
    final = [0.5, 0.25, 0.25]
    early = [[0.05, 0.3, 0.65], [0.1, 0.1, 0.8]]
    # by hand: the DoLa quantity prefers layer 0, the textbook JSD layer 1
    assert dola_divergence(final, early[0]) > dola_divergence(final, early[1])
    assert jsd(final, early[1]) > jsd(final, early[0])
    final_lp = torch.tensor([final]).log()  # [B=1, V]
    early_lp = torch.tensor(early).log()[:, None, :]  # [L=2, B, V]
    assert dola.select_premature_layer(final_lp, early_lp, "dola").tolist() == [0]
    assert dola.select_premature_layer(final_lp, early_lp, "jsd").tolist() == [1]


@pytest.mark.parametrize("layer_choice", ["dola", "jsd"])
def test_select_premature_layer_per_row(layer_choice):
    final = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]).log()  # [B=2, V=3]
    early = torch.tensor(
        [
            [[0.5, 0.25, 0.25], [0.8, 0.1, 0.1]],  # layer 0: row 0 identical to final, row 1 far
            [[0.1, 0.1, 0.8], [0.25, 0.25, 0.5]],  # layer 1: row 0 far, row 1 identical
        ]
    ).log()  # [L=2, B, V]
    assert dola.select_premature_layer(final, early, layer_choice).tolist() == [1, 0]


def test_select_premature_layer_single_candidate_is_zero():
    final = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()  # [B=2, V]
    early = torch.tensor([[[0.1, 0.9], [0.9, 0.1]]]).log()  # [L=1, B, V]
    got = dola.select_premature_layer(final, early)
    assert got.tolist() == [0, 0]
    assert got.dtype == torch.long


def test_relative_top_filter_fill_values():
    final = logprobs_of((0.5, 0.3, 0.16, 0.04))  # [B=1, V]
    premature = logprobs_of((0.1, 0.2, 0.3, 0.4))
    got_final, got_premature = dola.relative_top_filter(final, premature, 0.1)
    # head: p >= 0.05 -> tokens 0, 1, 2
    torch.testing.assert_close(
        got_final, expected_scores([math.log(p) for p in (0.5, 0.3, 0.16)] + [-math.inf])
    )
    torch.testing.assert_close(
        got_premature, expected_scores([math.log(p) for p in (0.1, 0.2, 0.3)] + [-1e-3])
    )


def test_relative_top_filter_per_row_threshold():
    final = logprobs_of((0.5, 0.3, 0.16, 0.04), (0.5, 0.3, 0.16, 0.04))  # [B=2, V]
    premature = logprobs_of((0.25, 0.25, 0.25, 0.25), (0.25, 0.25, 0.25, 0.25))
    got_final, got_premature = dola.relative_top_filter(final, premature, torch.tensor([0.1, 0.5]))
    # row 0 keeps p >= 0.05, row 1 keeps p >= 0.25
    assert torch.isfinite(got_final).tolist() == [[True, True, True, False], [True, True, False, False]]
    q = math.log(0.25)
    torch.testing.assert_close(got_premature, torch.tensor([[q, q, q, -1e-3], [q, q, -1e-3, -1e-3]]))


def test_dola_contrast_end_to_end():
    final_p = [0.5, 0.3, 0.16, 0.04]
    final = torch.tensor([final_p]).log() + 2.0  # [B=1, V] unnormalized logits
    early = torch.tensor([[final_p], [[0.6, 0.1, 0.2, 0.1]]]).log() - 1.0  # [L=2, B, V]
    scores, chosen = dola.contrast(final, early, DolaConfig(relative_top=0.1))
    # layer 0 equals the final layer (divergence 0), so layer 1 is premature
    assert chosen.tolist() == [1]
    expected = expected_scores([math.log(0.5 / 0.6), math.log(0.3 / 0.1), math.log(0.16 / 0.2), -math.inf])
    torch.testing.assert_close(scores, expected)
    assert scores.argmax(-1).tolist() == [1]  # DoLa moves away from the final argmax (token 0)


def test_dola_contrast_rows_use_their_own_layer():
    final = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]).log()  # [B=2, V=3]
    early = torch.tensor(
        [[[0.5, 0.25, 0.25], [0.8, 0.1, 0.1]], [[0.1, 0.1, 0.8], [0.25, 0.25, 0.5]]]
    ).log()  # [L=2, B, V]
    scores, chosen = dola.contrast(final, early, DolaConfig(relative_top=0.0))
    assert chosen.tolist() == [1, 0]
    expected = torch.tensor(
        [
            [math.log(0.5 / 0.1), math.log(0.25 / 0.1), math.log(0.25 / 0.8)],
            [math.log(0.25 / 0.8), math.log(0.25 / 0.1), math.log(0.5 / 0.1)],
        ]
    )
    torch.testing.assert_close(scores, expected)


@pytest.mark.parametrize("layer_choice", ["dola", "jsd"])
def test_dola_contrast_in_row_chunks_is_bit_identical_to_one_pass(monkeypatch, layer_choice):
    generator = torch.Generator().manual_seed(0)
    final = torch.randn(7, 50, generator=generator) * 3  # [B, V]
    early = torch.randn(4, 7, 50, generator=generator) * 3  # [L, B, V]
    cfg = DolaConfig(layer_choice=layer_choice)
    monkeypatch.setattr(dola, "CHUNK_ELEMENTS", 10**9)  # one chunk
    one_scores, one_chosen = dola.contrast(final, early, cfg)
    for elements in (1, 4 * 50 * 3):  # a row per chunk; 3 rows per chunk (the last chunk holds 1)
        monkeypatch.setattr(dola, "CHUNK_ELEMENTS", elements)
        scores, chosen = dola.contrast(final, early, cfg)
        assert torch.equal(scores, one_scores) and torch.equal(chosen, one_chosen)
    assert len(set(one_chosen.tolist())) > 1  # the rows do choose different layers


# --- CAD / AdaCAD ----------------------------------------------------------------------------------------


def test_cad_configs_validation():
    assert CadConfig().cad_alpha == 1.0
    assert AdaCadConfig().adacad_threshold == 0.0
    with pytest.raises(ValueError, match=re.escape("cad_alpha must be in [0, 100], got -1")):
        CadConfig(cad_alpha=-1)
    with pytest.raises(ValueError, match=re.escape("adacad_threshold must be in [0, 0.693147], got 0.7")):
        AdaCadConfig(adacad_threshold=0.7)
    AdaCadConfig(adacad_threshold=0.5)
    with pytest.raises(ValueError, match="cad_alpha must be a number"):
        CadConfig(cad_alpha=float("nan"))


def test_cad_contrast_scalar_alpha():
    p_ctx, p_free = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]
    context_logits = torch.tensor([p_ctx]).log() + 4.0  # [B=1, V] unnormalized
    free_logits = torch.tensor([p_free]).log() - 2.0
    got = cad.cad_contrast(context_logits, free_logits, 1.0)
    torch.testing.assert_close(
        got, expected_scores([2 * math.log(a) - math.log(b) for a, b in zip(p_ctx, p_free, strict=True)])
    )
    got = cad.cad_contrast(context_logits, free_logits, 0.0)
    torch.testing.assert_close(got, expected_scores([math.log(a) for a in p_ctx]))


def test_cad_contrast_per_row_alpha():
    p_ctx = [[0.6, 0.3, 0.1], [0.25, 0.25, 0.5]]
    p_free = [[0.2, 0.5, 0.3], [0.5, 0.25, 0.25]]
    alpha = [0.5, 2.0]
    got = cad.cad_contrast(torch.tensor(p_ctx).log(), torch.tensor(p_free).log(), torch.tensor(alpha))
    expected = torch.tensor(
        [
            [
                (1 + alpha[b]) * math.log(a) - alpha[b] * math.log(f)
                for a, f in zip(p_ctx[b], p_free[b], strict=True)
            ]
            for b in range(2)
        ]
    )
    torch.testing.assert_close(got, expected)


def test_jensen_shannon_identical_is_zero_and_two_token_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log() + 1.0  # [B=2, V=2] logits
    q = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    got = cad.jensen_shannon(p, q)  # [B]
    # row 1: m = (0.7, 0.3); 0.5 (0.9 ln(0.9/0.7) + 0.1 ln(0.1/0.3)) + 0.5 (0.5 ln(0.5/0.7) + 0.5 ln(0.5/0.3))
    by_hand = 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)) + 0.5 * (
        0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    )
    torch.testing.assert_close(got, torch.tensor([0.0, by_hand]))


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([[0.0, -200.0]], [[-200.0, 0.0]]),  # nearly disjoint, finite logits
        ([[0.0, -math.inf]], [[-math.inf, 0.0]]),  # exactly disjoint: (1, 0) vs (0, 1)
    ],
    ids=["finite", "exact_zeros"],
)
def test_jensen_shannon_disjoint_is_ln2(p, q):
    got = cad.jensen_shannon(torch.tensor(p), torch.tensor(q))
    torch.testing.assert_close(got, torch.tensor([LN2]))


def test_adacad_alpha_threshold_zeroes_small_divergences():
    p = [[0.5, 0.5], [0.9, 0.1]]
    q = [[0.6, 0.4], [0.1, 0.9]]
    small, large = jsd(p[0], q[0]), jsd(p[1], q[1])
    assert small < 0.1 < large  # ~0.005 and ~0.368
    p_logits, q_logits = torch.tensor(p).log(), torch.tensor(q).log()
    torch.testing.assert_close(cad.adacad_alpha(p_logits, q_logits), torch.tensor([small, large]))
    torch.testing.assert_close(cad.adacad_alpha(p_logits, q_logits, 0.1), torch.tensor([0.0, large]))
    torch.testing.assert_close(cad.adacad_alpha(p_logits, q_logits, 0.5), torch.tensor([0.0, 0.0]))


def test_adacad_contrast_on_raw_logits():
    p, q = [0.9, 0.1], [0.1, 0.9]
    context_logits = torch.tensor([p]).log() + 5.0  # [B=1, V] raw, unnormalized
    free_logits = torch.tensor([q]).log() - 2.0
    scores, alpha = cad.adacad_contrast(context_logits, free_logits, AdaCadConfig())
    a = jsd(p, q)
    torch.testing.assert_close(alpha, torch.tensor([a]))
    expected = expected_scores(
        [(1 + a) * (math.log(x) + 5.0) - a * (math.log(y) - 2.0) for x, y in zip(p, q, strict=True)]
    )
    torch.testing.assert_close(scores, expected)


def test_adacad_contrast_below_threshold_is_plain_context_logits():
    context_logits = torch.tensor([[0.5, 0.5]]).log() + 3.0  # [B=1, V]
    free_logits = torch.tensor([[0.6, 0.4]]).log()
    scores, alpha = cad.adacad_contrast(context_logits, free_logits, AdaCadConfig(adacad_threshold=0.1))
    assert alpha.tolist() == [0.0]
    torch.testing.assert_close(scores, context_logits)
