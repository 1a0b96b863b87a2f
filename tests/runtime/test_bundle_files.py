"""A bundle's small files, broken in ways a copy, an edit or a hostile folder can break them: each a one-line
`GenerateError` naming the file, at load (and in the CLI one ``error:`` line, exit 2), never a traceback, a
hang or unbounded memory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nima.builders.models import DecoderLM
from nima.cli import app
from nima.runtime import GenerateError, Generator
from nima.runtime import bundle as bundle_module


@pytest.fixture
def bundle(tmp_path: Path, bundles: dict[str, tuple[Path, DecoderLM]]) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["llama"][0], copy)
    return copy


def refused(bundle: Path, words: str) -> None:
    with pytest.raises(GenerateError) as err:
        Generator(bundle)
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert str(err.value).count(str(bundle)) == 1, str(err.value)  # named once, not wrapped twice
    result = CliRunner().invoke(app, ["generate", str(bundle), "--prompt-ids", "1,2", "--max-new-tokens", "2"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_a_manifest_nested_too_deeply(bundle: Path) -> None:
    (bundle / "bundle.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(bundle, "bundle.json: not a valid bundle manifest (nested too deeply)")


def test_a_manifest_that_is_not_a_regular_file(bundle: Path) -> None:
    """A FIFO blocked the reader for ever; a link to /dev/zero read until memory ran out."""
    (bundle / "bundle.json").unlink()
    os.mkfifo(bundle / "bundle.json")
    refused(bundle, "bundle.json: not a regular file")
    (bundle / "bundle.json").unlink()
    (bundle / "bundle.json").symlink_to("/dev/zero")
    refused(bundle, "bundle.json: not a regular file")


def test_a_huge_manifest(bundle: Path) -> None:
    manifest = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**manifest, "padding": "x" * (2 << 20)}))
    refused(bundle, "a bundle's description is at most 1 MiB")


@pytest.mark.parametrize(("field", "recorded"), [("max_seq_len", "context_length"), ("vocab_size", "vocab_size")])
def test_a_spec_edited_apart_from_its_graph(bundle: Path, field: str, recorded: str) -> None:
    """nima.json's sizes must be the ones bundle.json records for the graph: a max_seq_len past the graph's
    positions otherwise failed inside ONNX Runtime after hundreds of tokens had been printed."""
    spec = json.loads((bundle / "nima.json").read_text())
    (bundle / "nima.json").write_text(json.dumps({**spec, field: 2 * spec[field]}))
    refused(bundle, f"{field} is {2 * spec[field]}, but bundle.json records {recorded} {spec[field]}")


def test_a_tokenizer_that_is_not_a_file(bundle: Path) -> None:
    """Not "this bundle has no tokenizer.json": it has one, broken."""
    (bundle / "tokenizer.json").unlink(missing_ok=True)
    (bundle / "tokenizer.json").mkdir()
    refused(bundle, "tokenizer.json: not a regular file")


def test_a_file_that_cannot_be_read(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that can be listed but not entered (its files' stat fails with EACCES; tests run as root,
    so the error is raised where the spec is read)."""

    def denied(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(bundle_module, "read_bundle_spec", denied)
    with pytest.raises(GenerateError, match=r"nima.json: cannot read it \(Permission denied\)"):
        Generator(bundle)
