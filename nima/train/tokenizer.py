"""Tokenizers for training: byte-level BPE, raw bytes, or characters, each a `tokenizers.Tokenizer`.

Whatever the kind, the result is saved as one ``tokenizer.json`` that `tokenizers.Tokenizer.from_file`
loads, so the torch-free runtime encodes and decodes exactly as training did. For ``byte`` and
``char`` the packing step uses a numpy lookup instead of the Rust tokenizer (100x faster on a
megabyte of text); the ids are the same by construction (id = byte value; id = rank of the
character in sorted order), and the tests hold the two paths equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from nima.byte_alphabet import bytes_to_unicode
from nima.train.errors import TrainError

KINDS = ("bpe", "byte", "char", "word")
UNKNOWN_WORD = "<unk>"
END_OF_TEXT = "<|endoftext|>"
_CHUNK_CHARS = 1 << 20  # BPE encodes the text in ~1 MB pieces, in parallel


class TextTokenizer:
    """A `tokenizers.Tokenizer` of one of the three kinds, with a fast numpy encoder for packing."""

    def __init__(self, kind: str, tokenizer: Tokenizer) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}")
        self.kind = kind
        self.tokenizer = tokenizer
        if kind == "char":
            # special tokens (multi-character, appended after the characters) are not in the lookup
            by_char = sorted((item for item in tokenizer.get_vocab().items() if len(item[0]) == 1), key=lambda i: i[1])
            self._codepoints = np.array([ord(c) for c, _ in by_char], dtype=np.uint32)  # sorted, id = index

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as int64, equal to ``self.tokenizer.encode(text, add_special_tokens=False).ids``."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if self.kind == "char":
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            ids = np.searchsorted(self._codepoints, points)
            ids = np.minimum(ids, len(self._codepoints) - 1)
            unknown = self._codepoints[ids] != points
            if unknown.any():
                char = chr(int(points[np.argmax(unknown)]))
                raise TrainError(f"character {char!r} is not in the char-level tokenizer's vocabulary")
            return ids.astype(np.int64)
        # no special tokens added: a model folder's tokenizer (fine-tuning) may add a BOS to every encode,
        # here every ~1 MB chunk; Nima's own tokenizers add none either way
        chunks = list(_chunks(text))
        pieces = [
            np.array(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(chunks, add_special_tokens=False)
        ]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, kind: str, path: Path) -> TextTokenizer:
        """Reload a saved tokenizer; a missing or unreadable file is a `TrainError` naming it."""
        try:
            return cls(kind, Tokenizer.from_file(str(path)))
        except Exception as err:  # tokenizers raises a bare Exception for malformed JSON
            raise TrainError(f"{path}: not a readable tokenizer.json ({str(err).splitlines()[0]})") from None


def _chunks(text: str) -> Iterator[str]:
    """~1 MB pieces of ``text`` cut after a newline, so few pre-tokens straddle a cut."""
    start = 0
    while start < len(text):
        end = min(start + _CHUNK_CHARS, len(text))
        if end < len(text):
            newline = text.rfind("\n", start, end)
            end = newline + 1 if newline > start else end
        yield text[start:end]
        start = end


def byte_tokenizer() -> Tokenizer:
    """256 ids, id = byte value: a byte-level BPE with the GPT-2 alphabet and no merges."""
    alphabet = bytes_to_unicode()
    tok = Tokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def char_tokenizer(text: str) -> Tokenizer:
    """One id per distinct character of ``text``, in code-point order (nanoGPT's shakespeare_char)."""
    chars = sorted(set(text))
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tok.decoder = decoders.Fuse()  # join without spaces
    return tok


def word_tokenizer(text: str, vocab_size: int, reserved: int = 0) -> Tokenizer:
    """``<unk>`` and then the most frequent whitespace-separated words of ``text`` (ties: first seen),
    leaving ``reserved`` ids for special tokens. Decoding joins words with single spaces."""
    counts = Counter(text.split())
    words = [w for w, _ in counts.most_common(max(0, vocab_size - 1 - reserved))]
    tok = Tokenizer(
        models.WordLevel({UNKNOWN_WORD: 0, **{w: i + 1 for i, w in enumerate(words)}}, unk_token=UNKNOWN_WORD)
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # no decoder: decoding joins tokens with one space
    return tok


def bpe_tokenizer(text: str, vocab_size: int, specials: tuple[str, ...] = ()) -> Tokenizer:
    """Byte-level BPE (GPT-2 style) trained on ``text`` up to ``vocab_size`` ids; ``<|endoftext|>``, then
    ``specials``, take the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[END_OF_TEXT, *specials],
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(text), trainer)
    return tok


def train_tokenizer(kind: str, text: str, vocab_size: int, specials: tuple[str, ...] = ()) -> TextTokenizer:
    """The tokenizer of ``kind`` for ``text``; raises `TrainError` naming vocab_size if it needs more ids.

    ``specials`` (the encoder-decoder's padding, start and end tokens) are added as special
    tokens: for ``byte`` and ``char`` after the base ids, for ``bpe`` right after
    ``<|endoftext|>``, within ``vocab_size``.
    """
    if kind == "byte":
        tok = TextTokenizer(kind, byte_tokenizer())
        need = "256 byte values"
    elif kind == "char":
        tok = TextTokenizer(kind, char_tokenizer(text))
        need = "distinct characters in the data"
    elif kind == "word":
        tok = TextTokenizer(kind, word_tokenizer(text, vocab_size, len(specials)))
        need = f"{UNKNOWN_WORD} + words"
    else:
        tok = TextTokenizer(kind, bpe_tokenizer(text, vocab_size, specials))
        need = f"256 bytes + {END_OF_TEXT}"
    if specials:
        if kind != "bpe":  # BPE's trainer placed them already
            tok.tokenizer.add_special_tokens(list(specials))
        need += f" + {len(specials)} special tokens"
    if tok.vocab_size > vocab_size:
        raise TrainError(
            f"vocab_size: {vocab_size} is smaller than the {kind} tokenizer's {tok.vocab_size} ids ({need}); "
            f"set vocab_size to at least {tok.vocab_size}"
        )
    return tok
