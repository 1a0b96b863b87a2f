"""Tokenizers: each kind round-trips text, saves a tokenizer.json that reloads with identical ids,
and the fast numpy encoder used for packing equals the Rust tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from train_support import shakespeare_text

from nima.train.errors import TrainError
from nima.train.tokenizer import END_OF_TEXT, TextTokenizer, train_tokenizer

TEXT = shakespeare_text(20_000) + "\nünïcödé ✓ tabs\tand\r\nwindows  double  spaces\n"
PROBE = "First Citizen:\nünïcödé ✓\tdouble  spaces\r\n\nend"


@pytest.mark.parametrize(("kind", "vocab"), [("char", 128), ("byte", 256), ("bpe", 400)])
def test_round_trip_and_reload(tmp_path: Path, kind: str, vocab: int) -> None:
    tok = train_tokenizer(kind, TEXT, vocab)
    ids = tok.encode(PROBE)
    assert tok.decode(ids.tolist()) == PROBE
    assert ids.tolist() == tok.tokenizer.encode(PROBE).ids  # numpy fast path == tokenizers
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    reloaded = Tokenizer.from_file(str(path))
    assert reloaded.encode(PROBE).ids == ids.tolist()
    assert reloaded.decode(ids.tolist()) == PROBE
    assert reloaded.get_vocab_size() == tok.vocab_size <= vocab


def test_whole_text_fast_path_equals_tokenizers() -> None:
    for kind, vocab in (("char", 128), ("byte", 256), ("bpe", 400)):
        tok = train_tokenizer(kind, TEXT, vocab)
        assert tok.encode(TEXT).tolist() == tok.tokenizer.encode(TEXT).ids, kind


def test_byte_ids_are_byte_values() -> None:
    tok = train_tokenizer("byte", "", 256)
    assert tok.encode(PROBE).tolist() == list(PROBE.encode("utf-8"))
    assert tok.vocab_size == 256


def test_char_ids_follow_sorted_characters() -> None:
    text = "hello world\n"
    tok = train_tokenizer("char", text, 64)
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars)
    assert tok.encode("world").tolist() == [chars.index(c) for c in "world"]


def test_tinyshakespeare_has_65_characters() -> None:
    text = shakespeare_text(10**7)
    if len(text) < 1_000_000:
        pytest.skip("tinyshakespeare.txt is not available")
    assert train_tokenizer("char", text, 65).vocab_size == 65  # matches specs/shakespeare-char.yaml


def test_bpe_reaches_the_vocab_size_and_keeps_end_of_text() -> None:
    tok = train_tokenizer("bpe", TEXT, 400)
    assert tok.vocab_size == 400
    assert tok.tokenizer.token_to_id(END_OF_TEXT) == 0
    assert len(tok.encode(TEXT)) < len(TEXT.encode("utf-8")) * 0.6  # merges compress


@pytest.mark.parametrize(("kind", "vocab", "need"), [("char", 20, "ids"), ("byte", 255, "256"), ("bpe", 200, "257")])
def test_vocabulary_larger_than_vocab_size_names_the_field(kind: str, vocab: int, need: str) -> None:
    with pytest.raises(TrainError, match=r"^vocab_size: ") as err:
        train_tokenizer(kind, TEXT, vocab)
    assert need in str(err.value)


def test_unknown_character_is_a_train_error() -> None:
    tok = train_tokenizer("char", "abc", 8)
    with pytest.raises(TrainError, match="'z'"):
        tok.encode("abz")


def test_load_names_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(TrainError, match="tokenizer.json"):
        TextTokenizer.load("char", path)


def test_encode_returns_int64() -> None:
    assert train_tokenizer("char", "ab", 4).encode("ab").dtype == np.int64


def test_word_tokenizer_keeps_the_most_frequent_words(tmp_path: Path) -> None:
    text = "b a b c a b d\n" * 3 + "e"
    tok = train_tokenizer("word", text, 4, ("<pad>", "<s>", "</s>"))  # no room for words: <unk> and the specials only
    assert tok.vocab_size == 4 and tok.tokenizer.token_to_id("<unk>") == 0
    tok = train_tokenizer("word", text, 7, ("<pad>", "<s>", "</s>"))
    # counts: b 9, a 6, c 3, d 3, e 1 -> <unk>, b, a, c, then the three specials
    assert [tok.tokenizer.id_to_token(i) for i in range(7)] == ["<unk>", "b", "a", "c", "<pad>", "<s>", "</s>"]
    assert tok.encode("a  b\td e").tolist() == [2, 1, 0, 0]
    assert tok.tokenizer.decode([2, 1, 3, 6], skip_special_tokens=True) == "a b c"  # spacing: single spaces
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("c a").ids == [3, 2]
