"""`SpecError`: every problem found in a spec, each with its file and field path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (file, dotted field path) and what."""

    source: str
    location: str
    message: str

    def __str__(self) -> str:
        source, location = _shown(self.source), _shown(self.location)
        where = f"{source}: {location}" if location else source
        return f"{where}: {_shown(self.message)}"


def _shown(text: str) -> str:
    """``text`` as one printable line: a key, path or value holding a line break or an escape sequence is
    quoted (``repr``), so it can neither forge another ``error:`` line nor reach the terminal raw."""
    return text if text.isprintable() else repr(text)


class SpecError(ValueError):
    """A spec could not be loaded; ``problems`` lists all that was found, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
