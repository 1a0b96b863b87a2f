"""A token's own bytes (`nima.runtime.token_bytes`): joined over an encoded text they are the bytes the
tokenizer's own decoder gives for the whole text, characters split over byte-level tokens included."""

from __future__ import annotations

from tokenizer_support import shakespeare_tokenizer
from tokenizers import Tokenizer, decoders, models

from nima.runtime.token_bytes import TokenBytes
from nima.train.tokenizer import char_tokenizer

TEXT = "To be, or not: 中文 naïve ☃ — done"


def test_byte_level_pieces_of_a_character_join_into_it() -> None:
    tokenizer = shakespeare_tokenizer(320)  # byte-level BPE; CJK characters are three byte tokens each
    ids = tokenizer.encode(TEXT).ids
    pieces = TokenBytes(tokenizer)
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)  # some tokens are parts of a character
    assert b"".join(pieces.of(t) for t in ids) == tokenizer.decode(ids).encode("utf-8")


def test_a_character_tokenizer() -> None:
    tokenizer = char_tokenizer(TEXT)
    ids = tokenizer.encode(TEXT).ids
    assert b"".join(TokenBytes(tokenizer).of(t) for t in ids) == TEXT.encode("utf-8")


def test_sentencepiece_byte_fallback_and_metaspace() -> None:
    """A Llama-2-style vocabulary: ``<0xNN>`` byte pieces and ``▁`` for a space."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)} | {"\u2581": 256, "a": 257, "\u2581a": 258}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    tokenizer.decoder = decoders.Sequence(steps)  # Llama 2's: the text's first space is stripped
    pieces = TokenBytes(tokenizer)
    assert pieces.of(0xE4) == b"\xe4" and pieces.of(258) == b" a" and pieces.of(257) == b"a"
    assert tokenizer.decode([258]) == "a"  # decoded alone, the space is gone: the bytes keep it
    ids = [258, 0xE4, 0xB8, 0xAD, 256, 257]  # " a中 a"
    assert b"".join(pieces.of(t) for t in ids) == " a中 a".encode() == b" " + tokenizer.decode(ids).encode()
