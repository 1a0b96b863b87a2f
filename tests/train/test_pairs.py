"""Pair data for encoder-decoder training: reading TSV/JSONL, errors naming the line, splits,
special tokens, the padded teacher-forcing layout, sampling, and the cached greedy decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nima.builders import EncoderDecoderLM, build_model
from nima.layout import TokenIds
from nima.spec import spec_from_dict
from nima.train.batches import IGNORE_INDEX
from nima.train.errors import TrainError
from nima.train.greedy import greedy_decode
from nima.train.pair_batches import Ragged, RandomPairs, collate, eval_rows
from nima.train.pairs import SPECIALS, encode_pairs, read_pairs, split_pairs, token_ids, tokenizer_text
from nima.train.tokenizer import train_tokenizer

PAIRS = [("to be or not", "not or be to"), ("the rest is silence", "silence is rest the"), ("a b c", "c b a")]


def _tsv(tmp_path: Path, lines: list[str], name: str = "pairs.tsv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tsv_and_jsonl_read_the_same_pairs(tmp_path: Path) -> None:
    tsv = _tsv(tmp_path, [f"{s}\t{t}" for s, t in PAIRS[:2]] + ["", f"{PAIRS[2][0]}\t{PAIRS[2][1]}\r"])
    jsonl = _tsv(tmp_path, [json.dumps({"source": s, "target": t}) for s, t in PAIRS], "pairs.jsonl")
    assert read_pairs(tsv)[0] == PAIRS  # blank line skipped, CRLF tolerated
    assert read_pairs(jsonl)[0] == PAIRS
    assert read_pairs(tsv)[1].files == [("pairs.tsv", tsv.stat().st_size)]


@pytest.mark.parametrize(
    ("name", "lines", "needle"),
    [
        ("p.tsv", ["a\tb", "c d", "e\tf"], ":2: expected source<TAB>target (found 0 tabs)"),
        ("p.tsv", ["a\tb", "c\td", "e\tf\tg"], ":3: expected source<TAB>target (found 2 tabs)"),
        ("p.tsv", ["a\tb", "\tb"], ":2: empty source or target"),
        ("p.jsonl", ['{"source": "a", "target": "b"}', "{oops"], ":2: not JSON"),
        ("p.jsonl", ['{"source": "a", "target": 3}', '{"source": "a", "target": "b"}'], ":1: expected an object"),
        ("p.jsonl", ['{"source": "a", "target": "b"}'], "needs at least 2 pairs"),
        ("p.txt", ["a\tb", "c\td"], "pass a .tsv or .jsonl file"),
    ],
)
def test_bad_pair_files_name_the_line(tmp_path: Path, name: str, lines: list[str], needle: str) -> None:
    path = _tsv(tmp_path, lines, name)
    with pytest.raises(TrainError) as err:
        read_pairs(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value), str(err.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="not found"):
        read_pairs(tmp_path / "nope.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"a\tb\n\xff\tc\n")
    with pytest.raises(TrainError, match="not UTF-8"):
        read_pairs(bad)


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(10, 0.1, 1), (10, 0.25, 2), (1000, 0.5, 500), (3, 0.01, 1)])
def test_validation_is_the_tail(n: int, fraction: float, n_val: int) -> None:
    pairs = [(str(i), str(i)) for i in range(n)]
    splits = split_pairs(pairs, fraction)
    assert splits["val"] == pairs[-n_val:] and splits["train"] == pairs[:-n_val]


@pytest.mark.parametrize(("kind", "vocab"), [("char", 40), ("byte", 259), ("bpe", 300)])
def test_special_tokens_are_distinct_and_outside_the_text(kind: str, vocab: int) -> None:
    tok = train_tokenizer(kind, tokenizer_text(PAIRS), vocab, SPECIALS)
    special = token_ids(tok)
    assert len({special.pad, special.decoder_start, special.eos}) == 3
    assert max(special.pad, special.decoder_start, special.eos) < tok.vocab_size <= vocab
    for source, _ in PAIRS:
        ids = tok.encode(source).tolist()
        assert ids == tok.tokenizer.encode(source).ids  # the numpy fast path ignores the specials
        assert not {special.pad, special.decoder_start, special.eos} & set(ids)
        assert tok.decode(ids) == source


def test_a_vocabulary_without_room_for_the_specials_names_vocab_size() -> None:
    with pytest.raises(TrainError, match="vocab_size: 258 .* 259 ids .*3 special tokens"):
        train_tokenizer("byte", "abc", 258, SPECIALS)


def test_collate_pads_both_sides_and_shifts_the_target() -> None:
    special = TokenIds(pad=0, decoder_start=1, eos=2)
    sources = Ragged.from_rows([[5, 6, 7], [8]], np.dtype(np.uint16))
    targets = Ragged.from_rows([[9], [10, 11, 12, 13, 14]], np.dtype(np.uint16))
    batch = collate(sources, targets, [0, 1], seq_len=4, special=special)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[1, 9, 0, 0], [1, 10, 11, 12]]  # cut at seq_len
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    x = IGNORE_INDEX
    assert batch["labels"].tolist() == [[9, 2, x, x], [10, 11, 12, 13]]  # a cut target has no end token
    short = collate(sources, targets, [1], seq_len=2, special=special)
    assert short["input_ids"].tolist() == [[8]] and short["labels"].tolist() == [[10, 11]]


def test_encoded_corpus_batches_and_sampling(tmp_path: Path) -> None:
    pairs = [(f"line {i} of text", f"text of {i} line") for i in range(40)]
    tok = train_tokenizer("char", tokenizer_text(pairs), 64, SPECIALS)
    corpus = encode_pairs(tok, split_pairs(pairs, 0.1), 64)
    assert corpus.n_pairs("train") == 36 and corpus.n_pairs("val") == 4
    assert tok.decode(corpus.rows["val"]["target"][0].tolist()) == pairs[36][1]
    a, b = corpus.sampler(32, seed=3), corpus.sampler(32, seed=3)
    first = a.step_batches(4, 2, rank=0, world=1)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(first, b.step_batches(4, 2, 0, 1), strict=True) for k in x)
    # a restored generator state continues the same sequence
    state = a.state()
    nxt = a.step_batches(4, 1, 0, 1)[0]
    b.load_state(state)
    assert torch.equal(b.step_batches(4, 1, 0, 1)[0]["input_ids"], nxt["input_ids"])
    # two ranks split one global batch: rank r takes micro-batch m * world + r of the same draw
    c = RandomPairs(corpus.rows["train"]["source"], corpus.rows["train"]["target"], 32, corpus.special, seed=3)
    assert torch.equal(c.step_batches(4, 1, rank=1, world=2)[0]["labels"], first[1]["labels"])
    val = corpus.val_batches(32, n_rows=100, batch_size=3, rank=0, world=1)
    assert [len(v["labels"]) for v in val] == [3, 1]  # all 4 validation pairs, once each
    assert eval_rows(10, 4, 0, 1) == [0, 3, 6, 9] and eval_rows(10, 4, 1, 2) == [3, 9]


def _model(seed: int) -> EncoderDecoderLM:
    spec = spec_from_dict(
        {
            "architecture": "encoder-decoder",
            "vocab_size": 23,
            "max_seq_len": 16,
            "d_model": 16,
            "n_layers": 2,
            "attention": {"n_heads": 4, "n_kv_heads": 2},
            "ffn": {"kind": "swiglu", "hidden": 24},
            "position": {"kind": "rope"},
            "norm": {"kind": "rmsnorm"},
            "init": {"kind": "normal", "std": 0.5},
        }
    )
    model = build_model(spec, seed=seed).eval()
    assert isinstance(model, EncoderDecoderLM)
    return model


@torch.no_grad()
def _greedy_without_cache(model: EncoderDecoderLM, src: torch.Tensor, mask: torch.Tensor, steps: int) -> list[int]:
    """Greedy decoding of one source by running the whole forward pass on the growing target each step."""
    target = [1]
    for _ in range(steps):
        logits, _, _ = model(src, torch.tensor([target]), attention_mask=mask)
        target.append(int(logits[0, -1].argmax()))
    return target[1:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_greedy_equals_recomputing_the_whole_target(seed: int) -> None:
    model = _model(seed)
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 23, (3, 7), generator=gen)
    mask = torch.ones_like(src)
    mask[1, 4:] = 0  # padded sources
    mask[2, 2:] = 0
    out = greedy_decode(model, src, mask, start_id=1, end_id=22, max_new_tokens=10)
    for row in range(3):
        n = int(mask[row].sum())
        want = _greedy_without_cache(model, src[row : row + 1, :n], mask[row : row + 1, :n], out.shape[1])
        got = out[row].tolist()
        if 22 in want:  # after the end token the cached decoder repeats it
            cut = want.index(22) + 1
            want = want[:cut] + [22] * (len(want) - cut)
        assert got == want
