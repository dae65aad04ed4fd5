"""``bench``: list the tasks, run one with a method (resumable), sweep a grid of settings, report tables."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from dataclasses import dataclass
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

DATA_DIR_ENV = "CONTRASTIVE_DECODING_DATA_DIR"  # the same name as benchmarks.data.DATA_DIR_ENV


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: run a task with a decoding method (resumable), sweep settings, report tables and plots.

    \b
    Data files are read from --data-dir, else $CONTRASTIVE_DECODING_DATA_DIR (both as given: nothing is
    downloaded), else the cache, which `bench run` fills on first use from each file's original source
    (a pinned commit; checked by sha256), or from --mirror. `contrastive-decoding data list` shows the
    sources and licenses; `data pull NAME|all` fetches ahead of time.
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


def _task_data_dir(task: Any, data_dir: Path | None, mirror: str | None) -> Path:
    """The data root for ``task``: --data-dir / $CONTRASTIVE_DECODING_DATA_DIR as given (nothing downloaded), else
    the cache, filled from the original sources (or --mirror) on first use."""
    from ..benchmarks.data import DataError, ensure_task_data

    try:
        return ensure_task_data(
            task, data_dir=data_dir, mirror=mirror, progress=lambda m: click.echo(m, err=True)
        )
    except DataError as error:
        raise click.ClickException(str(error)) from error


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


@dataclass(frozen=True)
class _RunOptions:
    """The options `bench run` and `bench sweep` share (see :func:`_bench_model_options`)."""

    model_name: str
    settings: tuple[str, ...]
    amateur_model: str | None
    backend: str
    dtype: str
    device: str
    limit: int | None
    seed: int
    data_dir: Path | None
    mirror: str | None
    batch_size: int
    output_dir: Path
    progress: bool


def _bench_model_options(function: Any) -> Any:
    """Options shared by `bench run` and `bench sweep`, handed to the command as one ``options: _RunOptions``."""

    @functools.wraps(function)
    def command(**kwargs: Any) -> Any:
        shared = {field.name: kwargs.pop(field.name) for field in dataclasses.fields(_RunOptions)}
        return function(**kwargs, options=_RunOptions(**shared))

    options = [
        model_option,
        decoding_options(
            "Method or sampling parameter (repeat).",
            "hf: transformers; vllm: a vLLM engine (generation tasks; `methods` lists what runs there).",
        ),
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
            help=f"Benchmark data root, used as is [default: ${DATA_DIR_ENV}, else the cache, pulled on first use].",
        ),
        click.option(
            "--mirror",
            default=None,
            help="Fetch missing data from this mirror (URL or folder laid out <mirror>/<folder>/<file>) "
            "instead of the original sources [default: $CONTRASTIVE_DECODING_DATA_MIRROR].",
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
        command = option(command)
    return command


def _get_task_or_fail(task_name: str) -> Any:
    from ..benchmarks.tasks import get_task

    try:
        return get_task(task_name)
    except ValueError as error:
        raise click.ClickException(str(error)) from error


def _run_all(task: Any, runs: list[tuple[str, dict[str, Any], Path]], options: _RunOptions) -> None:
    """Load the models once, then run ``task`` with each (method, params, run directory) and echo its summary."""
    from ..benchmarks.runner import run_task
    from ..decoding import AMATEUR_METHODS

    needing = sorted({method for method, _, _ in runs if method in AMATEUR_METHODS})
    if needing and options.amateur_model is None:
        raise click.ClickException(
            f"{', '.join(needing)} needs --amateur-model (a smaller model with the same tokenizer)"
        )
    data_dir = _task_data_dir(task, options.data_dir, options.mirror)
    model, tokenizer, amateur, amateur_tokenizer = load_models(
        options.model_name, options.amateur_model, options.dtype, options.device, options.backend
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
                limit=options.limit,
                seed=options.seed,
                batch_size=options.batch_size,
                progress=options.progress,
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
    rate = summary.items_per_s
    if rate is not None:
        computed = summary.num_items - summary.num_resumed
        click.echo(f"computed {computed} items in {summary.elapsed_s:.1f} s ({rate:.2f} items/s)", err=True)


@bench_group.command("run")
@click.argument("task_name", metavar="TASK")
@click.option("--method", required=True, help="Decoding method (see `contrastive-decoding methods`).")
@_bench_model_options
def bench_run(task_name: str, method: str, options: _RunOptions) -> None:
    """Run TASK with one method; write results.jsonl, metadata.json and summary.json into --output-dir.

    Interrupted runs resume: run the same command again. Choice tasks also take --set normalize=false.

    \b
    contrastive-decoding bench run truthfulqa-mc --model smollm2-135m --method dola \\
        --set dola_layers=high --set relative_top=0.0 --limit 100 --output-dir runs/tqa-dola
    """
    task = _get_task_or_fail(task_name)
    try:
        params = _bench_settings(task, [method], parse_set_option(options.settings), options.backend)[method]
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    _run_all(task, [(method, params, options.output_dir)], options)


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
def bench_sweep(task_name: str, grids: tuple[str, ...], options: _RunOptions) -> None:
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
        common = _bench_settings(task, methods, parse_set_option(options.settings), options.backend)
        for method, grid_params in combinations:
            params = {**common[method], **grid_params}
            _bench_settings(task, [method], params)
            run_dir = options.output_dir / run_dir_name(method, grid_params)
            if all(run_dir != existing for _, _, existing in runs):
                runs.append((method, params, run_dir))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    _run_all(task, runs, options)
    for path in write_report([run_dir for _, _, run_dir in runs], options.output_dir):
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
@click.option(
    "--baseline", default="plain", show_default=True, help="Method every other method is compared with."
)
@click.option(
    "--alpha", type=float, default=0.05, show_default=True, help="Significance level of the paired tests."
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "none"]),
    default="holm",
    show_default=True,
    help="Multiple-comparison correction across one task's comparisons.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap / permutation draws."
)
@click.option(
    "--resamples", type=click.IntRange(1), default=9999, show_default=True, help="Bootstrap resamples."
)
@click.option(
    "--resamples-recomputed",
    type=click.IntRange(1),
    default=999,
    show_default=True,
    help="Resamples for metrics recomputed from resampled items (F1, CHAIR_i, diversity).",
)
def bench_report(
    run_dirs: tuple[Path, ...],
    output_dir: Path,
    baseline: str,
    alpha: float,
    correction: str,
    seed: int,
    resamples: int,
    resamples_recomputed: int,
) -> None:
    """Tables (report.md, report.csv, comparisons.csv) and one bar chart per task over finished RUN_DIRS.

    Every metric gets a bootstrap 95% interval over items and its item count; every method is compared with
    --baseline on the same items (McNemar for accuracies, paired permutation otherwise), marked significant
    only when its (corrected) p is below --alpha.
    """
    from ..benchmarks.report import write_report

    try:
        written = write_report(
            list(run_dirs),
            output_dir,
            baseline=baseline,
            alpha=alpha,
            correction=correction,
            seed=seed,
            n_resamples=resamples,
            n_resamples_recomputed=resamples_recomputed,
        )
    except KeyError as error:
        raise click.ClickException(
            f"a summary.json lacks the field {error}; is it from `bench run`?"
        ) from error
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    for path in written:
        click.echo(str(path))
