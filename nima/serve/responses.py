"""Response bodies in OpenAI's shapes: completions and chat completions, whole or as stream chunks.

One `ChoiceText` per completion follows its tokens as they arrive: it turns them into text pieces the
way `Generator.stream` does (`nima.runtime.text.TextStream`: stop strings never shown, a character
split over byte tokens held until whole), keeps the log-probabilities, and at the end gives the
final text `Generator.generate` gives for the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer

from nima.runtime.rows import FINISH_CONTEXT, FINISH_EOS, FINISH_LENGTH, FINISH_STOP
from nima.runtime.text import TextStream, completion_text, cut_at_stop
from nima.runtime.token_bytes import token_bytes
from nima.serve.choose import Choice

FINISH = {FINISH_EOS: "stop", FINISH_STOP: "stop", FINISH_LENGTH: "length", FINISH_CONTEXT: "length"}


@dataclass
class ChoiceText:
    """One completion's tokens, text and log-probabilities as they arrive; see the module docstring."""

    tokenizer: Tokenizer | None
    eos_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]
    before: tuple[int, ...] = ()  # the prompt's ids, which the text continues (`nima.runtime.text.lead_in`)
    tokens: list[int] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # per token: where in the text the text it adds starts
    finish_reason: str | None = None
    stream: TextStream | None = None
    final: str | None = None  # the text, once finished (`text` decodes it once)

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            self.stream = TextStream(self.tokenizer, self.stop_strings, self.before)

    def push(self, choice: Choice) -> str:
        """Add a token; the text it makes final now (often empty; never an end token's)."""
        self.tokens.append(choice.token)
        self.choices.append(choice)
        self.offsets.append(len(self.stream.text) if self.stream is not None else 0)  # decoded so far, held back too
        if self.stream is None or choice.token in self.eos_ids:
            return ""
        return self.stream.push(choice.token)

    def finish(self, reason: str, tokens: tuple[int, ...] | None = None) -> str:
        """The run ended (``tokens``: a beam's, given whole); the text not yet released."""
        self.finish_reason = reason
        if tokens is not None:
            self.tokens = list(tokens)
        if self.stream is None:
            return ""
        return self.stream.finish(self.text())

    def text(self) -> str:
        """The whole text: without a final end token, cut before a stop string ("" without a tokenizer)."""
        if self.tokenizer is None:
            return ""
        if self.final is not None:
            return self.final
        shown = self.tokens[:-1] if self.finish_reason == FINISH_EOS else self.tokens
        text = completion_text(self.tokenizer, self.before, shown)
        text = cut_at_stop(text, self.stop_strings)[0] if self.finish_reason == FINISH_STOP else text
        if self.finish_reason is not None:
            self.final = text
        return text

    def token_bytes(self, token: int) -> bytes:
        """The token's own bytes (a piece of a character too: `nima.runtime.token_bytes`)."""
        if self.tokenizer is None:
            return str(token).encode("ascii")
        return token_bytes(self.tokenizer).of(token)

    def token_text(self, token: int) -> str:
        """The token's text as it stands in the completion: its own bytes (`token_bytes`), so a SentencePiece
        word keeps its leading space (decoding it alone drops it) and the tokens join into the text, as
        OpenAI's do; a piece of a character is U+FFFD."""
        if self.tokenizer is None:
            return str(token)
        return self.token_bytes(token).decode("utf-8", errors="replace")


def completion_logprobs(choice: ChoiceText, first: int, last: int) -> dict[str, Any]:
    """The completions API's ``logprobs`` object for tokens ``first`` to ``last`` (exclusive) of ``choice``.

    A token's ``text_offset`` is where its text starts in the completion's text (held-back text counted): the part
    of a character split over byte tokens points where the character will stand, so whole and
    streamed responses agree and ``text[offset:]`` begins with what the token added."""
    choices = choice.choices[first:last]
    return {
        "tokens": [choice.token_text(c.token) for c in choices],
        "token_logprobs": [c.logprob for c in choices],
        "top_logprobs": [_by_text(choice, c.top) for c in choices],
        "text_offset": choice.offsets[first:last],
    }


def _by_text(choice: ChoiceText, top: tuple[tuple[int, float], ...]) -> dict[str, float]:
    """OpenAI's ``{token text: logprob}``; tokens whose texts are equal (byte pieces shown as U+FFFD)
    keep the most likely one's."""
    found: dict[str, float] = {}
    for token, logprob in top:
        found.setdefault(choice.token_text(token), logprob)
    return found


def chat_logprobs(choice: ChoiceText, choices: list[Choice]) -> dict[str, Any]:
    """The chat API's ``logprobs`` object: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""

    def entry(token: int, logprob: float | None) -> dict[str, Any]:
        text = choice.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(choice.token_bytes(token))}

    return {
        "content": [{**entry(c.token, c.logprob), "top_logprobs": [entry(t, lp) for t, lp in c.top]} for c in choices]
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def envelope(
    request_id: str, created: int, kind: str, model: str, choices: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A response or chunk around ``choices``; ``created`` is the request's arrival (every chunk of a stream has it)."""
    return {"id": request_id, "object": kind, "created": created, "model": model, "choices": choices, **extra}
