"""The one error type of the runtime: bad options, a bad bundle, an unusable provider."""

from __future__ import annotations


class GenerateError(ValueError):
    """A user error found before any work: the message names the option, file or field."""
