"""The `nima` typer app: each command is a module of this package, registered here; `main` is the
console script. Heavy imports (torch) happen inside the commands that need them.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from nima import __version__
from nima.cli.build import build
from nima.cli.common import EXIT_BAD_INPUT, fail
from nima.cli.export import export
from nima.cli.generate import generate
from nima.cli.import_ import import_
from nima.cli.info import info
from nima.cli.schema import schema
from nima.cli.serve import serve
from nima.cli.train import train

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # earlier typer runs on click itself
    from click import exceptions as click_errors

app = typer.Typer(
    name="nima",
    help="Declarative transformer LMs: spec -> PyTorch -> ONNX -> ONNX Runtime.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # plain help: the boxed layout cuts long option names to fit 80 columns
    pretty_exceptions_enable=False,
)
for command in (build, train, schema, export, generate, serve, info):  # the order `nima --help` lists them in
    app.command()(command)
app.command("import")(import_)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nima {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Declarative transformer LMs: spec -> PyTorch -> ONNX -> ONNX Runtime."""


app.callback()(_root)


def _set_hint(args: list[str]) -> str | None:
    """``--set n_layers 4`` (a space for the ``=``): the one-word form to use instead, or None."""
    for i, flag in enumerate(args[:-2]):
        key, value = args[i + 1], args[i + 2]
        if flag in ("--set", "-s") and "=" not in key and not value.startswith("-"):
            return f"--set takes KEY=VALUE as one word: --set {key}={value}"
    return None


def _usage_error(err: click_errors.UsageError) -> NoReturn:
    """One line for a bad flag or a missing argument, naming where to read the usage."""
    command = err.ctx.command_path if err.ctx is not None else "nima"
    hint = _set_hint(sys.argv[1:]) if "unexpected extra argument" in err.format_message() else None
    where = hint or f"see '{command} --help'"
    fail(f"{err.format_message().rstrip('.')} ({where})", err.exit_code)


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
