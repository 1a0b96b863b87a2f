"""Generated `nima generate` arguments: whatever the flags and values, the command succeeds or prints one
``error:`` line per problem with exit code 2 — never a traceback, never a hang. Fixed seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli_support import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FLAGS = [
    "--prompt", "--prompt-ids", "--source", "--json", "--min-new-tokens", "--sample", "--greedy",
    "--temperature", "--top-k", "--top-p", "--min-p", "--num-beams", "--length-penalty", "--early-stopping",
    "--num-return-sequences", "--repetition-penalty", "--no-repeat-ngram-size", "--eos-id", "--stop", "--seed",
    "--provider", "--threads", "--spin", "--no-spin", "--bogus",
]  # fmt: skip
VALUES = st.sampled_from(["0", "1", "-1", "2", "0.5", "nan", "inf", "1e309", "true", "never", "cpu", "1,2", ""])


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
