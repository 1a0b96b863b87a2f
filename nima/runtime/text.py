"""Text that can be shown while tokens arrive (special token ids: `nima.layout.TokenIds`)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

PROMPT_TAIL = 8  # tokens before a completion decoded with it: its first token's text depends on them


def lead_in(tokenizer: Tokenizer, before: Sequence[int]) -> list[int]:
    """The last tokens of ``before`` (a prompt) that a completion is decoded after; none where their
    text ends in a partial character (a byte-level piece), which the completion's bytes may finish.

    Decoding a completion alone reads its first token as the text's first: SentencePiece's decoder
    (Llama, Mistral, Gemma) drops that token's leading space ("ROMEO: what" + "Rf" instead of " Rf"),
    and a word-level one the space between the prompt's last word and the completion's first.
    Decoded after the prompt's tail, the completion reads as it continues the prompt."""
    return _lead(tokenizer, before)[0]


def _lead(tokenizer: Tokenizer, before: Sequence[int]) -> tuple[list[int], str]:
    """`lead_in`'s tokens and their text."""
    tail = list(before[-PROMPT_TAIL:])
    text = tokenizer.decode(tail, skip_special_tokens=True) if tail else ""
    return ([], "") if text.endswith("\ufffd") else (tail, text)


def completion_text(tokenizer: Tokenizer, before: Sequence[int], tokens: Sequence[int]) -> str:
    """The text ``tokens`` add after ``before`` (a prompt's ids; special tokens skipped): see `lead_in`."""
    tail, start = _lead(tokenizer, before)
    if tail:
        whole = tokenizer.decode(tail + list(tokens), skip_special_tokens=True)
        if whole.startswith(start):
            return whole[len(start) :]
    return tokenizer.decode(list(tokens), skip_special_tokens=True)


class TextStream:
    """Turns tokens arriving one by one into text pieces, holding back what is not final yet.

    `tokenizers.decoders.DecodeStream` does the decoding: it keeps only the last few tokens and
    releases text once it is valid UTF-8 (a character split over byte-level tokens waits for its
    last byte), so each step costs the same however long the text grows; decoding the whole list
    every step, as before, cost 60 µs per token at 500 tokens and 350 µs at 4,000. With stop
    strings, a tail that could be the start of one is held back too, so a stop string never
    reaches the reader; only the tail that could hold a new one is searched.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = (), before: Sequence[int] = ()) -> None:
        """``before``: the prompt's ids, which the text continues (`lead_in`)."""
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.decoder = DecodeStream(ids=lead_in(tokenizer, before) or None, skip_special_tokens=True)
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
