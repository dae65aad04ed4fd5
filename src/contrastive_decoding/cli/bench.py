"""``bench``: list the tasks, run one with a method (resumable), sweep a grid of settings, report tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .options import (
    amateur_model_option,
    backend_option,
    batch_size_option,
    device_option,
    dtype_option,
    load_models,
    method_settings,
    model_option,
    parse_set_option,
    set_option,
)

DATA_DIR_ENV = "CONTRASTIVE_DECODING_DATA_DIR"


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: run a task with a decoding method (resumable), sweep settings, report tables and plots.

    \b
    Data files are read from --data-dir, default: $CONTRASTIVE_DECODING_DATA_DIR, else ../shared/data
    relative to the current directory. Each task folder there has a PROVENANCE.md saying where its files
    come from (source repository and commit, license, transformations); INDEX.md lists the folders.
    """


@bench_group.command("list")
def bench_list() -> None:
    """Every task: name, kind (choice: scores answer choices; generate: generates text), description."""
    from ..benchmarks.tasks import TASKS

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
    from ..benchmarks.runner import SCORE_ONLY_PARAMETERS, validate_backend, validate_run_params

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


def _bench_model_options(function: Any) -> Any:
    """Options shared by `bench run` and `bench sweep`."""
    options = [
        model_option,
        set_option("Method or sampling parameter (repeat)."),
        amateur_model_option,
        backend_option(
            "hf: transformers; vllm: a vLLM engine (generation tasks; greedy, dola, expert_amateur and sampling)."
        ),
        dtype_option,
        device_option,
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
        batch_size_option,
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
    from ..benchmarks.tasks import get_task

    try:
        return get_task(task_name)
    except ValueError as error:
        raise click.ClickException(str(error)) from error


def _run_all(
    task: Any,
    runs: list[tuple[str, dict[str, Any], Path]],
    model_name: str,
    amateur_model: str | None,
    backend: str,
    dtype: str,
    device: str,
    data_dir: Path | None,
    **run_options: Any,
) -> None:
    """Load the models once, then run ``task`` with each (method, params, run directory) and echo its summary.

    ``run_options`` (limit, seed, batch_size, progress) go to :func:`run_task` as they are.
    """
    from ..benchmarks.runner import run_task

    if any(method == "expert_amateur" for method, _, _ in runs) and amateur_model is None:
        raise click.ClickException(
            "expert_amateur needs --amateur-model (a smaller model with the same tokenizer)"
        )
    data_dir = _resolve_data_dir(data_dir)
    _check_data_files(task, data_dir)
    model, tokenizer, amateur, amateur_tokenizer = load_models(
        model_name, amateur_model, dtype, device, backend
    )
    for method, params, run_dir in runs:
        try:
            summary = run_task(
                task,
                method=method,
                params=params,
                output_dir=run_dir,
                command_line=sys.argv,
                model=model,
                tokenizer=tokenizer,
                data_dir=data_dir,
                amateur_model=amateur,
                amateur_tokenizer=amateur_tokenizer,
                **run_options,
            )
        except (ValueError, RuntimeError, OSError) as error:
            raise click.ClickException(str(error)) from error
        _echo_summary(summary)


def _echo_summary(summary: Any) -> None:
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in summary.metrics.items()) or "(no metrics)"
    click.echo(f"{summary.task} {summary.method} {json.dumps(summary.params)}: {metrics}")
    click.echo(
        f"{summary.num_items} items ({summary.num_resumed} from a previous run), {summary.num_errors} errors; "
        f"results in {summary.output_dir}",
        err=True,
    )


@bench_group.command("run")
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
    _run_all(
        task,
        [(method, params, output_dir)],
        model_name,
        amateur_model,
        backend,
        dtype,
        device,
        data_dir,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )


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


@bench_group.command("sweep")
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
    from ..benchmarks.report import write_report

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
    _run_all(
        task,
        runs,
        model_name,
        amateur_model,
        backend,
        dtype,
        device,
        data_dir,
        limit=limit,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    for path in write_report([run_dir for _, _, run_dir in runs], output_dir):
        click.echo(f"wrote {path}", err=True)


@bench_group.command("report")
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
    from ..benchmarks.report import write_report

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
