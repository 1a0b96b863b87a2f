"""Fixtures of the training tests (helpers are in train_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_support import TINY, shakespeare_text, write_spec


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "shakespeare.txt"
    path.write_text(shakespeare_text(), encoding="utf-8")
    return path


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    return write_spec(tmp_path, TINY)
