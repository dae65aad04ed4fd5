"""``contrastive-decoding``: generate with contrastive decoding methods and manage the real small models.

One module per command family: ``generate`` (generate, methods, the demo), ``bench`` (bench list / run / sweep /
report), ``serve`` (serve, lm-eval), ``models`` (models pull / list), ``data`` (data pull / list, from
``benchmarks.data_cli``); ``options`` holds what they share. Heavy
libraries (torch, transformers, vLLM) are imported inside the command bodies, so ``--help`` stays fast.
"""

from __future__ import annotations

import click

from ..benchmarks.data_cli import data as data_group
from .bench import DATA_DIR_ENV, bench_group, parse_grid, run_dir_name
from .generate import DEMO_CONTEXT, DEMO_QUESTION, format_table, generate_command, methods_command
from .models import models_group
from .options import method_settings, parse_set_option
from .serve import lm_eval_command, serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="contrastive-decoding")
def main() -> None:
    """Contrastive decoding methods (contrastive search, expert-amateur CD, DoLa, CAD, AdaCAD, typical
    sampling) for Hugging Face models, from the command line."""


main.add_command(models_group)
main.add_command(methods_command)
main.add_command(generate_command)
main.add_command(bench_group)
main.add_command(data_group)
main.add_command(lm_eval_command)
main.add_command(serve_command)

__all__ = [
    "DATA_DIR_ENV",
    "DEMO_CONTEXT",
    "DEMO_QUESTION",
    "format_table",
    "main",
    "method_settings",
    "parse_grid",
    "parse_set_option",
    "run_dir_name",
]
