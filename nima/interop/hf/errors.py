"""The one error of an import: a line naming the file, config key or tensor at fault."""

from __future__ import annotations


class ImportFailure(ValueError):
    """The folder cannot be imported; nothing has been written."""
