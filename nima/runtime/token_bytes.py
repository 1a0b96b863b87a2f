"""Each token's own bytes, for OpenAI's log-probability ``bytes`` field.

A byte-level tokenizer (GPT-2's, Llama 3's) splits a character over several tokens, and a token of
part of a character decodes alone to U+FFFD; OpenAI's ``bytes`` field exists so a client can join
such tokens back into text, which the replacement character's bytes do not allow. So the bytes are
read from the token's own string in the vocabulary where the tokenizer's decoder says how: through
GPT-2's byte alphabet under a ``ByteLevel`` decoder, ``<0xNN>`` under ``ByteFallback`` (SentencePiece
models), ``▁`` as a space under ``Metaspace`` (or a ``Replace`` of it, as Llama 2's); other tokens
(a character tokenizer's, special tokens) are their decoded text in UTF-8.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from tokenizers import Tokenizer

from nima.byte_alphabet import bytes_to_unicode

BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
METASPACE = "\u2581"


class TokenBytes:
    """``token id -> bytes`` for one tokenizer (see the module docstring); cached per id."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        kinds = _decoder_kinds(json.loads(tokenizer.to_str()).get("decoder"))
        self.alphabet = {char: byte for byte, char in bytes_to_unicode().items()} if "ByteLevel" in kinds else None
        self.byte_fallback = "ByteFallback" in kinds
        self.metaspace = "Metaspace" in kinds
        self.of = functools.lru_cache(maxsize=65536)(self._bytes)

    def _bytes(self, token: int) -> bytes:
        piece = self.tokenizer.id_to_token(token)
        if piece is not None and token not in self._special():
            if self.alphabet is not None and all(char in self.alphabet for char in piece):
                return bytes(self.alphabet[char] for char in piece)
            found = BYTE_PIECE.fullmatch(piece) if self.byte_fallback else None
            if found:
                return bytes([int(found.group(1), 16)])
            if self.metaspace:
                return piece.replace(METASPACE, " ").encode("utf-8")
        return self.tokenizer.decode([token], skip_special_tokens=False).encode("utf-8")

    @functools.cache  # noqa: B019 - one per TokenBytes, which lives as long as its tokenizer
    def _special(self) -> frozenset[int]:
        return frozenset(self.tokenizer.get_added_tokens_decoder())


def _decoder_kinds(decoder: Any) -> set[str]:
    """The ``type`` of a tokenizer.json decoder and of the decoders a ``Sequence`` holds."""
    if not isinstance(decoder, dict):
        return set()
    kinds = {str(decoder.get("type"))}
    pattern = decoder.get("pattern")
    if decoder.get("type") == "Replace" and isinstance(pattern, dict) and pattern.get("String") == METASPACE:
        kinds.add("Metaspace")  # Llama 2's decoder writes the space with a Replace, then strips the first
    for inner in decoder.get("decoders") or ():
        kinds |= _decoder_kinds(inner)
    return kinds


@functools.lru_cache(maxsize=4)
def token_bytes(tokenizer: Tokenizer) -> TokenBytes:
    """The `TokenBytes` of ``tokenizer``, made once (reading its decoder parses the whole tokenizer.json)."""
    return TokenBytes(tokenizer)
