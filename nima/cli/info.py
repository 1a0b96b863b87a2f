"""`nima info PATH`: what a spec, model folder, run, bundle or Hugging Face folder holds (`nima.info`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import fail


def info(
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="A spec file, model folder, run, bundle or transformers folder."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """Say what PATH is: its architecture and figures, weights, tokenizer, run progress or export check, files."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from nima.info import InfoError, describe_path
    from nima.summary import size

    try:
        found = describe_path(path)
    except InfoError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{path}: cannot read ({err.strerror or err})")
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2))
        return
    table = Table(title=f"{escape(str(path))} · {found.kind}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for label, value in found.rows:
        table.add_row(escape(label), escape(value))
    if found.files:
        table.add_section()
        for name, n_bytes in found.files:
            table.add_row("file", escape(f"{name}  {size(n_bytes)}"))
    Console().print(table)
