"""`nima build SPEC`: validate a spec, print what it costs, and (with -o) write a model folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import SetOption, fail, load_or_fail, path_given, require_memory, require_torch


def _writable_target(out: Path, force: bool) -> None:
    require_torch("build -o")
    from nima.layout import SPEC_FILE, WEIGHTS_FILE

    if out.exists() and not out.is_dir():
        fail(f"{out}: exists and is not a folder")
    if out.is_dir():
        # --force overwrites a build's two files; a run's checkpoints or a bundle's graphs would stay
        # beside them and no longer match
        other = [p.name for p in sorted(out.iterdir()) if p.name in ("run.json", "checkpoints") or p.suffix == ".onnx"]
        if other:
            kind = "an exported bundle" if other[0].endswith(".onnx") else "a training run"
            fail(f"{out}: holds {kind} ({other[0]}), which a build would not match; build into another folder")
    if out.is_dir() and not force:
        taken = [name for name in (SPEC_FILE, WEIGHTS_FILE) if (out / name).exists()]
        if taken:
            fail(f"{out}: already holds {', '.join(taken)}; pass --force to overwrite")
    probe = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{out}: folder is not writable")


def build(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Spec file (.yaml, .yml or .json).", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            parser=path_given,
            help="Write nima.json and model.safetensors here. Without it, only validate.",
        ),
    ] = None,
    overrides: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the initial weights (default: training.seed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a model already in --out.")] = False,
) -> None:
    """Validate SPEC, print its summary, and (with -o) write the resolved spec and initial weights."""
    from rich.console import Console
    from rich.markup import escape

    from nima.spec import figures
    from nima.summary import summary_table

    model_spec = load_or_fail(spec, overrides)
    fig = figures(model_spec)
    if out is not None:
        _writable_target(out, force)
        from nima.builders import build_model, save_build

        require_memory(f"{out}: building the model (fp32 weights)", 4 * fig.parameters)

        use_seed = model_spec.training.seed if seed is None else seed
        model = build_model(model_spec, seed=use_seed)
        try:
            save_build(model, model_spec, out, metadata={"seed": str(use_seed)})
        except OSError as err:
            fail(f"{out}: cannot write ({err.strerror or err})")
    if as_json:
        payload = {
            "spec": model_spec.model_dump(mode="json"),
            "figures": fig.as_dict(),
            "output": str(out) if out is not None else None,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console()
    console.print(summary_table(model_spec, fig))
    if out is not None:
        console.print(f"wrote [bold]{escape(str(out))}/nima.json[/] and [bold]{escape(str(out))}/model.safetensors[/]")
    else:
        console.print("[dim]spec is valid; pass -o DIR to write nima.json and model.safetensors[/]")
