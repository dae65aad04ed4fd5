"""``custom_generate`` callables for ``model.generate``:

    model.generate(**inputs, custom_generate=contrastive_decoding.hf.dola, dola_layers="high",
                   repetition_penalty=1.2, max_new_tokens=64)

transformers prepares the inputs, logits processors (repetition penalty, sampling warpers, ...), stopping
criteria and generation config as for any decoding mode, then calls the function with them; the extra
keyword arguments named in each signature (``dola_layers``, ``penalty_alpha``, ...) are passed through.

As with transformers' own ``generate``, a parameter transformers knows by name (``penalty_alpha``, ``top_k``,
``dola_layers``) comes from the explicit keyword argument, else from the ``generation_config`` passed to
``generate``, else from the model's generation config (``generation_config.json``), else our default. Every
model input generate hands over (``token_type_ids``, ...) reaches the model, and ``return_dict_in_generate``
outputs carry hidden states, attentions and the cache as transformers' do.

``seed`` (every sampled method): None draws from the global torch RNG, as transformers does; an int (every
prompt) or one int per prompt keys each row's draws on (seed, output position), so a row samples the same
tokens alone and in any batch (:mod:`contrastive_decoding.samplers.seeding`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from ...decoding import context as context_math
from ...decoding import contrastive_search as cs_math
from ...decoding import dola as dola_math
from ...decoding import expert_amateur as ea_math
from ...decoding import sled as sled_math
from ...samplers.seeding import SeedArg
from ...vocabulary import check_same_tokenizer as check_same_tokenizer  # re-exported for cli serve
from ...vocabulary import check_same_vocabulary, checkpoint_tokenizer
from .inputs import Variant, prompt_inputs
from .loop import LoopControls, generate_streamer, run_decode_loop
from .runner import PromptInputs
from .steppers import (
    ContextPairStepper,
    ContrastiveSearchStepper,
    DolaStepper,
    ExpertAmateurStepper,
    PlainStepper,
    SledStepper,
)

GenerateResult = torch.Tensor | GenerateDecoderOnlyOutput


def _prepare(
    model: PreTrainedModel,
    method: str,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriteriaList | None,
    generation_config: GenerationConfig | None,
    model_kwargs: dict[str, Any],
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
) -> tuple[LoopControls, PromptInputs]:
    """Validate what a method cannot handle and return the loop controls and the prompt's model inputs."""
    if model.config.is_encoder_decoder:
        raise ValueError(
            f"{method} supports decoder-only models; {type(model).__name__} is an encoder-decoder"
        )
    generation_config = generation_config if generation_config is not None else model.generation_config
    if (generation_config.num_beams or 1) > 1:
        raise ValueError(f"{method} does not support beam search (num_beams={generation_config.num_beams})")
    for key in ("inputs_embeds", "pixel_values"):
        if model_kwargs.get(key) is not None:
            raise ValueError(f"{method} takes input_ids; {key} is not supported by this method")
    controls = LoopControls.from_generate(
        logits_processor, stopping_criteria, generation_config, generate_streamer(), seed, top_n_sigma
    )
    return controls, prompt_inputs(method, input_ids, model_kwargs)


def generation_parameter(
    name: str, explicit: Any, generation_config: GenerationConfig | None, default: Any
) -> Any:
    """A method parameter transformers knows by name, with transformers' precedence: the explicit keyword
    argument, else the value the generation config sets (generate has already merged the ``generation_config``
    passed to it over the model's ``generation_config.json``), else ``default``.

    Only values somebody set count: transformers fills unset fields with its own global defaults (``top_k=50``),
    which are not a choice of the user or the checkpoint, so a value equal to that default is ours to pick.
    """
    if explicit is not None:
        return explicit
    value = getattr(generation_config, name, None) if generation_config is not None else None
    if value is None or value == GenerationConfig._get_default_generation_params().get(name):
        return default
    return value


def _expand_rows(tensor: torch.Tensor | None, batch_size: int, name: str) -> torch.Tensor | None:
    """Repeat per-prompt inputs when generate expanded the prompts (num_return_sequences > 1)."""
    if tensor is None or tensor.shape[0] == batch_size:
        return tensor
    if batch_size % tensor.shape[0]:
        raise ValueError(f"{name} has {tensor.shape[0]} rows but the prompt batch has {batch_size}")
    return tensor.repeat_interleave(batch_size // tensor.shape[0], dim=0)


def greedy(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """Plain decoding through our loop (greedy, or sampled with ``do_sample=True``, ``seed``): the baseline."""
    controls, prompt = _prepare(
        model,
        "greedy",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    stepper = PlainStepper(model, prompt, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def contrastive_search(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    penalty_alpha: float | None = None,
    top_k: int | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """Contrastive search (Su & Collier): ``penalty_alpha`` in [0, 1] (default 0.6), ``top_k`` candidates per
    step (default 4); both also read from the generation config, as transformers 4.55 did.

    ``do_sample=True`` is refused (contrastive search is deterministic); ``low_memory`` has no effect: the K
    candidates already share one cache through tree attention, without 4.55's K copies of it."""
    config = generation_config if generation_config is not None else model.generation_config
    cfg = cs_math.ContrastiveSearchConfig(
        penalty_alpha=generation_parameter(
            "penalty_alpha", penalty_alpha, config, cs_math.ContrastiveSearchConfig.penalty_alpha
        ),
        top_k=generation_parameter("top_k", top_k, config, cs_math.ContrastiveSearchConfig.top_k),
    )
    controls, prompt = _prepare(
        model,
        "contrastive_search",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
    )
    if controls.generation_config.do_sample:
        raise ValueError(
            "contrastive_search is deterministic (it re-ranks the top_k candidates); do_sample=True is not "
            "supported. Use another method with do_sample=True, or plain typical / top-p sampling."
        )
    windows = [layer.sliding_window for layer in _cache_layers(model) if layer.is_sliding]
    longest = (controls.generation_config.max_length or 0) + cfg.top_k
    if windows and longest >= min(windows):
        raise ValueError(
            f"contrastive_search on sliding-window attention ({type(model).__name__}, window {min(windows)}) "
            f"needs prompt + max_new_tokens + top_k below the window, got {longest}: its candidates share the "
            "cache through tree attention, which a sliding-window cache cannot evict."
        )
    stepper = ContrastiveSearchStepper(model, prompt, cfg, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def dola(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    dola_layers: str | list[int] | None = None,
    relative_top: float = 0.1,
    layer_choice: str = "dola",
    early_exit_norm: bool = False,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """DoLa: ``dola_layers`` "low" | "high" (default) | list of layer indices, also read from the generation
    config as transformers 4.55 did; add ``repetition_penalty=1.2`` as advised."""
    config = generation_config if generation_config is not None else model.generation_config
    cfg = dola_math.DolaConfig(
        dola_layers=generation_parameter(
            "dola_layers", dola_layers, config, dola_math.DolaConfig.dola_layers
        ),
        relative_top=relative_top,
        layer_choice=layer_choice,
        early_exit_norm=early_exit_norm,
    )
    controls, prompt = _prepare(
        model,
        "dola",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    stepper = DolaStepper(model, prompt, cfg, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def sled(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    evolution_rate: float = 2.0,
    evolution_scale: int = 10,
    evolution_lower_bound: float = -1000.0,
    sled_layers: str | list[int] = "all",
    evolution_steps: int = 1,
    early_exit_norm: bool = False,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """SLED (Zhang et al., 2024): the final logits evolved toward a latent distribution estimated from the
    early layers (``sled_layers`` "all" (default) | "low" | "high" | list), over the final layer's top
    ``evolution_scale`` tokens; the rest score ``evolution_lower_bound``. SLED advises
    ``evolution_rate`` 0.5..3, ``evolution_scale`` 5..20 and ``repetition_penalty`` 1.01..1.05."""
    cfg = sled_math.SledConfig(
        evolution_rate=evolution_rate,
        evolution_scale=evolution_scale,
        evolution_lower_bound=evolution_lower_bound,
        sled_layers=sled_layers,
        evolution_steps=evolution_steps,
        early_exit_norm=early_exit_norm,
    )
    controls, prompt = _prepare(
        model,
        "sled",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    stepper = SledStepper(model, prompt, cfg, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def expert_amateur(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    amateur_model: PreTrainedModel | None = None,
    plausibility_alpha: float = 0.1,
    amateur_temperature: float = 1.0,
    contrast_beta: float | None = None,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """Expert-amateur contrastive decoding; ``model`` is the expert. ``contrast_beta=None`` gives Li et al.'s
    score, a float the O'Brien & Lewis form.

    The two tokenizers must be the same: they are compared token for token, taken from ``expert_tokenizer`` /
    ``amateur_tokenizer`` or, when not given, loaded from the models' local checkpoint directories.
    (transformers keeps a ``tokenizer=`` argument for itself, so it never reaches this function.)"""
    cfg = ea_math.ExpertAmateurConfig(
        plausibility_alpha=plausibility_alpha,
        amateur_temperature=amateur_temperature,
        contrast_beta=contrast_beta,
    )
    if amateur_model is None:
        raise ValueError("expert_amateur needs amateur_model=<a smaller model with the same tokenizer>")
    vocab_size = shared_vocabulary_size(model, amateur_model, expert_tokenizer, amateur_tokenizer)
    controls, prompt = _prepare(
        model,
        "expert_amateur",
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    stepper = ExpertAmateurStepper(model, amateur_model, prompt, cfg, vocab_size, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def cad(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    context_free_input_ids: torch.Tensor | None = None,
    context_free_attention_mask: torch.Tensor | None = None,
    context_free_token_type_ids: torch.Tensor | None = None,
    cad_alpha: float = 1.0,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """Context-aware decoding: ``input_ids`` hold context + question, ``context_free_input_ids`` the question
    alone (left-padded, same batch order); score = (1 + cad_alpha) l(y|c,x) - cad_alpha l(y|x).
    With ``token_type_ids``, give the context-free prompt's own as ``context_free_token_type_ids``."""
    cfg = context_math.CadConfig(cad_alpha=cad_alpha)
    free = _context_free(
        "cad", input_ids, context_free_input_ids, context_free_attention_mask, context_free_token_type_ids
    )
    return _context_pair(
        "cad",
        cfg,
        model,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        free,
        model_kwargs,
        seed,
        top_n_sigma,
    )


def adacad(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    context_free_input_ids: torch.Tensor | None = None,
    context_free_attention_mask: torch.Tensor | None = None,
    context_free_token_type_ids: torch.Tensor | None = None,
    adacad_threshold: float = 0.0,
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
    **model_kwargs: Any,
) -> GenerateResult:
    """AdaCAD: CAD whose weight is, per step and row, the Jensen-Shannon divergence between the two
    next-token distributions (0 below ``adacad_threshold``)."""
    cfg = context_math.AdaCadConfig(adacad_threshold=adacad_threshold)
    free = _context_free(
        "adacad", input_ids, context_free_input_ids, context_free_attention_mask, context_free_token_type_ids
    )
    return _context_pair(
        "adacad",
        cfg,
        model,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        free,
        model_kwargs,
        seed,
        top_n_sigma,
    )


def variant_rows(
    name: str,
    input_ids: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None = None,
) -> Variant:
    """A method's variant prompt (``<name>_input_ids`` / ``_attention_mask`` / ``_token_type_ids``) on the
    prompt's device, its rows repeated when generate repeated the prompts (``num_return_sequences``)."""
    batch, device = input_ids.shape[0], input_ids.device
    per_token = {}
    if token_type_ids is not None:
        per_token["token_type_ids"] = _expand_rows(token_type_ids.to(device), batch, f"{name}_token_type_ids")
    return Variant(
        name,
        _expand_rows(ids.to(device), batch, f"{name}_input_ids"),
        None if mask is None else _expand_rows(mask.to(device), batch, f"{name}_attention_mask"),
        per_token,
    )


def _context_free(method, input_ids, free_ids, free_mask, free_token_type_ids) -> Variant:
    if free_ids is None:
        raise ValueError(
            f"{method} needs context_free_input_ids (the prompt without its context, tokenized like input_ids)"
        )
    return variant_rows("context_free", input_ids, free_ids, free_mask, free_token_type_ids)


def _context_pair(
    method: str,
    cfg: Any,
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: StoppingCriteriaList | None,
    generation_config: GenerationConfig | None,
    free: Variant,
    model_kwargs: dict[str, Any],
    seed: SeedArg = None,
    top_n_sigma: float | None = None,
) -> GenerateResult:
    controls, prompt = _prepare(
        model,
        method,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        model_kwargs,
        seed,
        top_n_sigma,
    )
    pad_token_id = controls.generation_config.pad_token_id
    pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
    stepper = ContextPairStepper(model, prompt, free, cfg, pad_token_id, method, controls.outputs)
    return run_decode_loop(input_ids, stepper, controls, prompt.attention_mask)


def shared_vocabulary_size(
    expert: PreTrainedModel,
    amateur: PreTrainedModel,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
) -> int:
    """:func:`contrastive_decoding.vocabulary.check_same_vocabulary` on two transformers models: their LM-head
    sizes, and their tokenizers (given, or loaded from the models' local checkpoint directories)."""
    if expert_tokenizer is None:
        expert_tokenizer = checkpoint_tokenizer(getattr(expert.config, "_name_or_path", None))
    if amateur_tokenizer is None:
        amateur_tokenizer = checkpoint_tokenizer(getattr(amateur.config, "_name_or_path", None))
    return check_same_vocabulary(
        expert.get_output_embeddings().weight.shape[0],
        amateur.get_output_embeddings().weight.shape[0],
        expert_tokenizer,
        amateur_tokenizer,
    )


def _cache_layers(model: PreTrainedModel) -> list:
    from transformers import DynamicCache

    return list(DynamicCache(config=model.config).layers)
