"""An lm-evaluation-harness model that decodes and scores with our methods: ``--model contrastive``.

    contrastive-decoding lm-eval run --model contrastive \\
        --model_args pretrained=smollm2-135m,method=dola,dola_layers=high --tasks truthfulqa_mc2 --limit 20

``contrastive-decoding lm-eval ARGS`` is lm-eval's own command line (``lm-eval ARGS``) with this model registered
and our local task folder (:data:`TASKS_DIR`) included. From Python, importing this module registers the model::

    import contrastive_decoding.benchmarks.lm_eval_adapter  # registers "contrastive"
    lm_eval.simple_evaluate(model="contrastive", model_args="pretrained=PATH,method=dola", tasks=[...])

``model_args``: ``pretrained`` (a ``models pull`` name or a checkpoint directory), ``method`` (default greedy),
``amateur`` (for expert_amateur), ``dtype``, ``device``, ``batch_size``, ``max_gen_toks``, ``normalize`` and
every parameter of the method (``dola_layers=high``, ``cad_alpha=0.5``, ...). Requests go through the library:
``loglikelihood`` through :func:`contrastive_decoding.score` (the teacher-forced log-likelihood under the method's
contrasted distribution; on these multiple-choice requests DoLa defaults to the DoLa scripts' scoring, raw
contrast with ``relative_top=0``, as ``bench run`` does), ``generate_until`` through
:func:`contrastive_decoding.generate_outputs` and ``loglikelihood_rolling`` through ``score`` from the BOS token.
CAD / AdaCAD need a context-free prompt per request, which lm-eval requests do not carry: they are refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

MODEL_NAME = "contrastive"
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
_OWN_ARGUMENTS = (
    "pretrained",
    "method",
    "amateur",
    "dtype",
    "device",
    "batch_size",
    "max_gen_toks",
    "normalize",
)


@register_model(MODEL_NAME)
class ContrastiveLM(LM):
    """lm-eval's ``LM`` interface over :func:`contrastive_decoding.score` and ``generate_outputs``."""

    def __init__(
        self,
        pretrained: str,
        method: str = "greedy",
        amateur: str | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        batch_size: int | str = 8,
        max_gen_toks: int = 256,
        normalize: bool | None = None,
        max_batch_size: int | None = None,  # lm-eval's CLI passes it; batches here are fixed
        **method_params: Any,
    ) -> None:
        super().__init__()
        import torch

        from ..api import split_parameters
        from ..decoding import (
            CONTEXT_FREE_METHODS,
            IMAGE_METHODS,
            SCORING_ONLY_METHODS,
            check_method,
            make_method_config,
        )
        from ..models import load_model_and_tokenizer

        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = (
                "cpu"  # lm-eval's command line defaults to cuda; as its own HF model, fall back to the CPU
            )
        check_method(method)
        if method in SCORING_ONLY_METHODS:
            raise ValueError(
                f"{method} calibrates a set of answer choices together, and lm-eval scores one request at a "
                "time; use `contrastive-decoding bench run` for it"
            )
        if method in CONTEXT_FREE_METHODS or method in IMAGE_METHODS:
            raise ValueError(
                f"{method} needs a second prompt per request (without its context / image), which lm-eval "
                "requests do not carry; use `contrastive-decoding bench run` for it"
            )
        own, sampling = split_parameters(method, dict(method_params))
        make_method_config(method, **own)
        self.method = method
        self.method_params = own
        self.sampling_params = sampling
        self.normalize = normalize
        self.batch_size = 8 if batch_size in (None, "auto") else int(str(batch_size).split(":")[0])
        self.max_gen_toks = int(max_gen_toks)
        self.model, self.tokenizer = load_model_and_tokenizer(pretrained, dtype=dtype, device=device)
        self.amateur_model = self.amateur_tokenizer = None
        if amateur is not None:
            self.amateur_model, self.amateur_tokenizer = load_model_and_tokenizer(
                amateur, dtype=dtype, device=device
            )

    # ----- lm-eval's interface

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        contexts = [request.args[0] for request in requests]
        continuations = [request.args[1] for request in requests]
        results = self._score(contexts, continuations)
        return [(result.logprob, result.is_greedy) for result in results]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        start = self.tokenizer.bos_token or self.tokenizer.eos_token
        texts = [request.args[0] for request in requests]
        return [result.logprob for result in self._score([start] * len(texts), texts, normalize=True)]

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        from ..api import generate_outputs

        answers: list[str] = []
        for request in requests:
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new_tokens = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            sampling = dict(self.sampling_params)
            if gen_kwargs.get("do_sample"):
                sampling["do_sample"] = True
                if "temperature" in gen_kwargs:
                    sampling["temperature"] = float(gen_kwargs["temperature"])
            output = generate_outputs(
                self.model,
                self.tokenizer,
                [context],
                self.method,
                amateur_model=self.amateur_model,
                amateur_tokenizer=self.amateur_tokenizer,
                max_new_tokens=max_new_tokens,
                batch_size=1,
                **self.method_params,
                **sampling,
            )[0]
            answers.append(cut_at_stop_sequences(output.text, until))
        return answers

    # ----- helpers

    def _score(self, contexts: list[str], continuations: list[str], normalize: bool | None = None):
        from ..scoring import score
        from .runner import choice_scoring_defaults

        params = {**choice_scoring_defaults(self.method), **self.method_params}
        if normalize is not None:
            params["normalize"] = normalize
        elif self.normalize is not None:
            params["normalize"] = self.normalize
        return score(
            self.model,
            self.tokenizer,
            contexts,
            continuations,
            self.method,
            amateur_model=self.amateur_model,
            amateur_tokenizer=self.amateur_tokenizer,
            batch_size=self.batch_size,
            **params,
        )


def cut_at_stop_sequences(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of ``stops`` (lm-eval's ``until``)."""
    cut = len(text)
    for stop in stops:
        if stop and stop in text:
            cut = min(cut, text.index(stop))
    return text[:cut]


def run_cli(args: Sequence[str]) -> None:
    """lm-eval's command line with ``--model contrastive`` registered and our task folder included."""
    from lm_eval.__main__ import cli_evaluate

    args = list(args)
    if args and args[0] == "run" and "--include_path" not in args:
        args += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm-eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    run_cli(sys.argv[1:])
