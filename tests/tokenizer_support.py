"""A small byte-level BPE trained on Shakespeare, for the tests that need real text tokens (runtime, serve, train)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def shakespeare_tokenizer(vocab: int, chars: int = 20_000) -> Tokenizer:
    """A byte-level BPE of ``vocab`` tokens (one of them <|endoftext|>) trained on the first ``chars``
    characters of tinyshakespeare, found in a ``shared/data`` folder above the tests."""
    here = Path(__file__).resolve()
    found = [p / "shared" / "data" / "tinyshakespeare.txt" for p in here.parents]
    text = next(path for path in found if path.is_file()).read_text(encoding="utf-8")[:chars]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(text.splitlines(), trainer)
    return tok
