"""Tokenizer-side helpers: special token ids, and text that can be shown while tokens arrive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")
BOS_NAMES = ("<|startoftext|>", "<s>", "<bos>", "[CLS]")
PAD_NAMES = ("<pad>", "[PAD]")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokenizer's end, start and padding tokens; None where it has none."""

    eos: int | None
    bos: int | None
    pad: int | None


def special_ids(tokenizer: Tokenizer | None) -> SpecialIds:
    """Look the usual special-token spellings up in ``tokenizer``."""
    if tokenizer is None:
        return SpecialIds(None, None, None)

    def first(names: Sequence[str]) -> int | None:
        for name in names:
            found = tokenizer.token_to_id(name)
            if found is not None:
                return found
        return None

    return SpecialIds(first(EOS_NAMES), first(BOS_NAMES), first(PAD_NAMES))


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
