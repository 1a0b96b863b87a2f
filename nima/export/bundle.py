"""Writing a bundle folder atomically: everything is written to a temporary sibling folder
and renamed into place, so an interrupted or failed export never leaves a half bundle."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nima.files import share_folder


class BundleError(ValueError):
    """The bundle folder cannot be written."""


def check_target(out: Path, force: bool) -> None:
    """Refuse a target that exists (unless ``force``) or whose parent is not writable."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise BundleError(f"{out}: folder is not empty; pass --force to replace it")
    parent = out.resolve().parent
    probe = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BundleError(f"{out}: {probe} is not writable")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on error it is removed."""
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        yield tmp
        share_folder(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "bundle")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
