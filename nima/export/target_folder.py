"""Whether a bundle may be written to a folder: checked before anything is exported.

The bundle itself is written through `nima.layout.staged_folder` (a temporary sibling renamed
into place), so an interrupted or failed export never leaves a half bundle."""

from __future__ import annotations

import os
from pathlib import Path

from nima.export.errors import BundleError
from nima.layout import SPEC_FILE


def check_target(out: Path, force: bool, source: Path | None = None) -> None:
    """Refuse a target that exists (unless ``force``, and then only a bundle), that is or holds the
    source, or whose parent is not writable.

    ``--force`` replaces the whole folder, so it must be an earlier bundle: a folder with
    ``nima.json``, an ``.onnx`` file and no subfolders. Anything else (a run or build folder, a
    project folder given by mistake) is refused rather than deleted."""
    if out.is_symlink():  # the bundle is written beside it and renamed into place, which a link refuses
        raise BundleError(f"{out}: is a symbolic link; give the folder it points to, or a new one")
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
    return SPEC_FILE in names and any(n.endswith(".onnx") for n in names) and not any(e.is_dir() for e in entries)
