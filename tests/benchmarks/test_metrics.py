"""Offline evaluate-format metrics: hand-computed values, registry errors, and loading without network."""

from __future__ import annotations

import itertools
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from contrastive_decoding.benchmarks.metrics import METRICS, load_metric

REAL_CHAIR_SYNONYMS = Path("/work/shared/data/chair/synonyms.txt")


# ----------------------------------------------------------------------------------------------- registry


def test_registry_points_at_one_script_per_metric() -> None:
    assert set(METRICS) == {
        "truthfulqa_mc",
        "exact_match_any",
        "gsm8k_accuracy",
        "pope",
        "chair",
        "open_ended_quality",
        "rouge_bleu",
        "summary_support",
    }
    for name, module_dir in METRICS.items():
        assert Path(module_dir).is_absolute()
        assert (Path(module_dir) / f"{name}.py").is_file()


def test_unknown_metric_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match=r"Unknown metric 'truthfulqa_mc2'\. Did you mean 'truthfulqa_mc'\?"):
        load_metric("truthfulqa_mc2")
    with pytest.raises(ValueError, match=r"Did you mean 'rouge_bleu'\?"):
        load_metric("rogue_bleu")


def test_unknown_metric_without_close_match_lists_available_metrics() -> None:
    with pytest.raises(ValueError) as error:
        load_metric("zzzz")
    assert "Did you mean" not in str(error.value)
    assert "Available metrics: chair, exact_match_any" in str(error.value)


def test_loading_and_computing_work_with_the_network_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    attempted_connections: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempted_connections.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    environment_before = dict(os.environ)

    for name in METRICS:
        assert load_metric(name).name == name
    pope = load_metric("pope")
    # One "yes" answer to a "yes" question and one "no" to a "no" question: accuracy 2/2.
    assert pope.compute(predictions=["Yes.", "No."], references=["yes", "no"])["accuracy"] == 1.0

    assert attempted_connections == []
    assert dict(os.environ) == environment_before  # load_metric sets no environment variable


# ---------------------------------------------------------------------------------------------- truthfulqa_mc


def test_truthfulqa_mc_hand_computed() -> None:
    metric = load_metric("truthfulqa_mc")
    results = metric.compute(
        correct_answer_scores=[
            # Q1: best answer p=0.2 < false 0.5 -> MC1 0; MC2 = (0.2 + 0.3) / (0.2 + 0.3 + 0.5) = 0.5;
            #     no true answer beats max false 0.5 -> MC3 0; pairs (0.2>0.5, 0.3>0.5) -> 0/2.
            [math.log(0.2), math.log(0.3)],
            # Q2: best answer 0.6 > max false 0.2 -> MC1 1; MC2 = 0.7 / (0.7 + 0.3) = 0.7;
            #     0.6 beats 0.2, 0.1 does not -> MC3 1/2;
            #     pairs 0.6>0.2, 0.6>0.1, 0.1>0.2 no, 0.1>0.1 no -> 2/4.
            [math.log(0.6), math.log(0.1)],
        ],
        incorrect_answer_scores=[[math.log(0.5)], [math.log(0.2), math.log(0.1)]],
    )
    # Means over the two questions.
    assert results["MC1"] == pytest.approx(0.5)
    assert results["MC2"] == pytest.approx(0.6)
    assert results["MC3"] == pytest.approx(0.25)
    assert results["pairwise_accuracy"] == pytest.approx(0.25)


def test_truthfulqa_mc_ties_lose_and_mc2_does_not_underflow() -> None:
    metric = load_metric("truthfulqa_mc")
    results = metric.compute(
        # exp(-1000) underflows to 0 in float64, so the naive formula gives 0/0.
        # Shifting by 1000: MC2 = (1 + e^-1) / (1 + e^-1 + 1) = 1.367879 / 2.367879 = 0.577681.
        # MC1: best -1000 is not > max false -1000 (tie) -> 0; MC3: no true answer strictly beats -1000 -> 0.
        correct_answer_scores=[[-1000.0, -1001.0]],
        incorrect_answer_scores=[[-1000.0]],
    )
    assert results["MC2"] == pytest.approx((1 + math.exp(-1)) / (2 + math.exp(-1)))
    assert results["MC2"] == pytest.approx(0.577681, abs=1e-6)
    assert results["MC1"] == 0.0
    assert results["MC3"] == 0.0


def test_truthfulqa_mc_rejects_a_question_without_incorrect_answers() -> None:
    metric = load_metric("truthfulqa_mc")
    with pytest.raises(ValueError, match="at least one correct and one incorrect"):
        metric.compute(correct_answer_scores=[[-1.0]], incorrect_answer_scores=[[]])


# -------------------------------------------------------------------------------------------- exact_match_any


def test_exact_match_any_hand_computed() -> None:
    metric = load_metric("exact_match_any")
    results = metric.compute(
        predictions=[
            "The Eiffel Tower!",  # normalized "eiffel tower" == "eiffel tower": EM 1, contains 1
            "It is the Eiffel Tower, in Paris.",  # "it is eiffel tower in paris": EM 0, contains 1
            "1990",  # answer "1" is not a whole token of "1990": EM 0, contains 0
            "an apple",  # "apple" == normalized "Apple.": EM 1, contains 1
        ],
        references=[["Eiffel tower"], ["Louvre", "eiffel  tower"], ["1"], ["Apple.", "pear"]],
    )
    assert results["exact_match"] == pytest.approx(2 / 4)
    assert results["contains_answer"] == pytest.approx(3 / 4)


# --------------------------------------------------------------------------------------------- gsm8k_accuracy


def test_gsm8k_accuracy_hand_computed() -> None:
    metric = load_metric("gsm8k_accuracy")
    results = metric.compute(
        predictions=[
            "She has 16 - 3 - 4 = 9 eggs and earns 9 * 2 = 18. The answer is 18.",  # 18 == 18: correct
            "The answer is $1,234.00 in total, not 5.",  # first number after trigger 1234.00 == 1234: correct
            "So she earns 10 + 20 = 30 dollars.",  # no trigger: last number 30 != 20: wrong
            "I do not know.",  # no number: invalid (wrong)
            "Then 7 - 10 = -3. The answer is -3",  # -3 == -3: correct
        ],
        references=[
            "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18",
            "#### 1,234",
            "#### 20",
            "#### 7",
            "-3",
        ],
    )
    assert results["accuracy"] == pytest.approx(3 / 5)
    assert results["invalid_rate"] == pytest.approx(1 / 5)


# ------------------------------------------------------------------------------------------------------- pope


def test_pope_hand_computed() -> None:
    metric = load_metric("pope")
    results = metric.compute(
        predictions=[
            "Yes, there is a dog in the image.",  # yes / gold yes: TP
            "No, there is no cat.",  # "No" -> no / gold no: TN
            "There is not a car in the image.",  # "not" -> no / gold yes: FN
            "Yes. But no person is visible.",  # first sentence "Yes" -> yes / gold no: FP
            "Yes",  # yes / gold yes: TP
            "no",  # no / gold yes: FN
        ],
        references=["yes", "no", "yes", "no", "Yes", "yes"],
    )
    # TP=2, FP=1, TN=1, FN=2, N=6.
    assert results["accuracy"] == pytest.approx(3 / 6)  # (TP + TN) / N
    assert results["precision"] == pytest.approx(2 / 3)  # TP / (TP + FP)
    assert results["recall"] == pytest.approx(2 / 4)  # TP / (TP + FN)
    assert results["f1"] == pytest.approx(4 / 7)  # 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6)
    assert results["yes_ratio"] == pytest.approx(3 / 6)  # (TP + FP) / N


def test_pope_rejects_labels_other_than_yes_no() -> None:
    with pytest.raises(ValueError, match="must be 'yes' or 'no'"):
        load_metric("pope").compute(predictions=["Yes"], references=["maybe"])


# ------------------------------------------------------------------------------------------------------ chair

TINY_SYNONYMS = """\
person, man, woman, people, baby
dog, puppy
cat, kitten
dining table, table
traffic light, stop light
chair, seat
toilet
"""


def test_chair_hand_computed(tmp_path: Path) -> None:
    synonyms_path = tmp_path / "synonyms.txt"
    synonyms_path.write_text(TINY_SYNONYMS)
    results = load_metric("chair").compute(
        predictions=[
            # men -> man -> person, puppy -> dog, table -> dining table: 3 mentions, all in the image.
            "Two men and a puppy sit at a table.",
            # kitten -> cat (hallucinated), "traffic light" (two-word, hallucinated), dogs -> dog:
            # 3 mentions, 2 hallucinated.
            "A kitten sleeps near a traffic light and two dogs.",
            # "toilet seat" -> toilet, so "seat" is not read as chair: 1 mention, in the image.
            "A toilet seat in a bathroom.",
            # "hot dog" is a reference double word that is no object: 0 mentions (not a hallucinated dog).
            "A hot dog on a plate.",
            # "baby cat" -> cat (not person), kittens -> kitten -> cat: 2 mentions, in the image.
            "A baby cat with kittens.",
        ],
        references=[["person", "dog", "dining table"], ["dog"], ["toilet"], [], ["cat"]],
        synonyms_path=str(synonyms_path),
    )
    assert results["num_mentions"] == 3 + 3 + 1 + 0 + 2
    assert results["num_hallucinated_mentions"] == 2
    assert results["CHAIR_s"] == pytest.approx(1 / 5)  # only the second caption hallucinates
    assert results["CHAIR_i"] == pytest.approx(2 / 9)


def test_chair_requires_a_synonym_file() -> None:
    with pytest.raises(ValueError, match="synonyms_path"):
        load_metric("chair").compute(predictions=["A dog."], references=[["dog"]])


@pytest.mark.skipif(not REAL_CHAIR_SYNONYMS.is_file(), reason="shared CHAIR data not available")
def test_chair_with_the_mscoco_synonym_file() -> None:
    results = load_metric("chair").compute(
        # man -> person, "motor bike" -> motorcycle (line " motor bike" has a leading space in the file),
        # "fire hydrant" -> fire hydrant (not in the image): 3 mentions, 1 hallucinated.
        predictions=["A man riding a motor bike next to a fire hydrant."],
        references=[["person", "motorcycle"]],
        synonyms_path=str(REAL_CHAIR_SYNONYMS),
    )
    assert (results["num_mentions"], results["num_hallucinated_mentions"]) == (3, 1)
    assert results["CHAIR_i"] == pytest.approx(1 / 3)
    assert results["CHAIR_s"] == 1.0


# --------------------------------------------------------------------------------------- open_ended_quality

FRUITS = ["apple", "pear", "plum", "fig", "kiwi"]
VEHICLES = ["car", "bus", "train", "boat", "bike"]
FAKE_VOCABULARY = ["red", "blue", *FRUITS, *VEHICLES]


def bag_of_words_embedder(texts: list[str]) -> np.ndarray:
    """Deterministic fake sentence embedder: word counts over FAKE_VOCABULARY (other words ignored)."""
    embeddings = np.zeros((len(texts), len(FAKE_VOCABULARY)))
    for row, text in enumerate(texts):
        for word in text.split():
            if word in FAKE_VOCABULARY:
                embeddings[row, FAKE_VOCABULARY.index(word)] += 1
    return embeddings


def test_open_ended_repetition_diversity_and_length() -> None:
    results = load_metric("open_ended_quality").compute(predictions=["a b a b a", "x y z"])
    # "a b a b a": bigrams ab ba ab ba -> 2 unique / 4 -> rep-2 50;
    #              trigrams aba bab aba -> 2/3 -> rep-3 33.33;
    #              4-grams abab baba -> 2/2 -> rep-4 0.
    # "x y z": bigrams xy yz -> rep-2 0; trigram xyz -> rep-3 0; no 4-gram -> left out of the rep-4 mean.
    assert results["rep-2"] == pytest.approx((50 + 0) / 2)
    assert results["rep-3"] == pytest.approx((100 / 3 + 0) / 2)
    assert results["rep-4"] == pytest.approx(0.0)
    assert results["diversity"] == pytest.approx((1 - 0.25) * (1 - 1 / 6) * 1)  # = 0.625
    assert results["mean_length"] == pytest.approx((5 + 3) / 2)
    assert "coherence" not in results and "mauve" not in results


def test_open_ended_simctg_compat_pools_counts_and_drops_the_last_ngram() -> None:
    results = load_metric("open_ended_quality").compute(
        predictions=["a b a b a", "x y z"], simctg_compat=True
    )
    # SimCTG counts len - n n-grams per text and pools them:
    # bigrams: ab ba ab (2 unique / 3) + xy (1/1) -> rep-2 = 100 * (1 - 3/4) = 25.
    # trigrams: aba bab (2/2) + none -> rep-3 = 0; 4-grams: abab (1/1) -> rep-4 = 0.
    assert results["rep-2"] == pytest.approx(25.0)
    assert results["rep-3"] == pytest.approx(0.0)
    assert results["rep-4"] == pytest.approx(0.0)
    assert results["diversity"] == pytest.approx(0.75)


def test_open_ended_coherence_with_a_fake_embedder() -> None:
    results = load_metric("open_ended_quality").compute(
        predictions=["red apple", "red car", "blue"],
        prefixes=["red apple", "red apple", "red"],
        embedder=bag_of_words_embedder,
    )
    # cos([red, apple], [red, apple]) = 1; cos([red, apple], [red, car]) = 1 / (sqrt2 * sqrt2) = 0.5;
    # cos([red], [blue]) = 0 -> mean 0.5.
    assert results["coherence"] == pytest.approx(0.5)


def test_open_ended_mauve_with_a_fake_embedder() -> None:
    metric = load_metric("open_ended_quality")
    fruit_texts = [" ".join(pair) for pair in itertools.combinations(FRUITS, 2)]  # 10 texts
    vehicle_texts = [" ".join(pair) for pair in itertools.combinations(VEHICLES, 2)]  # 10 texts

    same = metric.compute(
        predictions=fruit_texts, human_continuations=fruit_texts, embedder=bag_of_words_embedder
    )
    # Identical feature sets give identical histograms P = Q, every KL on the divergence curve is 0, so the
    # curve is the point (1, 1) and its area is 1.
    assert same["mauve"] == pytest.approx(1.0)

    disjoint = metric.compute(
        predictions=vehicle_texts, human_continuations=fruit_texts, embedder=bag_of_words_embedder
    )
    # Disjoint vocabularies -> the 2 k-means buckets (max(2, round(10/10))) separate
    # P = (1, 0) and Q = (0, 1).
    # With R = l P + (1 - l) Q: KL(P|R) = -log l, KL(Q|R) = -log(1 - l), so the curve is
    # (exp(-5 KL(Q|R)), exp(-5 KL(P|R))) = ((1 - l)^5, l^5), whose area is int_0^1 l^5 * 5 (1 - l)^4 dl
    # = 5 B(6, 5) = 1/252 = 0.00397. mauve-text uses 25 values of l and the trapezoid rule: 0.00407.
    assert disjoint["mauve"] == pytest.approx(1 / 252, abs=2e-4)


# ------------------------------------------------------------------------------------------------ rouge_bleu


def test_rouge_bleu_hand_computed() -> None:
    results = load_metric("rouge_bleu").compute(
        predictions=["a b c d e x", "the cat sat on the mat"],
        references=[["a b c d e f"], ["the cat is on the mat", "a dog"]],
    )
    # Item 1: precisions 5/6, 4/5, 3/4, 2/3, equal lengths (BP 1): BLEU = 100 * (1/3)^(1/4) = 75.984;
    #         LCS 5 of 6 tokens each way -> ROUGE-L F 83.33; unigrams 5/6 -> 83.33; bigrams 4/5 -> 80.
    # Item 2 (best reference "the cat is on the mat"): precisions 5/6, 3/5, 1/4 and 0/3 4-grams, smoothed
    #         to 1 / (2 * 3): BLEU = 100 * (5/6 * 3/5 * 1/4 * 1/6)^(1/4) = 100 * (1/48)^(1/4) = 37.992;
    #         LCS "the cat on the mat" = 5 -> 83.33; unigrams 5/6 -> 83.33; bigrams the-cat, on-the, the-mat
    #         3/5 -> 60.
    bleu_item_1 = 100 * (1 / 3) ** 0.25
    bleu_item_2 = 100 * (1 / 48) ** 0.25
    assert results["bleu"] == pytest.approx((bleu_item_1 + bleu_item_2) / 2)
    assert results["rougeL"] == pytest.approx(250 / 3)
    assert results["rougeLsum"] == pytest.approx(250 / 3)
    assert results["rouge1"] == pytest.approx(250 / 3)
    assert results["rouge2"] == pytest.approx((80 + 60) / 2)


def test_rouge_bleu_truthfulqa_differences() -> None:
    results = load_metric("rouge_bleu").compute(
        predictions=["the cat sat on the mat", "a b c d e x"],
        references=[["the cat is on the mat"], ["a b c d e f"]],
        incorrect_references=[["the cat sat on the mat"], ["q r s t"]],
    )
    # Item 1: correct BLEU 37.992 / ROUGE-L 83.33 vs incorrect (identical text) 100 / 100 -> both lose.
    # Item 2: correct BLEU 75.984 / ROUGE-L 83.33 vs incorrect: no shared token, BLEU 0 (sacrebleu returns 0
    #         without any n-gram match) and ROUGE-L 0 -> both win.
    bleu_differences = [100 * (1 / 48) ** 0.25 - 100, 100 * (1 / 3) ** 0.25 - 0]
    assert results["bleu_diff"] == pytest.approx(sum(bleu_differences) / 2)
    assert results["bleu_acc"] == pytest.approx(0.5)
    assert results["rougeL_diff"] == pytest.approx((250 / 3 - 100 + 250 / 3) / 2)
    assert results["rougeL_acc"] == pytest.approx(0.5)
    assert results["bleu"] == pytest.approx((100 * (1 / 48) ** 0.25 + 100 * (1 / 3) ** 0.25) / 2)


def test_summary_support_by_hand_and_equal_to_the_cnndm_task() -> None:
    from contrastive_decoding.benchmarks.tasks import get_task
    from contrastive_decoding.benchmarks.tasks.base import ItemOutput

    metric = load_metric("summary_support")
    article = "The cat sat on the mat. It was a sunny day."
    result = metric.compute(
        predictions=["The cat sat on the mat.", "A dog ran home."],
        references=["The cat sat on the mat.", "The cat sat."],
        articles=[article, article],
    )
    # bigrams of "a dog ran home": a dog, dog ran, ran home -> none in the article; first summary: 5 of 5
    assert result["supported_bigrams"] == pytest.approx((100.0 + 0.0) / 2)
    assert result["rougeL"] == pytest.approx((100.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="one source article per prediction"):
        metric.compute(predictions=["x"], references=["y"], articles=[])
    task = get_task("cnndm")
    task.embedder = bag_of_words_embedder_unit
    items = task.load(Path(__file__).resolve().parents[3] / "shared" / "data")[:2]
    texts = [" Boston Marathon bombing trial ends. The jury decides.", " A summary of nothing"]
    rows = [task.score(item, ItemOutput(text=text)) for item, text in zip(items, texts, strict=True)]
    expected = metric.compute(
        predictions=[t.strip() for t in texts],
        references=[item.references[0] for item in items],
        articles=[item.meta["article"] for item in items],
        embedder=bag_of_words_embedder_unit,
    )
    aggregated = task.aggregate(rows)
    for key in ("rougeL", "supported_bigrams", "minilm_support"):
        assert aggregated[key] == pytest.approx(expected[key])


def bag_of_words_embedder_unit(texts: list[str]) -> np.ndarray:
    vectors = bag_of_words_embedder(texts) + 1e-3
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
