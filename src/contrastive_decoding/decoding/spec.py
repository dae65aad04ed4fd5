"""What a method declares about itself: its :class:`MethodSpec`, plain data next to its math.

Each method file in ``decoding/`` ends with ``SPECS = (MethodSpec(...), ...)``; :mod:`.registry` collects them
and every list of methods (the CLI, the APIs, the vLLM backend, the server's methods endpoint, the benchmark
runner, the README table) is read from there. Backends name their code by dotted path, so nothing here imports
a backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Extra inputs a method needs beyond the prompt (``MethodSpec.needs`` / ``MethodSpec.accepts``).
CONTEXT_FREE_PROMPT = "context_free_prompt"  # the prompt without its context (CAD, AdaCAD)
CONDITIONS = "conditions"  # marked conditions of the prompt (condition contrast)
IMAGE = "image"  # one image per prompt, a vision-language model and its processor
AMATEUR = "amateur"  # a second, smaller model with the same tokenizer
INPUTS = (CONTEXT_FREE_PROMPT, CONDITIONS, IMAGE, AMATEUR)

# How the vLLM backend runs a method (``VllmSupport.runs``).
VLLM_PLAIN = "plain"  # vLLM's own sampling on the model's logits
VLLM_MODEL = "model"  # our model wrapper computes the scores (early exits, an amateur inside the forward)
VLLM_PAIR = "pair"  # a twin request scheduled with the main one; the logits processor combines the two rows
VLLM_NO = "no"  # not on the vLLM backend (yet): ``reason`` says why
VLLM_KINDS = (VLLM_PLAIN, VLLM_MODEL, VLLM_PAIR, VLLM_NO)


@dataclass(frozen=True)
class VllmSupport:
    """How the vLLM backend runs a method; ``reason`` says why not when ``runs == VLLM_NO``.

    ``pair_scores`` (pair methods): dotted path ``"module:function"`` of ``f(main_logits [P, V], twin_logits
    [P, V], config) -> scores [P, V]``, the same math the Hugging Face backend uses.
    """

    runs: str
    reason: str = ""
    pair_scores: str | None = None

    def __post_init__(self) -> None:
        if self.runs not in VLLM_KINDS:
            raise ValueError(f"VllmSupport.runs must be one of {VLLM_KINDS}, got {self.runs!r}")
        if self.runs == VLLM_NO and not self.reason:
            raise ValueError("VllmSupport(runs='no') needs a reason")
        if (self.runs == VLLM_PAIR) != (self.pair_scores is not None):
            raise ValueError("pair_scores is set exactly for pair methods")

    @property
    def served(self) -> bool:
        return self.runs != VLLM_NO


@dataclass(frozen=True)
class ScoringSupport:
    """Whether ``contrastive_decoding.score`` can score continuations under the method.

    ``choice_defaults``: parameters multiple-choice tasks use unless the user sets them (e.g. DoLa's raw
    contrast with no relative-top filter, as DoLa's TruthfulQA / FACTOR scripts score). ``reason``: why not.

    ``choice_scorer``: for methods that score a set of answer choices together (calibration against a
    content-free input), the dotted path ``"module:function"`` of that scorer; ``score`` refuses such a method
    with ``reason`` (it scores one continuation at a time) and choice tasks call the scorer instead.
    """

    scores: bool
    reason: str = ""
    choice_defaults: tuple[tuple[str, Any], ...] = ()
    choice_scorer: str | None = None

    def __post_init__(self) -> None:
        if not self.scores and not self.reason:
            raise ValueError("ScoringSupport(scores=False) needs a reason")
        if self.choice_scorer is not None and not (self.scores and self.reason):
            raise ValueError("ScoringSupport(choice_scorer=...) scores, with a reason why score() does not")

    @property
    def per_continuation(self) -> bool:
        """Whether ``contrastive_decoding.score`` scores continuations one at a time under the method."""
        return self.scores and self.choice_scorer is None


@dataclass(frozen=True)
class MethodSpec:
    """One decoding method, declared once.

    - ``name`` / ``aliases``: what users type (an alias resolves to ``name``).
    - ``config``: the frozen, validated parameter dataclass; its fields are the method's parameters.
    - ``contrasts`` / ``paper``: one line each for listings and the README table.
    - ``needs``: extra inputs the method requires (see ``INPUTS``); ``accepts``: ones it can take.
    - ``hf_function``: dotted path ``"module:function"`` of the ``custom_generate`` callable (None: transformers'
      own decoding, or nothing for a method that does not generate).
    - ``generates``: False for scoring-only methods (they score answer choices and define no next-token
      distribution to decode from): ``generate``, the CLI and the vLLM backend refuse them with ``vllm.reason``.
    - ``vllm``: how the vLLM backend runs it; ``scoring``: whether and how it scores continuations.
    - ``samples``: whether ``do_sample=True`` is allowed (contrastive search is a deterministic re-ranking).
    - ``needs_sampling``: whether ``do_sample=True`` is required (rerank ranks sampled candidates).
    - ``order``: position in listings.
    """

    name: str
    config: type
    contrasts: str
    paper: str
    hf_function: str | None
    vllm: VllmSupport
    scoring: ScoringSupport
    needs: frozenset[str] = frozenset()
    accepts: frozenset[str] = frozenset()
    samples: bool = True
    generates: bool = True
    needs_sampling: bool = False
    aliases: tuple[str, ...] = ()
    order: int = 100

    def __post_init__(self) -> None:
        for what in (*self.needs, *self.accepts):
            if what not in INPUTS:
                raise ValueError(f"{self.name}: unknown input {what!r}; inputs: {', '.join(INPUTS)}")
        if not self.generates and (
            self.hf_function is not None or self.vllm.served or self.scoring.choice_scorer is None
        ):
            raise ValueError(
                f"{self.name}: a scoring-only method (generates=False) has no hf_function, is not served on "
                "vLLM (its vllm.reason says why) and names its choice_scorer"
            )
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "accepts", frozenset(self.accepts))

    def takes(self, what: str) -> bool:
        """Whether the method needs or accepts the extra input ``what``."""
        return what in self.needs or what in self.accepts
