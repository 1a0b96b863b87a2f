"""`nima import PATH -o MODEL_DIR`: a Hugging Face model folder becomes a Nima model folder
(the library call: `nima.interop.hf.importer.import_hf`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import fail, path_given, require_torch

# What a model folder written by `nima import` or `nima build` holds: --force replaces only such a folder.
MODEL_FOLDER_FILES = {
    "nima.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}


def _check_target(source: Path, out: Path, force: bool) -> None:
    """Refuse a target that is a file, holds the source, or holds anything but an earlier model folder."""
    if out.is_symlink():  # the folder is written beside it and renamed into place, which a link refuses
        fail(f"{out}: is a symbolic link; give the folder it points to, or a new one")
    if out.exists() and not out.is_dir():
        fail(f"{out}: exists and is not a folder")
    resolved, origin = out.resolve(), source.resolve()
    if resolved == origin or resolved in origin.parents or origin in resolved.parents:
        fail(f"{out}: is the source folder, inside it or around it; import into another folder")
    if out.is_dir() and any(out.iterdir()):
        names = {p.name for p in out.iterdir()}
        if not force:
            fail(f"{out}: folder is not empty; pass --force to replace the model in it")
        if not names <= MODEL_FOLDER_FILES or any((out / n).is_dir() for n in names):
            other = sorted(names - MODEL_FOLDER_FILES) or sorted(names)
            fail(f"{out}: holds {other[0]}, so it is not just a model folder, and --force will not delete it")
    probe = next((p for p in (resolved, *resolved.parents) if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{out}: folder is not writable")


WEIGHT_DTYPES = ("fp32", "bf16", "fp16")  # `nima.interop.hf.importer.DTYPES`'s keys, without torch


def import_(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="A Hugging Face model folder (config.json + safetensors).", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", parser=path_given, help="Model folder to write.", show_default=False)
    ],
    dtype: Annotated[str, typer.Option(help="Weights in model.safetensors: fp32 | bf16 | fp16.")] = "fp32",
    force: Annotated[bool, typer.Option("--force", help="Replace a model folder already in --out.")] = False,
) -> None:
    """Import a Hugging Face checkpoint: writes nima.json (a spec you can read and edit) and model.safetensors.

    `nima export --onnx` and `nima train` then take the folder as they take `nima build -o`'s.
    """
    if dtype not in WEIGHT_DTYPES:  # before seconds of importing torch
        fail(f"--dtype {dtype}: supported are {', '.join(WEIGHT_DTYPES)}")
    require_torch("import")
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nima.interop.hf.errors import ImportFailure
    from nima.interop.hf.importer import import_hf

    _check_target(source, out, force)
    console = Console(stderr=True)
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("tensors"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("import", total=None)
            result = import_hf(
                source, out, dtype, lambda done, total: bar.update(task, completed=done, total=total), replace=force
            )
    except ImportFailure as err:
        fail(str(err))
    except OSError as err:
        fail(f"{out}: cannot write ({err.strerror or err})")
    spec = result.spec
    console.print(
        f"{escape(result.model_type)} -> {escape(spec.name)}: {spec.n_layers} layers, d_model {spec.d_model}, "
        f"{result.tensors} tensors, {result.weight_bytes / 2**20:,.1f} MiB {dtype}"
    )
    typer.echo(f"wrote {out}/ ({', '.join(result.files)})")
