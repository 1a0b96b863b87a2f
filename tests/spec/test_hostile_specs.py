"""Specs built to hurt the loader: an alias bomb and a self-referencing alias with ``--set``, a date key,
non-regular files, a huge file, tens of thousands of unknown keys — each an ``error:`` line naming the file,
exit 2, quickly, never a traceback or a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nima.cli import app

BOMB = """extends: tiny
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def refused(*args: object, seconds: float = 20.0) -> list[str]:
    """The error lines of ``nima ARGS``, which must exit 2 within ``seconds`` and print no traceback."""
    start = time.monotonic()
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert time.monotonic() - start < seconds
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), lines
    return lines


@pytest.mark.parametrize(
    "text",
    [BOMB, "extends: tiny\nloop: &x [*x]\n", "extends: tiny\n2026-12-07: 1\n"],
    ids=["alias bomb", "self-reference", "date key"],
)
def test_with_set(tmp_path: Path, text: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    refused("build", spec, "--set", "d_model=64")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_non_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    assert "is not a regular file" in refused("build", tmp_path / "pipe.yaml", seconds=5)[0]
    if Path("/dev/zero").exists():
        assert "is not a regular file" in refused("build", "/dev/zero", seconds=5)[0]


def test_a_huge_file_and_many_unknown_keys(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("extends: tiny\n" + "#" * 2**21 + "\n")
    assert "a spec file is at most 1 MiB" in refused("build", big)[0]
    many = tmp_path / "many.yaml"
    many.write_text("extends: tiny\n" + "".join(f"k{i}: 1\n" for i in range(40_000)))
    lines = refused("build", many, seconds=30)
    assert len(lines) == 51 and "39950 more problems after the 50 below" in lines[0], lines[:2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: tiny\nd_model: " + "9" * 5000 + "\n", "cannot parse"),
        ("extends: tiny\nx: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply"),
        ("extends: tiny\nposition: {kind: []}\n", "position.kind: unknown kind"),
        ('extends: "a\\0b"\n', "extends: not a usable path"),
        ("extends: " + "a" * 300 + "\n", "extends: not a usable path"),
        ("extends: tiny\nd_model: " + "1" + "0" * 200 + "\n", "d_model: input should be less than or equal"),
        (  # nine levels of nine aliases: validating it, Pydantic's message alone asked for 5.6 GB
            "extends: tiny\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
            + "ffn: {kind: *i, hidden: 64}\n",
            "YAML error: its aliases expand to 926,177,121 values",
        ),
    ],
    ids=["4300 digits", "deep nesting", "unhashable kind", "NUL in extends", "long extends", "huge size", "alias bomb"],
)
def test_malformed_values(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    lines = refused("build", spec)
    assert message in lines[0], lines


def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    """`build -o` of a 43T-parameter spec: refused from the figures, not after torch's allocator gives up."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("extends: tiny\nd_model: 65536\nn_layers: 1000\nattention: {n_heads: 64}\nffn: {hidden: 200000}\n")
    if not Path("/proc/meminfo").exists():
        pytest.skip("reads Linux's MemAvailable")
    lines = refused("build", spec, "-o", tmp_path / "out", seconds=10)
    assert "GiB are available" in lines[0] and not (tmp_path / "out").exists(), lines


def test_an_alias_bomb_in_an_extends_target(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BOMB)
    (tmp_path / "spec.yaml").write_text("extends: base.yaml\n")
    refused("build", tmp_path / "spec.yaml", seconds=10)
