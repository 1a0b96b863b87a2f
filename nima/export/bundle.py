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


def check_target(out: Path, force: bool, source: Path | None = None) -> None:
    """Refuse a target that exists (unless ``force``, and then only a bundle), that is or holds the
    source, or whose parent is not writable.

    ``--force`` replaces the whole folder, so it must be an earlier bundle: a folder with
    ``nima.json``, an ``.onnx`` file and no subfolders. Anything else (a run or build folder, a
    project folder given by mistake) is refused rather than deleted."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder")
    if source is not None and _holds(out.resolve(), source.resolve()):
        raise BundleError(f"{out}: is the export's source or holds it; write the bundle to another folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BundleError(f"{out}: folder is not empty; pass --force to replace it")
        if not _is_bundle(out):
            raise BundleError(
                f"{out}: not an earlier bundle (nima.json, .onnx files, no subfolders), so --force will not "
                "delete it; choose another folder"
            )
    parent = out.resolve().parent
    probe = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BundleError(f"{out}: {probe} is not writable")


def _holds(folder: Path, path: Path) -> bool:
    return path == folder or folder in path.parents


def _is_bundle(folder: Path) -> bool:
    entries = list(folder.iterdir())
    names = {e.name for e in entries}
    return "nima.json" in names and any(n.endswith(".onnx") for n in names) and not any(e.is_dir() for e in entries)


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
