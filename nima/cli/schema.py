"""`nima schema`: the JSON Schema of a spec, for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import fail, path_given


def schema(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", parser=path_given, help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of a spec (point yaml-language-server at it for completion)."""
    from nima.spec.schema import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        fail(f"{out}: cannot write ({err.strerror or err})")
