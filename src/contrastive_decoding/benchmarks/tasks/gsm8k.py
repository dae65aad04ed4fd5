"""Chain-of-thought reasoning: GSM8K (Cobbe et al., 2021) and StrategyQA (Geva et al., TACL 2021).

Prompts: the few-shot chain-of-thought exemplars of Wei et al., "Chain-of-Thought Prompting Elicits Reasoning
in Large Language Models" (NeurIPS 2022), as DoLa writes them (``create_demo_text`` / ``build_prompt`` in
``gsm8k_eval.py`` and ``strqa_eval.py`` of github.com/voidism/DoLa), in order, unshuffled::

    Q: {exemplar question}
    A: {chain of thought} The answer is {answer}.      (StrategyQA: "So the answer is yes.")

    ... (8 exemplars for GSM8K, 6 for StrategyQA)

    Q: {question}
    A:

Scoring cuts the generation at the first ``"Q:"`` (DoLa's stop word: the model starting the next question).
"""

from __future__ import annotations

from pathlib import Path

from . import register
from ._common import cut_at, generated_text, read_json_list, read_jsonl, require_text, task_data_file
from .base import Item, ItemOutput, Task

STOP_SEQUENCES: tuple[str, ...] = ("Q:",)

# (question, chain of thought, answer): Wei et al. (2022)'s GSM8K exemplars, as in DoLa's gsm8k_eval.py.
GSM8K_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
        "done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must "
        "have been 21 - 15 = 6.",
        "6",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
        "5",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in "
        "total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
        "eating 35, they had 74 - 35 = 39.",
        "39",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops "
        "did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
        "20 - 12 = 8.",
        "8",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he "
        "have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9.",
        "9",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from "
        "monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
        "computers were added. 9 + 20 is 29.",
        "29",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many "
        "golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 "
        "more, he had 35 - 2 = 33 golf balls.",
        "33",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 "
        "dollars left. 23 - 15 is 8.",
        "8",
    ),
)
GSM8K_TRIGGER = "The answer is"

# Wei et al. (2022)'s StrategyQA exemplars, as in DoLa's strqa_eval.py.
STRATEGYQA_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    (
        "Do hamsters provide food for any animals?",
        "Hamsters are prey animals. Prey are food for predators. Thus, hamsters provide food for some animals.",
        "yes",
    ),
    (
        "Could Brooke Shields succeed at University of Pennsylvania?",
        "Brooke Shields went to Princeton University. Princeton University is about as academically rigorous "
        "as the University of Pennsylvania. Thus, Brooke Shields could also succeed at the University of "
        "Pennsylvania.",
        "yes",
    ),
    (
        "Yes or no: Hydrogen's atomic number squared exceeds number of Spice Girls?",
        "Hydrogen has an atomic number of 1. 1 squared is 1. There are 5 Spice Girls. Thus, Hydrogen's atomic "
        "number squared is less than 5.",
        "no",
    ),
    (
        "Yes or no: Is it common to see frost during some college commencements?",
        "College commencement ceremonies can happen in December, May, and June. December is in the winter, so "
        "there can be frost. Thus, there could be frost at some commencements.",
        "yes",
    ),
    (
        "Yes or no: Could a llama birth twice during War in Vietnam (1945-46)?",
        "The War in Vietnam was 6 months. The gestation period for a llama is 11 months, which is more than 6 "
        "months. Thus, a llama could not give birth twice during the War in Vietnam.",
        "no",
    ),
    (
        "Yes or no: Would a pear sink in water?",
        "The density of a pear is about 0.6 g/cm^3, which is less than water. Objects less dense than water "
        "float. Thus, a pear would float.",
        "no",
    ),
)
STRATEGYQA_TRIGGER = "So the answer is"


def few_shot_prompt(exemplars: tuple[tuple[str, str, str], ...], trigger: str, question: str) -> str:
    """DoLa's chain-of-thought prompt: the exemplars, then ``"Q: {question}\\nA:"``."""
    demo = "".join(f"Q: {q}\nA: {chain} {trigger} {answer}.\n\n" for q, chain, answer in exemplars)
    return f"{demo}Q: {question}\nA:"


@register
class GSM8K(Task):
    """GSM8K test (1319 problems), 8-shot chain of thought; accuracy of the extracted final number.

    References hold the gold number (the text after ``####``), ``meta["solution"]`` the worked solution.
    Scoring: ``gsm8k_accuracy``'s extraction (first number after "the answer is", else the last number) on
    the generation cut at "Q:"; ``invalid_rate`` = 1 when no number could be extracted.
    """

    name = "gsm8k"
    description = "GSM8K test, 8-shot chain of thought (Wei et al.), final-number accuracy"
    data_files = ("gsm8k/test.jsonl",)
    kind = "generate"
    max_new_tokens = 256  # DoLa's gsm8k_eval.py default
    stop_sequences = STOP_SEQUENCES

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(self, data_dir, 'GSM8K JSON Lines {"question", "answer"}')
        items = []
        for index, (line_number, row) in enumerate(read_jsonl(path)):
            where = f"{path}:{line_number}"
            question = require_text(row.get("question"), where, "question")
            solution = require_text(row.get("answer"), where, "answer")
            if "####" not in solution or not solution.rsplit("####", 1)[1].strip():
                raise ValueError(
                    f"{where}: the answer must end with '#### <number>', got {solution[-60:]!r}."
                )
            items.append(
                Item(
                    id=str(index),
                    kind="generate",
                    context=few_shot_prompt(GSM8K_EXEMPLARS, GSM8K_TRIGGER, question),
                    references=(solution.rsplit("####", 1)[1].strip(),),
                    meta={"question": question, "solution": solution},
                )
            )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        import math

        from ..metrics.gsm8k_accuracy.gsm8k_accuracy import extract_gold_number, extract_predicted_number

        predicted = extract_predicted_number(cut_at(generated_text(item, output), STOP_SEQUENCES))
        gold = extract_gold_number(item.references[0])
        correct = predicted is not None and math.isclose(predicted, gold, rel_tol=0.0, abs_tol=1e-6)
        return {"accuracy": float(correct), "invalid_rate": float(predicted is None)}


def strategyqa_answer(generation: str) -> tuple[str, bool]:
    """(yes/no answer, whether it was read from "answer is ...") for a StrategyQA generation.

    DoLa's ``clean_answer`` with its default single try (``random_guess=True``): lowercase; if "answer is"
    occurs, the answer is the text after its first occurrence up to the next period, stripped; otherwise
    "no" if the substring "no" occurs anywhere, else "yes"; an answer other than yes/no becomes "no". The
    second element is False when one of these fallbacks was used (counted in ``invalid_rate``).
    """
    text = cut_at(generation, STOP_SEQUENCES).lower()
    if "answer is" not in text:
        return ("no" if "no" in text else "yes"), False
    answer = text.split("answer is", 1)[1].split(".")[0].strip()
    if answer not in ("yes", "no"):
        return "no", False
    return answer, True


@register
class StrategyQA(Task):
    """StrategyQA train split (2290 questions; DoLa evaluates on it), 6-shot chain of thought, yes/no accuracy.

    The data is not shipped: ``strategyqa_train.json`` comes from the StrategyQA release
    (storage.googleapis.com/ai2i/strategyqa/data/strategyqa_dataset.zip, github.com/eladsegal/strategyqa).
    """

    name = "strategyqa"
    description = "StrategyQA, 6-shot chain of thought (Wei et al.), yes/no accuracy (data not shipped)"
    data_files = ("strategyqa/strategyqa_train.json",)
    kind = "generate"
    max_new_tokens = 256  # DoLa's strqa_eval.py default
    stop_sequences = STOP_SEQUENCES

    def load(self, data_dir: Path) -> list[Item]:
        path = task_data_file(
            self,
            data_dir,
            "the StrategyQA training set: a JSON list of {qid, question, answer (true/false), ...}",
            hint=(
                "It is not shipped with the benchmark data: download strategyqa_dataset.zip from "
                "https://storage.googleapis.com/ai2i/strategyqa/data/strategyqa_dataset.zip and put its "
                "strategyqa_train.json there."
            ),
        )
        items = []
        seen: set[str] = set()
        for index, where, record in read_json_list(path):
            question = require_text(record.get("question"), where, "question")
            answer = record.get("answer")
            if not isinstance(answer, bool):
                raise ValueError(f"{where}: answer must be true or false, got {answer!r}.")
            qid = record.get("qid")
            item_id = qid if isinstance(qid, str) and qid else str(index)
            if item_id in seen:
                raise ValueError(f"{where}: duplicate qid {item_id!r}.")
            seen.add(item_id)
            items.append(
                Item(
                    id=item_id,
                    kind="generate",
                    context=few_shot_prompt(STRATEGYQA_EXEMPLARS, STRATEGYQA_TRIGGER, question),
                    references=("yes" if answer else "no",),
                    meta={"question": question},
                )
            )
        return items

    def score(self, item: Item, output: ItemOutput) -> dict[str, float]:
        answer, valid = strategyqa_answer(generated_text(item, output))
        return {"accuracy": float(answer == item.references[0]), "invalid_rate": float(not valid)}
