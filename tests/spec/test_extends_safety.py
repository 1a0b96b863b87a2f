"""What `extends:` may read: spec files only, without quoting another file's contents back, and never from a
resolved spec (a model folder's, run's or bundle's ``nima.json``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nima.spec import SpecError, load_resolved_spec, load_spec


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(p) for p in caught.value.problems]


def test_a_file_that_is_no_spec_is_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text("api_token: s3cr3t-value\nroot_password_hint: pets\n")
    (tmp_path / "spec.yaml").write_text("extends: secrets.yaml\nvocab_size: 10\n")
    found = problems(tmp_path / "spec.yaml")
    assert len(found) == 1 and "extends" in found[0] and "is not a spec file" in found[0], found
    assert not any(word in found[0] for word in ("api_token", "s3cr3t", "root_password", "pets"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_refused_without_reading_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "spec.yaml").write_text("extends: pipe.yaml\n")
    start = time.monotonic()
    found = problems(tmp_path / "spec.yaml")
    assert time.monotonic() - start < 5  # opening a FIFO for reading would block here
    assert "is not a regular file" in found[0], found


def test_a_resolved_spec_extends_nothing(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("extends: tiny\n")
    (tmp_path / "nima.json").write_text('{"extends": "base.yaml", "name": "x"}')
    with pytest.raises(SpecError) as caught:
        load_resolved_spec(tmp_path / "nima.json")
    assert [p.location for p in caught.value.problems] == ["extends"]
    assert "extends nothing" in str(caught.value.problems[0])
