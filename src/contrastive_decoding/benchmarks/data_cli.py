"""``contrastive-decoding data``: pull benchmark data from its original sources into the cache, list what is there.

The group is registered by the CLI (``main.add_command(data)``); the library is :mod:`.data`.
"""

from __future__ import annotations

from pathlib import Path

import click

MIRROR_HELP = (
    "Fetch every file from URL/<folder>/<file> (a copy of a data root; a path or file:// URL works too) "
    "instead of its original source. [default: $CONTRASTIVE_DECODING_DATA_MIRROR]"
)


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.group("data")
def data() -> None:
    """Benchmark data: fetch it from its original sources (checked against sha256s), cache it, list it.

    \b
    `bench run` finds a task's data in --data-dir, else $CONTRASTIVE_DECODING_DATA_DIR (both used as they
    are, nothing is downloaded), else the cache: <cache>/data/<folder>/<file>, with <cache> =
    $CONTRASTIVE_DECODING_CACHE or ~/.cache/contrastive-decoding, filled on first use.
    For an offline machine: `data pull all --data-dir DIR` where there is a network, copy DIR over, and pass
    --data-dir DIR (or set $CONTRASTIVE_DECODING_DATA_DIR). A mirror (--mirror URL) is a data root served as
    URL/<folder>/<file>, e.g. `python -m http.server -d DIR`.
    """


@data.command("pull")
@click.argument("names", nargs=-1, required=True, metavar="NAME...|all")
@click.option(
    "--data-dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Fill this data root instead of the cache (then pass it to `bench run --data-dir`).",
)
@click.option("--mirror", default=None, metavar="URL", help=MIRROR_HELP)
@click.option("--force", is_flag=True, help="Fetch files again even when they are present and verified.")
def data_pull(names: tuple[str, ...], data_dir: Path | None, mirror: str | None, force: bool) -> None:
    """Fetch every file NAME needs (a task, a data folder, or `all`), check its sha256, and store it.

    Files already present with the right checksum are skipped, so re-running resumes. A download that fails
    its checksum or breaks off leaves no file behind. Data with no checkable source (COCO val2014 images,
    FACTOR news / wiki, StrategyQA) is listed as "bring your own" with where to put it; for a task that
    needs it, the command fails until it is there.
    """
    from . import data as lib

    for name in names:
        try:
            result = lib.pull(name, root=data_dir, mirror=mirror, force=force, progress=_echo_err)
        except (ValueError, lib.DataError) as error:
            raise click.ClickException(str(error)) from error
        click.echo(
            f"{name}: {len(result.downloaded)} file(s) downloaded, {len(result.present)} already present "
            f"in {result.root}"
        )
        if result.missing:
            who = f"{result.kind.capitalize()} {name!r}" if result.kind != "all" else "The data"
            message = lib.bring_your_own_message(result.missing, result.root, who)
            if result.kind == "task":
                raise click.ClickException(message)
            click.echo(message, err=True)


@data.command("list")
@click.option(
    "--data-dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Say what is in this data root instead of the cache.",
)
def data_list(data_dir: Path | None) -> None:
    """Every data folder: the tasks that use it, its source (repo@commit), license, size, whether it is cached."""
    import os

    from . import data as lib

    root = data_dir.expanduser() if data_dir is not None else lib.data_cache_dir()
    click.echo(f"data root: {root}" + ("" if data_dir is not None else " (the cache)"))
    if data_dir is None and os.environ.get(lib.DATA_DIR_ENV):
        click.echo(
            f"note: {lib.DATA_DIR_ENV}={os.environ[lib.DATA_DIR_ENV]} is set, so `bench run` reads that folder, "
            "not the cache",
            err=True,
        )
    for status in lib.folder_status(root):
        folder = status.folder
        click.echo("")
        click.echo(f"{folder.name}: {folder.description}")
        click.echo(f"  tasks:   {', '.join(status.tasks) or '-'}")
        if folder.files:
            sources = ", ".join(status.sources)
            click.echo(f"  source:  {sources}" + (f" ({folder.note})" if folder.note else ""))
        click.echo(f"  license: {folder.license}")
        if folder.files:
            click.echo(f"  size:    {lib.format_size(status.size)} in {len(folder.files)} file(s)")
            click.echo(f"  cached:  {status.cached}")
        for entry in folder.files:
            if entry.transform is not None:
                click.echo(f"  derived: {entry.path}: {entry.note}")
        for entry, present in zip(folder.bring_your_own, status.bring_your_own_present, strict=True):
            state = "present" if present else "missing"
            click.echo(f"  bring your own ({state}): {entry.path}: {entry.what}; from {entry.how}")
