"""``generate`` (a JSONL file or one prompt, one or more methods), ``methods`` and the built-in demo."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import click

from .options import (
    batch_size_option,
    decoding_options,
    load_models,
    method_settings,
    model_option,
    parse_set_option,
)

# A counterfactual context: a model that follows its prior answers "Paris"; context-aware decoding should
# follow the context ("Rome"). Used by `make demo` (with --chat on SmolLM2-135M-Instruct).
DEMO_CONTEXT = "The Eiffel Tower is located in Rome, next to the Colosseum."
DEMO_QUESTION = "Question: In which city is the Eiffel Tower?\nAnswer:"


@click.command("methods")
def methods_command() -> None:
    """Every decoding method: its parameters and defaults, and where it runs (read from the method registry)."""
    from ..decoding import method_parameters, registry
    from ..method_call import SAMPLING_PARAMETERS

    for spec in registry.specs():
        params = ", ".join(f"{key}={value!r}" for key, value in method_parameters(spec.name).items())
        aliases = f" (or {', '.join(spec.aliases)})" if spec.aliases else ""
        vllm = "vllm" if spec.vllm.served else "hf only" if spec.generates else "scoring only: choice tasks"
        click.echo(f"{spec.name:20s} {params or '(no parameters)'}  [{vllm}]{aliases}")
    click.echo(f"{'(every method)':20s} {', '.join(SAMPLING_PARAMETERS)}")


@click.command("generate")
@model_option
@click.option(
    "--method",
    "methods",
    multiple=True,
    default=("plain",),
    show_default=True,
    help="Decoding method; repeat it (or pass 'all') with --prompt for a side-by-side table.",
)
@decoding_options(
    "Method or sampling parameter.",
    "hf: transformers; vllm: a vLLM engine (the `vllm` extra; `methods` lists what runs there).",
)
@click.option("--max-new-tokens", type=click.IntRange(1), default=64, show_default=True)
@batch_size_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSONL rows {"prompt": ..., "context_free_prompt": ..., "image": path, "conditions": [...]}; image '
    "paths are relative to the file's folder (image methods: vcd, ritual, ritual_vcd, vdd on a vision-language "
    "model); conditions (condition_contrast) are substrings, [start, end] spans, or template slot values.",
)
@click.option(
    "--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), help="JSONL output file."
)
@click.option("--prompt", default=None, help="One prompt: print a table of the methods' outputs.")
@click.option(
    "--context-free-prompt", default=None, help="With --prompt: the prompt without its context (CAD)."
)
@click.option(
    "--condition",
    "condition_texts",
    multiple=True,
    metavar="TEXT",
    help="With --prompt: a condition of the prompt (a substring, repeat for each) for condition_contrast.",
)
@click.option(
    "--image",
    "image_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --prompt: the image for a vision-language model (image methods: vcd, ritual, ritual_vcd, vdd).",
)
@click.option(
    "--demo", is_flag=True, help="Use the built-in demo prompt (a counterfactual context + a question)."
)
@click.option(
    "--chat",
    is_flag=True,
    help="Wrap each prompt (and context-free prompt) in the tokenizer's chat template.",
)
def generate_command(
    model_name: str,
    methods: tuple[str, ...],
    settings: tuple[str, ...],
    amateur_model: str | None,
    backend: str,
    dtype: str,
    device: str,
    max_new_tokens: int,
    batch_size: int,
    input_path: Path | None,
    output_path: Path | None,
    prompt: str | None,
    context_free_prompt: str | None,
    condition_texts: tuple[str, ...],
    image_path: Path | None,
    demo: bool,
    chat: bool,
) -> None:
    """Generate with one or more decoding methods, from a JSONL file or a single --prompt.

    \b
    contrastive-decoding generate --model smollm2-135m --method dola --set dola_layers=high \\
        --set repetition_penalty=1.2 --input prompts.jsonl --output out.jsonl
    contrastive-decoding generate --model smollm2-135m --method all --demo
    contrastive-decoding generate --model ./llava-1.5-7b-hf --method greedy --method vcd --method ritual \\
        --prompt "Describe the image." --image photo.jpg --chat
    """
    from ..decoding import (
        CONDITION_METHODS,
        CONTEXT_FREE_METHODS,
        IMAGE_METHODS,
        METHOD_CONFIGS,
        SCORING_ONLY_METHODS,
        registry,
    )

    if demo:
        prompt = f"{DEMO_CONTEXT}\n{DEMO_QUESTION}"
        context_free_prompt = DEMO_QUESTION
    if (prompt is None) == (input_path is None):
        raise click.UsageError("give exactly one of --input FILE or --prompt TEXT (or --demo)")
    if input_path is not None and output_path is None:
        raise click.UsageError("--input needs --output")
    if "all" in methods:  # the image methods with an image, the text methods without
        with_image = image_path is not None
        method_list = [
            m
            for m in METHOD_CONFIGS
            if (m == "plain" or (m in IMAGE_METHODS) == with_image)
            and (m not in CONDITION_METHODS or bool(condition_texts))
            and m not in SCORING_ONLY_METHODS
        ]
    else:
        method_list = list(dict.fromkeys(methods))
    for method in method_list:
        try:
            registry.check_generates(method)
        except ValueError as error:
            raise click.UsageError(str(error)) from error
    if input_path is not None and len(method_list) != 1:
        raise click.UsageError("--input runs one --method at a time")
    try:
        params_by_method = method_settings(method_list, parse_set_option(settings))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if "all" in methods:  # and the methods that only sample (rerank) when sampling
        from ..decoding import registry

        method_list = [
            m
            for m in method_list
            if not registry.get_spec(m).needs_sampling or params_by_method[m].get("do_sample") is True
        ]
    rows = _read_jsonl(input_path) if input_path is not None else None
    row_images = _row_images(rows, input_path) if rows is not None else None
    if image_path is not None and prompt is None:
        raise click.UsageError('--image goes with --prompt; in an --input file give each row an "image"')
    if backend == "vllm":
        for method in method_list:
            spec = registry.get_spec(method)
            if not spec.vllm.served:
                raise click.UsageError(f"{method} runs on the hf backend only, for now: {spec.vllm.reason}")
        if image_path is not None or row_images:
            raise click.UsageError("images run on the hf backend only, for now")

    from ..api import generate_outputs

    model, tokenizer, amateur, amateur_tokenizer = load_models(
        model_name, amateur_model, dtype, device, backend
    )
    engine = None
    if backend == "vllm":  # the engine holds the amateur itself
        engine, model, amateur = model, None, model.amateur_path

    def as_chat(texts: list[str] | None, with_images: bool = False) -> list[str] | None:
        if not chat or texts is None:
            return texts
        if with_images:
            return [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for t in texts
            ]
        return [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]

    def run(
        method: str,
        prompts: list[str],
        free: list[str] | None,
        images: list | None = None,
        conditions: list | None = None,
    ) -> list:
        try:
            if method in CONDITION_METHODS:
                if engine is not None:
                    raise ValueError("condition_contrast runs on the hf backend only, for now")
                return generate_outputs(
                    model,
                    tokenizer,
                    prompts,  # conditions are marked on the text as given (no chat template)
                    method,
                    conditions=conditions,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    **params_by_method[method],
                )
            if images is not None or method in IMAGE_METHODS:
                return generate_outputs(
                    model,
                    tokenizer,
                    as_chat(prompts, with_images=True),
                    method,
                    images=images,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    **params_by_method[method],
                )
            if engine is not None:
                requests = [
                    {
                        "prompt": prompt,
                        "method": method,
                        "max_new_tokens": max_new_tokens,
                        **params_by_method[method],
                    }
                    for prompt in as_chat(prompts)
                ]
                if method in CONTEXT_FREE_METHODS:
                    if free is None:
                        raise ValueError(
                            "needs a context_free_prompt (the prompt without its context) per prompt"
                        )
                    for request, context_free in zip(requests, as_chat(free), strict=True):
                        request["context_free_prompt"] = context_free
                return engine.generate_requests(requests)
            return generate_outputs(
                model,
                tokenizer,
                as_chat(prompts),
                method,
                context_free_prompts=as_chat(free),
                amateur_model=amateur,
                amateur_tokenizer=amateur_tokenizer,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                **params_by_method[method],
            )
        except ValueError as error:
            raise click.ClickException(f"{method}: {error}") from error

    if rows is not None:
        method = method_list[0]
        free = [row.get("context_free_prompt") for row in rows]
        outputs = run(
            method,
            [row["prompt"] for row in rows],
            free if all(f is not None for f in free) else None,
            row_images,
            [row.get("conditions") for row in rows] if method in CONDITION_METHODS else None,
        )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with output_path.open("w") as handle:
            for row, output in zip(rows, outputs, strict=True):
                record = {**row, "method": method, "text": output.text, "token_ids": output.token_ids}
                record.update(output.extras)
                handle.write(json.dumps(record) + "\n")
        click.echo(f"wrote {len(outputs)} rows to {output_path}", err=True)
        return

    table: list[tuple[str, str]] = []
    for method in method_list:
        if method == "expert_amateur" and amateur is None:
            table.append(
                (method, "(skipped: needs --amateur-model, a smaller model with the same tokenizer)")
            )
        elif method in ("cad", "adacad") and context_free_prompt is None:
            table.append((method, "(skipped: needs --context-free-prompt, the prompt without its context)"))
        elif method in IMAGE_METHODS and image_path is None:
            table.append((method, "(skipped: needs --image and a vision-language model)"))
        elif method in CONDITION_METHODS and not condition_texts:
            table.append((method, "(skipped: needs --condition TEXT, a marked condition of the prompt)"))
        elif method in CONDITION_METHODS:
            output = run(method, [prompt], None, None, [list(condition_texts)])[0]
            effects = ", ".join(f"{k!r}: {v:.3f}" for k, v in output.extras["condition_effects"].items())
            table.append((method, f"{output.text.strip()}  [condition effects: {effects}]"))
        else:
            free = [context_free_prompt] if context_free_prompt else None
            images = [image_path] if image_path is not None else None
            table.append((method, run(method, [prompt], free, images)[0].text.strip()))
    click.echo(f"prompt: {prompt}\n")
    click.echo(format_table(table))


def format_table(rows: list[tuple[str, str]], width: int | None = None) -> str:
    """Two columns, method | output, the output wrapped to the terminal width."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    name_width = max(len("method"), *(len(name) for name, _ in rows))
    text_width = max(20, width - name_width - 3)
    lines = [f"{'method':<{name_width}} | output", f"{'-' * name_width}-+-{'-' * text_width}"]
    for name, text in rows:
        wrapped = textwrap.wrap(" ".join(text.split()), text_width) or [""]
        lines.append(f"{name:<{name_width}} | {wrapped[0]}")
        lines.extend(f"{'':<{name_width}} | {line}" for line in wrapped[1:])
    return "\n".join(lines)


def _row_images(rows: list[dict[str, Any]], input_path: Path) -> list[Path] | None:
    """The rows' image paths (relative ones from the input file's folder), or None when no row has one."""
    if not any("image" in row for row in rows):
        return None
    paths = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("image"), str):
            raise click.ClickException(f'{input_path}: row {number} has no "image" while other rows do')
        path = Path(row["image"]).expanduser()
        path = path if path.is_absolute() else input_path.parent / path
        if not path.is_file():
            raise click.ClickException(f"{input_path}: row {number}: image {path} not found")
        paths.append(path)
    return paths


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise click.ClickException(f"{path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise click.ClickException(f'{path}:{number}: each row needs a string "prompt"')
        rows.append(row)
    if not rows:
        raise click.ClickException(f"{path} has no rows")
    return rows
