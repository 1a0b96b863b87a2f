"""Prompts (or an encoder-decoder's sources) to token ids, checked against the bundle before any run.

A prompt is text, which needs the bundle's tokenizer, or a list of token ids, which must lie in the
model's vocabulary; either must leave the family's room in the context (`nima.runtime.families`).
Every refusal is a `GenerateError` that names the prompt, so a caller reports it before output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nima.runtime.errors import GenerateError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from nima.runtime.families import DecoderFamily, EncoderDecoderFamily

Prompt = str | Sequence[int]
MAX_CHARS_PER_TOKEN = 64  # a text longer than the context times this cannot fit it (tokens of text are shorter)


class PromptReader:
    """Turns prompts into checked token ids for one bundle: its tokenizer (None: ids only), vocabulary
    size, context length and family."""

    def __init__(
        self,
        tokenizer: Tokenizer | None,
        vocab_size: int,
        context: int,
        family: DecoderFamily | EncoderDecoderFamily,
        path: Path,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.context = context
        self.family = family
        self.path = path

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of ``prompt`` (text needs the bundle's tokenizer; id lists pass through, checked)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GenerateError("this bundle has no tokenizer.json: give prompts as token ids")
            most = self.context * MAX_CHARS_PER_TOKEN
            if len(prompt) > most:  # tokenizing costs about 140 bytes a character: 20 MB of text took 2.8 GB
                raise GenerateError(
                    f"prompt {prompt[:40]!r}...: {len(prompt):,} characters; a context of {self.context:,} tokens "
                    f"holds no more than {most:,}"
                )
            try:
                ids = list(self.tokenizer.encode(prompt).ids)
            except Exception:  # tokenizers raises a bare Exception, e.g. for a character a vocabulary lacks
                raise GenerateError(f"prompt {prompt[:40]!r}: {self._unencodable(prompt)}") from None
            if ids and max(ids) >= self.vocab_size:  # a tokenizer.json that is not this model's
                raise GenerateError(
                    f"{self.path}: tokenizer.json gave token id {max(ids)}, past the model's vocabulary "
                    f"(0..{self.vocab_size - 1}): the tokenizer is not this model's"
                )
            return ids
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise GenerateError(f"prompt token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return ids

    def batch(
        self, prompts: Prompt | Sequence[Prompt] | None, sources: Prompt | Sequence[Prompt] | None
    ) -> list[list[int]]:
        """Token ids of the prompts (decoder-only) or sources (encoder-decoder): one prompt or a list of them."""
        if sources is not None and not self.family.takes_sources:
            raise GenerateError("sources= is for encoder-decoder bundles; this one is decoder-only: pass prompts")
        given = sources if sources is not None else prompts
        what = self.family.input_word
        if given is None:
            raise GenerateError(f"no {what}s given")
        single = isinstance(given, str) or (len(given) > 0 and isinstance(given[0], int | np.integer))
        batch = [self.encode(p) for p in ([given] if single else given)]  # type: ignore[list-item]
        if not batch:
            raise GenerateError(f"no {what}s given")
        for i, ids in enumerate(batch):
            if not ids:
                raise GenerateError(f"{what} {i} is empty: the model needs at least one token")
            self.family.check_length(i, len(ids), self.context)
        return batch

    def _unencodable(self, prompt: str) -> str:
        """Why the tokenizer refuses ``prompt``: the first character it cannot encode, if one alone fails."""
        tokenizer = self.tokenizer
        for char in dict.fromkeys(prompt) if tokenizer is not None else ():
            try:
                tokenizer.encode(char)
            except Exception:
                return f"the character {char!r} is not in the tokenizer's vocabulary"
        return "the bundle's tokenizer cannot encode it"
