"""Calibration of answer choices (contextual calibration, post-hoc debiasing) on hand-built probability tables,
and against literal transcriptions of the papers' reference code (numpy, as published)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastive_decoding.decoding import make_method_config
from contrastive_decoding.decoding.calibration import (
    ContextualCalibrationConfig,
    PosthocDebiasConfig,
    calibrate_choices,
    content_free_choice_logprobs,
)


def log(table) -> torch.Tensor:
    return torch.tensor(table, dtype=torch.float64).log()


# --------------------------------------------------------------------------- the papers' reference code


def zhao_get_p_content_free(all_p_y: list[list[float]]) -> np.ndarray:
    """tonyzhaozh/few-shot-learning run_classification.py get_p_content_free, after its model calls."""
    p_y = np.mean(np.array(all_p_y), axis=0)
    p_y = p_y / np.sum(p_y)  # normalize
    return p_y


def zhao_eval_predictions(all_label_probs: np.ndarray, mode=None, p_cf=None) -> list[int]:
    """tonyzhaozh/few-shot-learning run_classification.py eval_accuracy, returning the predicted labels."""
    num_classes = all_label_probs.shape[1]
    if p_cf is None:
        W = np.identity(num_classes)
        b = np.zeros([num_classes, 1])
    else:
        if mode == "diagonal_W":
            W = np.linalg.inv(np.identity(num_classes) * p_cf)
            b = np.zeros([num_classes, 1])
        elif mode == "identity_W":
            W = np.identity(num_classes)
            b = -1 * np.expand_dims(p_cf, axis=-1)
        else:
            raise AssertionError
    predictions = []
    for label_probs in all_label_probs:
        label_probs = label_probs / np.sum(label_probs)  # normalize to 1
        calibrate_label_probs = np.matmul(W, np.expand_dims(label_probs, axis=-1)) + b
        predictions.append(int(np.argmax(calibrate_label_probs)))
    return predictions


def zhang_calibrate(scores_naive: list, prob_none: list) -> list[np.ndarray]:
    """yfzhang114/LLaVA-Align experiments/eval/eval_pope_calibrate.py, calibrate_mode 'individual', mode
    'diagonal_W', setting 'none' (the prompt without the image): the calibrated label probabilities per item."""
    num_classes = 2
    out = []
    for i in range(len(scores_naive)):
        gen_answer = scores_naive[i]
        gen_answer = gen_answer / np.sum(gen_answer)
        p_cf = prob_none[i]
        p_cf = p_cf / np.sum(p_cf)
        p_cf = [x + 1e-4 for x in p_cf]
        W = np.linalg.inv(np.identity(num_classes) * p_cf)
        b = np.zeros([num_classes, 1])
        calibrate_label_probs = np.matmul(W, np.expand_dims(gen_answer, axis=-1)) + b
        calibrate_label_probs /= np.sum(calibrate_label_probs)
        out.append(calibrate_label_probs[:, 0])
    return out


# --------------------------------------------------------------------------- hand-built tables


def test_a_model_biased_towards_yes_is_corrected():
    """The model says "yes" (choice 0) to everything; without the image it says yes with 0.8. Calibrated, the
    items where the image moved it less than the bias become "no"."""
    with_image = log([[0.9, 0.1], [0.7, 0.3], [0.95, 0.05]])  # plain: yes, yes, yes
    without_image = log([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
    q = calibrate_choices(with_image, without_image, PosthocDebiasConfig(cf_epsilon=0.0)).exp()
    # (0.9/0.8, 0.1/0.2) = (1.125, 0.5) -> 0.6923; (0.875, 1.5) -> no; (1.1875, 0.25) -> yes
    expected = torch.tensor(
        [[1.125 / 1.625, 0.5 / 1.625], [0.875 / 2.375, 1.5 / 2.375], [1.1875 / 1.4375, 0.25 / 1.4375]]
    )
    torch.testing.assert_close(q, expected.double())
    assert q.argmax(-1).tolist() == [0, 1, 0]


def test_diagonal_form_on_a_uniform_content_free_distribution_is_the_identity():
    logprobs = torch.tensor([[-3.0, -1.0, -7.5], [-0.2, -0.9, -2.0]], dtype=torch.float64)
    uniform = torch.full_like(logprobs, -5.0)  # any constant: p_cf is uniform after renormalising
    q = calibrate_choices(logprobs, uniform, ContextualCalibrationConfig())
    torch.testing.assert_close(q, logprobs.log_softmax(-1))


def test_zero_strength_is_the_models_choice_distribution():
    logprobs = torch.tensor([[-3.0, -1.0, -7.5]], dtype=torch.float64)
    free = torch.tensor([[-0.1, -4.0, -9.0]], dtype=torch.float64)
    q = calibrate_choices(logprobs, free, ContextualCalibrationConfig(strength=0.0))
    torch.testing.assert_close(q, logprobs.log_softmax(-1))


def test_affine_identity_form_differs_from_diagonal_and_follows_its_formula():
    p = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    p_cf = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    diagonal = calibrate_choices(p.log(), p_cf.log(), ContextualCalibrationConfig()).exp()
    identity = calibrate_choices(p.log(), p_cf.log(), ContextualCalibrationConfig(form="identity")).exp()
    ratios = p / p_cf
    torch.testing.assert_close(diagonal, ratios / ratios.sum())
    torch.testing.assert_close(identity, (p - p_cf).softmax(-1))  # softmax(W p + b), W = I, b = -p_cf
    assert diagonal.argmax().item() == 1 and identity.argmax().item() == 1
    assert not torch.allclose(diagonal, identity)
    half = calibrate_choices(p.log(), p_cf.log(), ContextualCalibrationConfig(form="identity", strength=0.5))
    torch.testing.assert_close(half.exp(), (p - 0.5 * p_cf).softmax(-1))


def test_strength_is_the_exponent_of_the_diagonal_correction():
    p = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    p_cf = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    q = calibrate_choices(p.log(), p_cf.log(), ContextualCalibrationConfig(strength=2.0)).exp()
    expected = p / p_cf**2
    torch.testing.assert_close(q, expected / expected.sum())


def test_per_item_offsets_and_huge_gaps_do_not_matter():
    """Summed log-likelihoods of long answers differ by hundreds of nats: the ratios stay exact."""
    logprobs = torch.tensor([[-400.0, -900.0]], dtype=torch.float64)
    free = torch.tensor([[-100.0, -650.0]], dtype=torch.float64)
    q = calibrate_choices(logprobs, free, ContextualCalibrationConfig())
    # log q = (l - l_cf) - logsumexp(l - l_cf) = (-300, -250) normalised
    torch.testing.assert_close(q, torch.tensor([[-300.0, -250.0]], dtype=torch.float64).log_softmax(-1))
    assert torch.isfinite(q).all()
    shifted = calibrate_choices(logprobs + 37.0, free - 5.0, ContextualCalibrationConfig())
    torch.testing.assert_close(shifted, q)


def test_several_content_free_inputs_are_averaged_as_probabilities_then_renormalised():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    # raw (unnormalised) choice probabilities per content-free input: the mean, then / sum (Zhao's code)
    free = torch.stack([log([[0.09, 0.01]]), log([[0.05, 0.05]]), log([[0.1, 0.9]])])  # [K=3, 1, 2]
    p_cf = torch.tensor([[0.24, 0.96]], dtype=torch.float64) / 1.2
    torch.testing.assert_close(content_free_choice_logprobs(free).exp(), p_cf)
    q = calibrate_choices(p.log(), free, ContextualCalibrationConfig()).exp()
    torch.testing.assert_close(q, (p / p_cf) / (p / p_cf).sum())


def test_padded_choices_get_zero_mass_and_do_not_change_the_others():
    ragged = calibrate_choices(log([[0.2, 0.8]]), log([[0.5, 0.5]]) - 1.0, ContextualCalibrationConfig())
    padded = calibrate_choices(
        torch.tensor([[math.log(0.2), math.log(0.8), 0.0]], dtype=torch.float64),
        torch.tensor([[-1.0 + math.log(0.5), -1.0 + math.log(0.5), 3.0]], dtype=torch.float64),
        ContextualCalibrationConfig(),
        valid=torch.tensor([[True, True, False]]),
    )
    torch.testing.assert_close(padded[:, :2], ragged)
    assert padded[0, 2].item() == -math.inf


def test_epsilon_bounds_the_correction_of_a_choice_impossible_without_content():
    p = log([[0.5, 0.5]])
    free = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)
    q = calibrate_choices(p, free, PosthocDebiasConfig()).exp()  # cf_epsilon 1e-4
    expected = torch.tensor([[0.5 / (1 + 1e-4), 0.5 / 1e-4]], dtype=torch.float64)
    torch.testing.assert_close(q, expected / expected.sum())
    assert torch.isfinite(calibrate_choices(p, free, ContextualCalibrationConfig())).all()  # floored, no nan


# --------------------------------------------------------------------------- against the reference code


def test_matches_zhaos_eval_accuracy_in_both_forms():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(64, 4, generator=generator, dtype=torch.float64) ** 3  # unnormalised, skewed
    content_free = [torch.rand(4, generator=generator, dtype=torch.float64).tolist() for _ in range(3)]
    p_cf = zhao_get_p_content_free(content_free)
    free = torch.tensor(content_free, dtype=torch.float64).log()[:, None, :].expand(3, 64, 4)  # [K, I, C]
    for form, mode in (("diagonal", "diagonal_W"), ("identity", "identity_W")):
        ours = calibrate_choices(probs.log(), free, ContextualCalibrationConfig(form=form)).argmax(-1)
        assert ours.tolist() == zhao_eval_predictions(probs.numpy(), mode, p_cf), form
    torch.testing.assert_close(content_free_choice_logprobs(free)[0].exp(), torch.from_numpy(p_cf))
    # uncalibrated: the model's argmax
    assert zhao_eval_predictions(probs.numpy()) == probs.argmax(-1).tolist()


def test_matches_zhangs_pope_calibration_probability_for_probability():
    generator = torch.Generator().manual_seed(1)
    naive = torch.rand(32, 2, generator=generator, dtype=torch.float64)  # p(yes), p(no) given the image
    none = torch.rand(32, 2, generator=generator, dtype=torch.float64)  # ... without the image
    reference = np.stack(zhang_calibrate(list(naive.numpy()), list(none.numpy())))
    ours = calibrate_choices(naive.log(), none.log(), PosthocDebiasConfig()).exp()  # cf_epsilon 1e-4
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-12)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("contextual_calibration", {"form": "affine"}, "form must be one of 'diagonal', 'identity'"),
        ("contextual_calibration", {"strength": -0.1}, r"strength must be in \[0, 10\]"),
        ("posthoc_debias", {"cf_epsilon": 2.0}, r"cf_epsilon must be in \[0, 1\]"),
        ("contextual_calibration", {"content_free_inputs": []}, "content_free_inputs must be"),
        ("contextual_calibration", {"content_free_inputs": [3]}, "content_free_inputs must be"),
        ("posthoc_debias", {"content_free_inputs": ["N/A"]}, "Unknown parameter 'content_free_inputs'"),
        ("contextual_calibration", {"strenght": 1.0}, "Did you mean 'strength'"),
    ],
)
def test_bad_parameters_name_themselves(method, params, message):
    with pytest.raises(ValueError, match=message):
        make_method_config(method, **params)


def test_content_free_inputs_take_one_text_or_a_list():
    assert make_method_config("contextual_calibration", content_free_inputs="N/A").content_free_inputs == (
        "N/A",
    )
    cfg = make_method_config("contextual_calibration", content_free_inputs=["N/A", "", "[MASK]"])
    assert cfg.content_free_inputs == ("N/A", "", "[MASK]")


def test_shape_errors():
    cfg = ContextualCalibrationConfig()
    with pytest.raises(ValueError, match=r"logprobs must be \[items, choices\]"):
        calibrate_choices(torch.zeros(3), torch.zeros(3), cfg)
    with pytest.raises(ValueError, match="must end in the shape of logprobs"):
        calibrate_choices(torch.zeros(2, 3), torch.zeros(2, 4), cfg)
