"""Running the `nima` console entry point in process, for the property tests of its arguments."""

from __future__ import annotations

import contextlib
import io
import sys

from nima.cli import main


def run_main(argv: list[str]) -> tuple[int, str]:
    """``nima ARGV`` through the console entry point (which turns usage errors into ``error:`` lines):
    the exit code and what went to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        old, sys.argv = sys.argv, ["nima", *argv]
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        finally:
            sys.argv = old
    return code, err.getvalue()
