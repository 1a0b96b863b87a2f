"""Reading, splitting and packing training text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nima.train.data import check_sizes, encode_splits, open_corpus, read_text, split_text, write_corpus
from nima.train.errors import TrainError
from nima.train.tokenizer import train_tokenizer


def test_folder_of_txt_files_is_read_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second", encoding="utf-8")
    (tmp_path / "1.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not text data", encoding="utf-8")
    text, source = read_text(tmp_path)
    assert text == "first\nsecond"
    assert source.files == [("1.txt", 6), ("b/2.txt", 6)]


def test_a_broken_link_in_a_data_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "1.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "2.txt").symlink_to(tmp_path / "moved-away.txt")
    with pytest.raises(TrainError, match="2.txt: a link to a file that does not exist"):
        read_text(tmp_path)


def test_a_folder_named_txt_is_searched_not_read(tmp_path: Path) -> None:
    (tmp_path / "books.txt").mkdir()
    (tmp_path / "books.txt" / "a.txt").write_text("inside\n", encoding="utf-8")
    (tmp_path / "z.txt").symlink_to(tmp_path / "books.txt" / "a.txt")  # a link that works is read
    text, source = read_text(tmp_path)
    assert text == "inside\ninside\n"
    assert [name for name, _ in source.files] == ["books.txt/a.txt", "z.txt"]


def test_single_file_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("no trailing newline", encoding="utf-8")
    assert read_text(path)[0] == "no trailing newline"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing.txt", "data not found"),
        (lambda p: (p / "e.txt").write_text("  \n", encoding="utf-8") and p / "e.txt", "data is empty"),
        (lambda p: p, "holds no .txt files"),
        (lambda p: (p / "bin.txt").write_bytes(b"ok \xff\xfe") and p / "bin.txt", "not UTF-8"),
    ],
    ids=["missing", "empty", "no-txt", "binary"],
)
def test_bad_data_names_the_path(tmp_path: Path, setup, message: str) -> None:  # noqa: ANN001
    path = setup(tmp_path)
    with pytest.raises(TrainError, match=message) as err:
        read_text(path)
    assert str(err.value).startswith(str(path))


def test_validation_is_the_tail() -> None:
    splits = split_text("0123456789", 0.3)
    assert splits == {"train": "0123456", "val": "789"}


def test_pack_and_memory_map(tmp_path: Path) -> None:
    text = "hello world, " * 200
    tok = train_tokenizer("char", text, 32)
    encoded = encode_splits(tok, split_text(text, 0.1))
    write_corpus(tmp_path, encoded, 32, "char", read_text_source(tmp_path))
    corpus = open_corpus(tmp_path)
    assert corpus.tokens["train"].dtype == np.uint16
    assert isinstance(corpus.tokens["train"], np.memmap)
    assert np.array_equal(corpus.tokens["val"], encoded.ids["val"])
    assert corpus.n_bytes["val"] == len(split_text(text, 0.1)["val"].encode("utf-8"))
    assert corpus.bytes_per_token("val") == 1.0  # ASCII, one char per token
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["meta.json", "train.npy", "val.npy"]


def test_large_vocabularies_pack_as_uint32(tmp_path: Path) -> None:
    text = "abc" * 100
    encoded = encode_splits(train_tokenizer("char", text, 8), split_text(text, 0.5))
    write_corpus(tmp_path, encoded, 70_000, "char", read_text_source(tmp_path))
    assert open_corpus(tmp_path).tokens["train"].dtype == np.uint32


def test_corrupt_packed_data_is_a_train_error(tmp_path: Path) -> None:
    text = "abc" * 100
    encoded = encode_splits(train_tokenizer("char", text, 8), split_text(text, 0.5))
    write_corpus(tmp_path, encoded, 8, "char", read_text_source(tmp_path))
    (tmp_path / "data" / "val.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(TrainError, match="data"):
        open_corpus(tmp_path)


def test_sizes_smaller_than_a_batch_are_errors() -> None:
    text = "abcdefgh" * 20  # 160 chars
    encoded = encode_splits(train_tokenizer("char", text, 8), split_text(text, 0.1))  # 144 train, 16 val
    check_sizes(encoded, seq_len=8, batch_size=4, source="d.txt")  # 33 <= 144, 9 <= 16
    with pytest.raises(TrainError, match=r"^d.txt: .*fewer than one batch \(training.batch_size 16"):
        check_sizes(encoded, seq_len=16, batch_size=16, source="d.txt")
    with pytest.raises(TrainError, match="validation split has 16 tokens"):
        check_sizes(encoded, seq_len=16, batch_size=1, source="d.txt")


def read_text_source(folder: Path):  # noqa: ANN201 - a Source for a made-up file
    path = folder / "src.txt"
    path.write_text("x", encoding="utf-8")
    return read_text(path)[1]
