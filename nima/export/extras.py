"""`Extras`: the files a family writes into a bundle for other runtimes, and notes on those it cannot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Extras:
    """``files``: bundle file name -> a JSON value to write, or a `Path` to copy (an imported model's own
    file). ``notes``: one line per file left out and why, which the export prints as a warning."""

    files: dict[str, Any | Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
