"""Text that can be shown while tokens arrive (special token ids: `nima.layout.TokenIds`)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer


class TextStream:
    """Turns a growing token list into text pieces, holding back what is not final yet.

    Byte-level tokenizers can split one character over several tokens; until the rest arrives the
    decoded text ends in U+FFFD, so nothing is released. With stop strings, a tail that could be the
    start of one is held back too, so a stop string never reaches the reader.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already released

    def push(self, token: int) -> str:
        """Add ``token``; return the newly final text (often empty)."""
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        cut, stopped = cut_at_stop(text, self.stop_strings)
        final = len(cut) if stopped else len(text) - self._held_back(text)
        return self._release(text, final)

    def finish(self, text: str) -> str:
        """Release what remains of the final ``text`` (already cut at a stop string)."""
        return self._release(text, len(text))

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop), len(text)), longest, -1):
                if stop.startswith(text[len(text) - size :]):
                    longest = size
                    break
        return longest

    def _release(self, text: str, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = text[self.sent : upto], upto
        return piece


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop string, and whether one was found."""
    cuts = [text.find(stop) for stop in stop_strings if stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
