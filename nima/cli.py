"""The `nima` command line. Heavy imports (torch) happen inside the commands that need them.

Exit codes: 0 success, 1 a check failed, 2 bad input (spec, file, flag) — reported as one
line per problem, no traceback, nothing written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from nima import __version__

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # earlier typer runs on click itself
    from click import exceptions as click_errors

app = typer.Typer(
    name="nima",
    help="Declarative transformer LMs: spec -> PyTorch -> ONNX -> ONNX Runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2


def fail(lines: list[str] | str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print each problem on its own line to stderr and exit with ``code``."""
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nima {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Declarative transformer LMs: spec -> PyTorch -> ONNX -> ONNX Runtime."""


def path_given(value: str | Path) -> Path:
    """Parse a path flag, refusing an empty one: Path("") is the current folder, so an unset shell
    variable in `-o "$OUT"` would otherwise write a run or a bundle into wherever the command ran."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("an empty path; name a file or folder (. for the current folder)")
    return Path(value)


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec field: --set attention.n_heads=8 (repeatable)."),
]


def load_or_fail(spec_path: Path, overrides: list[str] | None):  # noqa: ANN201 - ModelSpec, imported lazily
    from nima.spec import SpecError, load_spec

    try:
        return load_spec(spec_path, overrides)
    except SpecError as err:
        fail([str(p) for p in err.problems])


def require_torch(command: str) -> None:
    """Fail with an install hint when PyTorch is missing (a runtime-only install has no torch)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a torch blocked in sys.modules, or a broken install
        found = False
    if not found:
        fail(f"nima {command} needs PyTorch, which this install lacks: pip install 'nima[torch]'")


def _writable_target(out: Path, force: bool) -> None:
    require_torch("build -o")
    from nima.builders.weights import SPEC_FILE, WEIGHTS_FILE

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
    import os

    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"{out}: folder is not writable")


@app.command()
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

    from nima.spec import figures
    from nima.summary import summary_table

    model_spec = load_or_fail(spec, overrides)
    fig = figures(model_spec)
    if out is not None:
        _writable_target(out, force)
        from nima.builders import build_model, save_build

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
        console.print(f"wrote [bold]{out}/nima.json[/] and [bold]{out}/model.safetensors[/]")
    else:
        console.print("[dim]spec is valid; pass -o DIR to write nima.json and model.safetensors[/]")


from nima.cli_train import train  # noqa: E402 - registered after the helpers it imports exist

app.command()(train)


@app.command()
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


@app.command()
def export(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE", help="A model folder (nima build / nima train output) or a spec file.", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", parser=path_given, help="Bundle folder to write.", show_default=False)
    ],
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the one format so far).")] = False,
    dtype: Annotated[str, typer.Option(help="Weights and activations: fp32 | fp16.")] = "fp32",
    quantize: Annotated[
        str | None, typer.Option(help="Quantize MatMul weights: int8 (dynamic) | int4 (block-wise MatMulNBits).")
    ] = None,
    target: Annotated[
        str, typer.Option(help="portable: standard ONNX ops; ort: ONNX Runtime's fused contrib ops.")
    ] = "portable",
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check ONNX Runtime against PyTorch before writing.")
    ] = True,
    overrides: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier bundle (only a bundle).")] = False,
) -> None:
    """Export SOURCE as a deployable bundle: model.onnx with a KV cache, nima.json, genai_config.json, README.md.

    An encoder-decoder exports encoder.onnx and decoder.onnx, nima.json, seq2seq.json and README.md.
    """
    if not onnx:
        fail("nothing to export: pass --onnx")
    from rich.console import Console

    require_torch("export")
    from nima.builders.weights import WeightsError
    from nima.export.bundle import BundleError
    from nima.export.command import ParityFailure, UnsupportedExport, export_bundle
    from nima.export.onnx_graph import ExportError
    from nima.export.source import SourceError
    from nima.spec import SpecError

    console = Console(stderr=True)
    if source.is_file():
        load_or_fail(source, overrides)  # a spec with errors gets them alone, without the warning below
        console.print(f"[yellow]warning:[/] {source} is a spec file: exporting randomly initialised weights")
    try:
        with console.status("exporting") as status:
            result = export_bundle(
                source,
                out,
                dtype=dtype,
                quantize=quantize,
                target=target,
                verify=verify,
                force=force,
                overrides=overrides,
                progress=lambda msg: status.update(msg),
            )
    except SpecError as err:
        fail([str(p) for p in err.problems])
    except (SourceError, WeightsError, BundleError, UnsupportedExport) as err:
        fail(str(err))
    except ParityFailure as err:
        fail(str(err), code=1)
    except ExportError as err:
        fail(f"{source}: {err}", code=1)
    except OSError as err:
        fail(f"{out}: cannot write ({err.strerror or err})")
    if result.parity is not None:
        console.print(f"parity: {result.parity.describe()}")
    typer.echo(f"wrote {out}/ ({', '.join(result.files)})")


from nima.cli_generate import generate  # noqa: E402 - registered after `fail` exists

app.command()(generate)


def _usage_error(err: click_errors.UsageError) -> NoReturn:
    """One line for a bad flag or a missing argument, naming where to read the usage."""
    command = err.ctx.command_path if err.ctx is not None else "nima"
    fail(f"{err.format_message().rstrip('.')} (see '{command} --help')", err.exit_code)


def main() -> None:
    """Console-script entry point.

    Click runs outside its standalone mode so that a usage error (an unknown flag, a missing
    argument) is printed as one ``error:`` line like every other bad input, not as a framed box.
    """
    try:
        try:
            code = app(standalone_mode=False)
        except click_errors.NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help() if err.ctx is not None else err.format_message())
            sys.exit(err.exit_code)
        except click_errors.UsageError as err:
            _usage_error(err)
        except click_errors.ClickException as err:
            fail(err.format_message(), err.exit_code)
        except typer.Abort:
            raise KeyboardInterrupt from None
        if code == 130:  # typer turns Ctrl-C inside a command into a silent exit 130
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as done:  # raised by `fail` above
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (MemoryError, RuntimeError) as err:  # torch reports a failed allocation as a RuntimeError
        text = str(err).strip()
        if not isinstance(err, MemoryError) and "can't allocate memory" not in text and "out of memory" not in text:
            raise
        detail = text.splitlines()[0] if text else "MemoryError"
        typer.echo(f"error: out of memory: the model or batch does not fit ({detail})", err=True)
        sys.exit(EXIT_BAD_INPUT)
