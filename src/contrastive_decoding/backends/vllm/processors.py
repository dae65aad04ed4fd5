"""V1 logits processors for the vLLM backend.

``ContrastiveLogitsProcessor`` validates each request's method at admission (a ``ValueError`` there is an HTTP
400 on the server) and fills the engine's row table (:mod:`.rows`: which batch row asks for which method, and
the per-step order in which vLLM calls the processor and the model). The model
wrappers (:mod:`.models`) read that table in ``compute_logits`` and write the method's scores into those rows
only, so rows that ask for nothing get the plain logits and pay nothing. vLLM then runs penalties (e.g.
DoLa's advised ``repetition_penalty``), temperature and its samplers on those scores, as the Hugging Face
backend runs the user's processors on them.

Paired methods (CAD / AdaCAD): the pair-aware scheduler (:mod:`.scheduler`) runs the prompt without its context as
a twin request in the same batch. ``ContrastiveLogitsProcessor`` finds both rows of each pair, computes the
method's scores from the two rows' logits with ``contrastive_decoding.decoding.context`` (the Hugging Face
backend's math), picks the token itself with ``contrastive_decoding.samplers.select_tokens`` (the Hugging Face
loop's function: argmax, or a draw with the request's temperature / top-k / top-p / min-p / typical / top-nσ /
epsilon / eta, in the Hugging Face backend's order, and seed) and leaves
that one token finite in both rows ("one-hot forcing"), so vLLM's sampler, which runs after, returns it for both
and the twin stays on the main request's tokens. A seeded row's draw at output position t is keyed on
(seed, t) (``contrastive_decoding.samplers.seeding``), so it draws the same token whatever batch it is in, and
the same token as the Hugging Face backend for the same scores.

Per step, nothing here syncs with the host: requests are validated (and their ``SamplingConfig`` built) once,
when they are added; row indices go to the device with non-blocking copies (from pinned memory when the engine
pins); warpers run in their unchecked form.

``SamplingFiltersLogitsProcessor`` adds the sampling filters vLLM's ``SamplingParams`` lacks, for the rows vLLM
samples itself (plain, and the model-wrapper methods DoLa / expert-amateur): top-nσ, locally typical, epsilon
and eta (``extra_args={"top_n_sigma": 1.0, "typical_p": 0.9, "epsilon_cutoff": 3e-4, "eta_cutoff": 3e-4}``),
with the same functions as the Hugging Face backend. It is argmax-invariant, so vLLM applies it to sampled rows
only, after temperature and its own ``min_p`` (a built-in processor, listed before custom ones) and before its
top-k / top-p. That is vLLM's public plug point, and it fixes the order for these rows: temperature -> min_p ->
top-nσ -> typical -> epsilon -> eta -> top-k -> top-p, where the Hugging Face backend (and the pair processor)
applies temperature -> top-nσ -> top-k -> top-p -> min-p -> typical -> epsilon -> eta. One filter alone gives the
same set either way; combined, the order differs (and top-nσ after min_p takes its σ over min_p's survivors).
Paired rows are skipped: the pair processor applied their filters when it chose their token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from ...decoding import registry
from ...samplers.config import SamplingConfig
from ...samplers.select import select_tokens
from ...samplers.warpers import (
    apply_epsilon_unchecked,
    apply_eta_unchecked,
    apply_top_n_sigma_unchecked,
    apply_typical_unchecked,
)
from .requests import (
    PAIR_KEY,
    PAIR_METHODS,
    MethodRequest,
    SamplingFilters,
    pair_sampling_config,
    parse_extra_args,
)
from .rows import engine_row_table


def _method_entry(params: SamplingParams, _prompt_ids, _output_ids) -> MethodRequest | None:
    request, _ = parse_extra_args(params.extra_args)
    return None if request.method == registry.PLAIN or request.pair_id is not None else request


@dataclass
class PairRow:
    """One row of a paired request: its method, sampling (validated when the request was added) and live output
    tokens."""

    request: MethodRequest
    sampling: SamplingConfig
    output_ids: list[int]


def sampling_config(params: SamplingParams, filters: SamplingFilters) -> SamplingConfig:
    """A paired row's ``SamplingConfig`` from its ``SamplingParams`` (vLLM's temperature / top-k / top-p / min-p /
    seed) and its ``extra_args`` filters (validated: raises ``ValueError``)."""
    return pair_sampling_config(
        params.temperature, params.top_k, params.top_p, filters, params.seed, params.min_p
    )


def _pair_entry(params: SamplingParams, _prompt_ids, output_ids: list[int]) -> PairRow | None:
    if not params.extra_args or PAIR_KEY not in params.extra_args:
        return None
    request, filters = parse_extra_args(params.extra_args)
    return PairRow(request, sampling_config(params, filters), output_ids)


def device_rows(rows: list[int], device: torch.device, pin_memory: bool = False) -> torch.Tensor:
    """Row indices as a LongTensor on ``device``, copied without waiting for the device."""
    host = torch.tensor(rows, dtype=torch.long, pin_memory=pin_memory and device.type != "cpu")
    return host.to(device, non_blocking=True)


def choose_pair_tokens(
    main_logits: torch.Tensor,  # [P, V] logits given context + input
    twin_logits: torch.Tensor,  # [P, V] logits given the input alone
    rows: list[PairRow],  # the main rows, P of them
    pin_memory: bool = False,
) -> torch.Tensor:  # [P] token ids
    """The token each pair decodes: the method's scores, then ``select_tokens`` with each row's sampling and
    output position (argmax, or a draw; seeded rows keyed on (seed, position))."""
    groups: dict[tuple, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault((row.request.method, row.request.config), []).append(position)
    if len(groups) == 1:  # one method and config for every pair: no gather
        ((method, config),) = groups
        scores = _pair_scores(method, config, main_logits, twin_logits)  # [P, V]
    else:
        scores = torch.empty(main_logits.shape, dtype=torch.float32, device=main_logits.device)  # [P, V]
        for (method, config), positions in groups.items():
            index = device_rows(positions, main_logits.device, pin_memory)
            scores[index] = _pair_scores(method, config, main_logits[index], twin_logits[index])
    return select_tokens(
        scores, [row.sampling for row in rows], positions=[len(row.output_ids) for row in rows]
    )


def _pair_scores(method: str, config, main_logits: torch.Tensor, twin_logits: torch.Tensor) -> torch.Tensor:
    """The method's scores of paired rows [R, V]: the function its ``MethodSpec.vllm.pair_scores`` names (the
    Hugging Face backend's math)."""
    pair_scores = registry.load(registry.get_spec(method).vllm.pair_scores)
    return pair_scores(main_logits, twin_logits, config).float()  # [R, V]


def force_tokens(logits: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> None:
    """Leave one finite logit (0) per row: ``tokens[i]`` in row ``rows[i]`` of ``logits`` [R, V]."""
    logits[rows] = -float("inf")
    logits[rows, tokens] = 0.0


def check_pair_params(method: str, params: SamplingParams) -> None:
    """Refuse what a paired method cannot honour: the pair's token is chosen before vLLM's penalties run, and a
    grammar could forbid it. (``min_p``, like the other sampling filters, is applied by the pair processor itself,
    inside its token choice.)"""
    for name, off in (("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
        if getattr(params, name) != off:
            raise ValueError(
                f"{name} is not supported with {method!r} on the vLLM backend (leave it at {off})"
            )
    if params.min_tokens:
        raise ValueError(f"min_tokens is not supported with {method!r} on the vLLM backend")
    if getattr(params, "structured_outputs", None) is not None:
        raise ValueError(f"structured outputs are not supported with {method!r}")
    if params.logit_bias or getattr(params, "allowed_token_ids", None) or params.bad_words:
        raise ValueError(f"logit_bias / allowed_token_ids / bad_words are not supported with {method!r}")


class ContrastiveLogitsProcessor(LogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        if sampling_params.extra_args and PAIR_KEY in sampling_params.extra_args:
            raise ValueError(f"{PAIR_KEY!r} is set by the scheduler, not by requests")
        request, filters = parse_extra_args(sampling_params.extra_args)
        if request.method in PAIR_METHODS:
            check_pair_params(request.method, sampling_params)
            sampling_config(sampling_params, filters)  # the pair processor's sampling, checked once here
        if request.method != registry.PLAIN:
            if sampling_params.prompt_logprobs is not None:
                raise ValueError(f"prompt_logprobs is not supported with method {request.method!r}")
            if sampling_params.n > 1 and sampling_params.temperature == 0:
                raise ValueError("n > 1 needs sampling (temperature > 0)")

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.table = engine_row_table(
            vllm_config
        )  # shared with the model wrapper; see .rows for the protocol
        self.pairs: dict[int, PairRow] = {}
        self.pin_memory = is_pin_memory

    def is_argmax_invariant(self) -> bool:
        return False  # method scores change the argmax; vLLM runs this before penalties, on every row

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        batch_size = batch_update.batch_size if batch_update is not None else self.table.batch_size
        process_dict_updates(self.table.rows, batch_update, _method_entry)
        process_dict_updates(self.pairs, batch_update, _pair_entry)
        self.table.open_step(batch_size)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.table.close_step():
            raise RuntimeError(
                "contrastive-decoding: requests ask for a method but the model is not a contrastive-decoding "
                "wrapper (start the engine with contrastive_decoding.vllm.LLM or its hf_overrides)"
            )
        if self.pairs:
            self._apply_pairs(logits)
        return logits  # the model wrapper already wrote its method rows

    def _apply_pairs(self, logits: torch.Tensor) -> None:
        """Decide every complete pair's token and force it in both rows. A pair whose twin is missing or out of
        step is left alone: the scheduler has seen the split too and fails that request rather than keep a
        token decoded without its contrast."""
        members: dict[str, dict[str, int]] = {}
        for row, entry in self.pairs.items():
            members.setdefault(entry.request.pair_id, {})[entry.request.pair_role] = row
        main_rows, twin_rows = [], []
        for pair in members.values():
            main, twin = pair.get("main"), pair.get("twin")
            if main is None or twin is None:
                continue
            if len(self.pairs[main].output_ids) != len(self.pairs[twin].output_ids):
                continue
            main_rows.append(main)
            twin_rows.append(twin)
        if not main_rows:
            return
        main_index = device_rows(main_rows, logits.device, self.pin_memory)
        twin_index = device_rows(twin_rows, logits.device, self.pin_memory)
        tokens = choose_pair_tokens(
            logits[main_index], logits[twin_index], [self.pairs[row] for row in main_rows], self.pin_memory
        )  # [P]
        force_tokens(logits, main_index, tokens)
        force_tokens(logits, twin_index, tokens)


def _filter_entry(params: SamplingParams, _prompt_ids, _output_ids) -> SamplingFilters | None:
    if params.extra_args and PAIR_KEY in params.extra_args:
        return None  # the pair processor applied this request's filters when it chose the token
    _, filters = parse_extra_args(params.extra_args)
    return filters if filters.active else None


# Each filter with its function and off value, in the order they run.
_FILTERS = (
    ("top_n_sigma", apply_top_n_sigma_unchecked, 0.0),
    ("typical_p", apply_typical_unchecked, 1.0),
    ("epsilon_cutoff", apply_epsilon_unchecked, 0.0),
    ("eta_cutoff", apply_eta_unchecked, 0.0),
)


class SamplingFiltersLogitsProcessor(LogitsProcessor):
    """top-nσ -> typical -> epsilon -> eta on the rows that ask for them (see the module docstring for where
    vLLM runs it). Per-row parameters live in [B] float64 device tensors, rebuilt when the batch changes; rows that
    ask for nothing hold the off value, which leaves them bit-identical."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        parse_extra_args(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.filters: dict[int, SamplingFilters] = {}
        self.device = device
        self.pin_memory = is_pin_memory
        self.params: list[tuple] | None = None  # (function, [B] tensor) per filter some row uses
        self._rows = 0  # the batch size self.params were built for

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            self.params = None
        process_dict_updates(self.filters, batch_update, _filter_entry)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.filters:
            return logits
        if self.params is None or self._rows != logits.shape[0]:
            self.params = self._build(logits)
        for function, values in self.params:
            logits = function(logits, values)  # validated at admission (parse_extra_args)
        return logits

    def _build(self, logits: torch.Tensor) -> list[tuple]:
        self._rows = logits.shape[0]
        built = []
        for name, function, off in _FILTERS:
            if all(getattr(entry, name) == off for entry in self.filters.values()):
                continue
            values = torch.full(
                (logits.shape[0],), off, dtype=torch.float64
            )  # [B]; off leaves a row untouched
            for row, entry in self.filters.items():
                values[row] = getattr(entry, name)
            if self.pin_memory and logits.device.type != "cpu":
                values = values.pin_memory()
            built.append((function, values.to(logits.device, non_blocking=True)))
        return built


TypicalLogitsProcessor = SamplingFiltersLogitsProcessor  # its former name (it applied typical_p only)
