"""Generated `nima generate` arguments: whatever the flags and values, the command succeeds or prints one
``error:`` line per problem with exit code 2 — never a traceback, never a hang. Fixed seed."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nima.cli import main

FLAGS = [
    "--prompt", "--prompt-ids", "--source", "--json", "--min-new-tokens", "--sample", "--greedy",
    "--temperature", "--top-k", "--top-p", "--min-p", "--num-beams", "--length-penalty", "--early-stopping",
    "--num-return-sequences", "--repetition-penalty", "--no-repeat-ngram-size", "--eos-id", "--stop", "--seed",
    "--provider", "--threads", "--spin", "--no-spin", "--bogus",
]  # fmt: skip
VALUES = st.sampled_from(["0", "1", "-1", "2", "0.5", "nan", "inf", "1e309", "true", "never", "cpu", "1,2", ""])


def run_main(argv: list[str]) -> tuple[int, str]:
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


@settings(max_examples=120, deadline=20000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FLAGS) | VALUES | st.text(max_size=6), max_size=8))
def test_any_generate_arguments(text_bundle: Any, arguments: list[str]) -> None:
    bundle: Path = text_bundle[0]
    # a prompt and few tokens last, so that a run that starts is short; the generated flags come first
    code, stderr = run_main(["generate", str(bundle), *arguments, "--prompt", "To be", "--max-new-tokens", "2"])
    assert code in (0, 2), (code, stderr)
    if code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), stderr
