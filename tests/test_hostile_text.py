"""User text in output: rich markup in a name or path is printed as it is, a key with a line break cannot
forge another ``error:`` line, and a spec's name is escaped in the model card's Markdown."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from nima.cli import app

TINY = {
    "vocab_size": 40,
    "max_seq_len": 16,
    "d_model": 16,
    "n_layers": 1,
    "attention": {"n_heads": 2},
    "ffn": {"kind": "gelu", "hidden": 32},
    "position": {"kind": "learned"},
}


def invoke(*args: object):  # noqa: ANN201 - a click Result
    return CliRunner().invoke(app, [str(a) for a in args])


def test_markup_in_a_name_and_a_path_is_printed_as_it_is(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "name": "x[bold]y[red"}))
    result = invoke("build", spec)
    assert result.exit_code == 0 and "x[bold]y[red" in result.stdout, result.output
    out = tmp_path / "o[/red]"
    result = invoke("build", spec, "-o", out)
    assert result.exit_code == 0 and f"wrote{out}/nima.json" in "".join(result.stdout.split()), result.output
    bundle = tmp_path / "b[/x]"
    result = invoke("export", "--onnx", out, "-o", bundle)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_a_key_with_a_line_break_is_one_quoted_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "bad\nerror: forged": 1}))
    result = invoke("build", spec)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {spec}: 'bad\\nerror: forged': unknown field"], lines


def test_the_model_card_escapes_the_name(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "name": "m <img src=x> | [link](x) *"}))
    assert invoke("build", spec, "-o", tmp_path / "m").exit_code == 0
    assert invoke("export", "--onnx", tmp_path / "m", "-o", tmp_path / "b").exit_code == 0
    card = (tmp_path / "b" / "README.md").read_text()
    title = card.splitlines()[0]
    assert title == r"# m \<img src=x\> \| \[link\](x) \*", title
    assert not re.search(r"(?<!\\)<img", card)  # nowhere raw: the rows hold the name too
