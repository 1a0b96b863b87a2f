"""Text that can be shown while tokens arrive (special token ids: `nima.layout.TokenIds`)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class TextStream:
    """Turns tokens arriving one by one into text pieces, holding back what is not final yet.

    `tokenizers.decoders.DecodeStream` does the decoding: it keeps only the last few tokens and
    releases text once it is valid UTF-8 (a character split over byte-level tokens waits for its
    last byte), so each step costs the same however long the text grows; decoding the whole list
    every step, as before, cost 60 µs per token at 500 tokens and 350 µs at 4,000. With stop
    strings, a tail that could be the start of one is held back too, so a stop string never
    reaches the reader; only the tail that could hold a new one is searched.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.decoder = DecodeStream(skip_special_tokens=True)
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of it already released
        self.stopped = False
        self._reach = max((len(stop) for stop in self.stop_strings), default=0)

    def push(self, token: int) -> str:
        """Add ``token``; return the newly final text (often empty)."""
        piece = self.decoder.step(self.tokenizer, token)
        if not piece or self.stopped:
            return ""
        searched = max(
            0, len(self.text) - self._reach + 1
        )  # a stop string ending in the new piece starts here or later
        self.text += piece
        cut, self.stopped = cut_at_stop(self.text[searched:], self.stop_strings)
        final = searched + len(cut) if self.stopped else len(self.text) - self._held_back(self.text)
        return self._release(self.text, final)

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
