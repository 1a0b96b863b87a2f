"""File-system helpers shared by every writer of a model folder (build, export, checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path


def share_folder(folder: Path) -> None:
    """Give a ``mkdtemp`` folder and the files in it the modes ``mkdir`` and ``open`` would.

    ``tempfile.mkdtemp`` (and safetensors) create owner-only entries; folders written through a
    temporary sibling and renamed into place should be as readable as any other.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
